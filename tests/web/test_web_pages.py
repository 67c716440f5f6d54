"""The dashboard through TestClient: sign-in cookie, pages of a finished search, ownership, CSRF-checked forms."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from store.jobs import get_job
from store.models import JobStatus
from tests.web.support import CHECKPOINT

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def sign_in(client: TestClient, key: str) -> None:
    response = client.post("/login", data={"api_key": key})
    assert response.status_code == 303, response.text


def csrf_of(client: TestClient, path: str = "/") -> str:
    match = CSRF.search(client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def text_of(html: str) -> str:
    """The page's visible words, tags dropped and whitespace squeezed (what a person reads)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_login_sets_an_httponly_samesite_cookie(client, alice) -> None:
    form = client.get("/login")
    assert form.status_code == 200 and 'name="api_key"' in form.text and 'type="password"' in form.text

    response = client.post("/login", data={"api_key": f"  {alice[1]} ", "next": "/datasets"})
    assert response.status_code == 303 and response.headers["location"] == "/datasets"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"thrifty_key={alice[1]};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # served over http here; https adds Secure
    assert client.get("/").status_code == 200  # the cookie signs the browser in
    assert client.get("/login").headers["location"] == "/"  # already signed in


@pytest.mark.parametrize("next_path", ["//evil.example/x", "https://evil.example/", "jobs"])
def test_login_never_redirects_off_site(client, alice, next_path) -> None:
    response = client.post("/login", data={"api_key": alice[1], "next": next_path})
    assert response.headers["location"] == "/"


@pytest.mark.parametrize("key", ["tnas_not-a-real-key-at-all-0000000000000000000", "garbage", ""])
def test_a_wrong_key_is_a_form_error(client, alice, key) -> None:
    response = client.post("/login", data={"api_key": key})
    assert response.status_code == 401 and "set-cookie" not in response.headers
    assert 'role="alert"' in response.text and 'name="api_key"' in response.text
    assert ("unknown or was revoked" if key else "paste your API key") in response.text
    assert client.get("/").status_code == 303


def test_signed_out_people_are_sent_to_the_login_form(client, finished) -> None:
    assert client.get("/").headers["location"] == "/login"
    assert client.get(f"/jobs/{finished.job_id}").headers["location"] == f"/login?next=/jobs/{finished.job_id}"
    assert client.get("/datasets").headers["location"] == "/login?next=/datasets"
    response = client.post(f"/jobs/{finished.job_id}/cancel", data={"csrf_token": "x"})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    client.cookies.set("thrifty_key", "tnas_revoked0000000000000000000000000000000000")
    assert client.get("/").headers["location"] == "/login"


def test_the_pages_of_a_finished_search(client, alice, finished) -> None:
    sign_in(client, alice[1])
    listing = client.get("/")
    assert listing.status_code == 200 and listing.headers["cache-control"] == "no-store"
    words = text_of(listing.text)
    assert finished.job_id in words and "succeeded" in words and "search" in words
    assert "phantom SYNTHETIC" in words and "100%" in words and "3 / 3" in words
    assert f'href="/jobs/{finished.job_id}"' in listing.text
    assert 'http-equiv="refresh"' not in listing.text  # nothing running: no auto-refresh

    page = client.get(f"/jobs/{finished.job_id}")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "Search" in words and "succeeded" in words and "epoch 3 of 3" in words
    assert "arch dsc 0.8813" in words and "train loss 0.31" in words
    # Dice per case: organ_1, organ_2, then the case mean; the footer holds the class means.
    assert "phantom_001 0.912 0.847 0.880" in words
    assert "phantom_002 0.886 — 0.886" in words
    assert "Mean 0.899 0.847 0.883" in words
    for name, (size, sha256) in finished.artifacts.items():
        assert f'href="/v1/jobs/{finished.job_id}/artifacts/{name}"' in page.text and sha256 in page.text
        assert f'title="{size} bytes"' in page.text
    assert f'title="{len(CHECKPOINT)} bytes">10.0 KiB' in page.text
    for plot in ("curves", "alphas", "genotype"):
        src = f"/v1/jobs/{finished.job_id}/plots/{plot}.png"
        assert f'src="{src}"' in page.text
        image = client.get(src)  # the <img> loads with the cookie alone
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG"), (plot, image.text[:200])
    assert f"/jobs/{finished.job_id}/retrain" in page.text and 'id="cancel-job"' not in page.text
    assert 'http-equiv="refresh"' not in page.text


def test_the_cookie_authenticates_the_api_for_reading_only(client, alice, finished) -> None:
    sign_in(client, alice[1])
    download = client.get(f"/v1/jobs/{finished.job_id}/artifacts/search_final.pt")
    assert download.status_code == 200 and download.content == CHECKPOINT
    assert client.get(f"/v1/jobs/{finished.job_id}").json()["status"] == "succeeded"
    refused = client.post(f"/v1/jobs/{finished.job_id}/cancel")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"


def test_another_users_job_and_dataset_are_404_pages(client, bob, finished, factory) -> None:
    sign_in(client, bob[1])
    assert finished.job_id not in client.get("/").text
    for path in (f"/jobs/{finished.job_id}", "/jobs/job_missing"):
        response = client.get(path)
        assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
        assert "Not found" in response.text and "is not yours" in response.text
    with factory() as session:
        dataset_id = get_job(session, finished.job_id).dataset_id
    assert client.get(f"/datasets/{dataset_id}").status_code == 404
    assert client.get(f"/v1/jobs/{finished.job_id}/plots/curves.png").status_code == 404
    response = client.post(f"/jobs/{finished.job_id}/cancel", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 404


@pytest.mark.parametrize(("status", "after"), [("queued", "cancelled"), ("running", "running")])
def test_cancel_needs_the_csrf_token(client, alice, bob, add_dataset, add_job, factory, status, after) -> None:
    job_id = add_job(alice[0], add_dataset(alice[0]), status=status)
    sign_in(client, bob[1])
    bobs_token = csrf_of(client)
    client.cookies.clear()
    sign_in(client, alice[1])
    page = client.get(f"/jobs/{job_id}")
    assert 'id="cancel-job"' in page.text and 'http-equiv="refresh"' in page.text  # live: refreshes itself

    for data in ({}, {"csrf_token": ""}, {"csrf_token": bobs_token}):
        refused = client.post(f"/jobs/{job_id}/cancel", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text, data
    with factory() as session:
        assert get_job(session, job_id).status == status

    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_of(client, f"/jobs/{job_id}")})
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{job_id}"
    with factory() as session:
        job = get_job(session, job_id)
        assert job.status == after and job.cancel_requested is (status == "running")
    words = text_of(client.get(f"/jobs/{job_id}").text)
    assert ("Cancel requested" in words) is (status == "running") and after in words
    again = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_of(client)})
    assert again.status_code == (409 if after == "cancelled" else 303)


def test_retrain_button_submits_a_retrain_of_the_found_genotype(client, alice, finished, factory) -> None:
    sign_in(client, alice[1])
    page = client.get(f"/jobs/{finished.job_id}").text
    submit_token = re.search(r'name="submit_token" value="([^"]+)"', page).group(1)
    dataset_id = re.search(r'<option value="([^"]+)" selected>', page).group(1)
    form = {"csrf_token": csrf_of(client), "dataset_id": dataset_id, "epochs": "2", "submit_token": submit_token}
    assert client.post(f"/jobs/{finished.job_id}/retrain", data={**form, "csrf_token": "0" * 64}).status_code == 403

    response = client.post(f"/jobs/{finished.job_id}/retrain", data=form)
    assert response.status_code == 303
    new_id = response.headers["location"].removeprefix("/jobs/")
    assert client.post(f"/jobs/{finished.job_id}/retrain", data=form).headers["location"] == f"/jobs/{new_id}"
    with factory() as session:
        job = get_job(session, new_id)
        assert job.kind == "retrain" and job.status == JobStatus.QUEUED.value and job.epochs == 2
        assert job.architecture["search_job_id"] == finished.job_id
        assert job.architecture["genotype_id"] == finished.genotype_id
    page = client.get(f"/jobs/{new_id}").text
    words = text_of(page)
    assert "Retrain" in words and f"genotype {finished.genotype_id} from search {finished.job_id}" in words
    assert f'src="/v1/jobs/{new_id}/plots/genotype.png"' in page
    bad = client.post(f"/jobs/{finished.job_id}/retrain", data={**form, "epochs": "0", "submit_token": "x" * 10})
    assert bad.status_code == 422 and "epochs" in bad.text


def test_dataset_pages_show_reports_and_mark_synthetic_data(client, alice, finished, add_dataset) -> None:
    report = {"ok": False, "format": "nnunet", "issues": [
        {"path": "labelsTr/case_7.nii.gz", "case_id": "case_7", "problem": "label has values [0, 5]"}]}
    broken = add_dataset(alice[0], name="scanner-b", status="invalid", report=report)
    sign_in(client, alice[1])
    listing = client.get("/datasets").text
    words = text_of(listing)
    assert "phantom SYNTHETIC nnunet CT 3 3 ready" in words and "scanner-b nnunet — 3 3 invalid" in words
    with_problems = text_of(client.get(f"/datasets/{broken}").text)
    assert "1 problem(s) found" in with_problems and "label has values [0, 5]" in with_problems
    assert "SYNTHETIC" not in with_problems
    dataset_id = re.search(r'href="/datasets/(ds_[0-9a-f]+)">phantom', listing).group(1)
    good = text_of(client.get(f"/datasets/{dataset_id}").text)
    assert "SYNTHETIC: generated phantom images" in good and "no problems found in 3 case(s)" in good


def test_a_failed_job_shows_why_and_logout_needs_the_token(client, alice, add_dataset, add_job) -> None:
    job_id = add_job(alice[0], add_dataset(alice[0]), status="failed",
                     error="CUDA out of memory: lower batch_size <script>alert(1)</script>")
    sign_in(client, alice[1])
    page = client.get(f"/jobs/{job_id}").text
    assert "Why it failed" in page and "lower batch_size &lt;script&gt;" in page and "<script>" not in page
    assert client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    response = client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert response.headers["set-cookie"].startswith('thrifty_key="";') or "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/").headers["location"] == "/login"
