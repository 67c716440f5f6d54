"""API keys: stored only as a peppered hash; missing, wrong or revoked keys are 401 on every operation.

The operations are read from the app's OpenAPI schema (everything under ``/v1``), filled
with the owner's real ids and valid bodies, so a 401 can only come from the key check.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

import pytest
from sqlalchemy import select, text

from api.deps import SESSION_COOKIE
from api.main import create_app
from nas_core.models import default_genotype
from store.history import save_genotype
from store.models import ApiKey, Base
from store.users import create_key, list_keys, revoke_key
from tests.api.support import RecordingQueue

PEPPER = "api-test-pepper"  # tests/api/conftest.py
FILLERS = {"fmt": "png", "name": "model.pt"}


def _key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def ids(alice, add_dataset, add_job, factory) -> dict[str, str]:
    ds = add_dataset(alice[0])
    job = add_job(alice[0], ds)
    with factory() as session:
        gen = save_genotype(session, owner_id=alice[0], genotype=default_genotype().to_dict(), job_id=job)
        session.commit()
        return {"dataset_id": ds, "job_id": job, "genotype_id": gen.id}


def _requests(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, url, JSON body) for every /v1 operation of the OpenAPI schema, with valid ids and bodies."""
    bodies = {
        ("post", "/v1/datasets"): {"name": "x", "path": "phantom"},
        ("post", "/v1/searches"): {"dataset_id": ids["dataset_id"], "config": {"epochs": 1}},
        ("post", "/v1/retrains"): {"dataset_id": ids["dataset_id"], "architecture": {"baseline": "unet"}},
    }
    out = []
    for path, ops in create_app().openapi()["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, op in ops.items():
            url = re.sub(r"{([^}]+)}", lambda m: {**FILLERS, **ids}[m.group(1)], path)
            if op.get("requestBody", {}).get("required"):
                assert (method, path) in bodies, f"{method.upper()} {path} needs a body in this test"
            out.append((method, url, bodies.get((method, path))))
    return out


def _assert_401(response, what: Any) -> None:
    assert response.status_code == 401, (what, response.status_code, response.text)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="thrifty-nas"'), what
    assert response.json()["error"]["code"] in ("unauthorized", "invalid_api_key"), what


def test_keys_are_stored_only_as_a_peppered_hash(client, alice, make_user, factory, ids) -> None:
    key = _key_of(alice[1])
    assert client.get("/v1/jobs", headers=alice[1]).status_code == 200  # used once, so any log table has it
    with factory() as session:
        second_row, second = create_key(session, alice[0], pepper=PEPPER)
        session.commit()
    keys = {key, second}
    with factory() as session:
        rows = session.scalars(select(ApiKey).where(ApiKey.user_id == alice[0])).all()
        assert len(rows) == 2
        by_hash = {row.hash: row for row in rows}
        for plaintext in keys:
            digest = hmac.new(PEPPER.encode(), plaintext.encode(), hashlib.sha256).hexdigest()
            row = by_hash[digest]  # stored: HMAC-SHA256 under the pepper ...
            assert row.prefix == plaintext[5:13] and len(row.hash) == 64
            assert hashlib.sha256(plaintext.encode()).hexdigest() not in by_hash  # ... not a bare hash
        # no column of any table holds a key, or its secret part after the 8-character lookup prefix
        dump = []
        for table in Base.metadata.sorted_tables:
            for values in session.execute(select(table)).all():
                dump.extend(str(v) for v in values)
        assert dump, "nothing was read"
        for plaintext in keys:
            secret = plaintext[13:]
            assert not [v for v in dump if secret in v or plaintext in v]
        # the same at the SQL level, whatever the ORM maps: every text column of api_keys
        raw = session.execute(text("SELECT * FROM api_keys")).all()
        assert not [v for r in raw for v in r if isinstance(v, str) and any(k[13:] in v for k in keys)]


def test_the_key_is_never_logged_nor_echoed(client, alice, caplog) -> None:
    key = _key_of(alice[1])
    wrong = key[:13] + ("A" if key[13] != "A" else "B") + key[14:]
    with caplog.at_level(logging.DEBUG):
        client.get("/v1/jobs", headers=alice[1])
        response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401
    assert wrong not in response.text and wrong[13:] not in response.text
    for record in caplog.records:
        message = record.getMessage()
        assert key[13:] not in message and wrong[13:] not in message, message


def test_every_operation_refuses_missing_wrong_and_revoked_keys(make_client, alice, make_user, ids,
                                                                factory) -> None:
    def refuse(job_id: str, kind: str) -> None:
        pytest.fail("an unauthenticated submit")

    client = make_client(queue=RecordingQueue(on_send=refuse))
    key = _key_of(alice[1])
    _, revoked_headers = make_user("carol")
    with factory() as session:
        carol_id = session.scalars(select(ApiKey.user_id).where(ApiKey.prefix == _key_of(revoked_headers)[5:13])).one()
        assert revoke_key(session, list_keys(session, carol_id)[0].id)
        session.commit()
    same_prefix = key[:13] + "x" * (len(key) - 13)  # finds alice's row by prefix, fails the hash
    bad = {
        "no header": {},
        "empty bearer": {"Authorization": "Bearer "},
        "not a tnas key": {"Authorization": "Bearer hello"},
        "unknown key": {"Authorization": "Bearer tnas_" + "A" * 43},
        "right prefix, wrong secret": {"Authorization": f"Bearer {same_prefix}"},
        "key with a suffix": {"Authorization": f"Bearer {key}x"},
        "truncated key": {"Authorization": f"Bearer {key[:-1]}"},
        "basic auth": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "revoked key": revoked_headers,
        "revoked key in the cookie": {"Cookie": f"{SESSION_COOKIE}={_key_of(revoked_headers)}"},
    }
    requests = _requests(ids)
    assert len(requests) >= 17
    for method, url, body in requests:
        for what, headers in bad.items():
            response = client.request(method.upper(), url, json=body, headers=headers)
            _assert_401(response, (method, url, what))
        # a good key in the cookie authenticates reads only: a state change needs the header
        if method != "get":
            response = client.request(method.upper(), url, json=body, headers={"Cookie": f"{SESSION_COOKIE}={key}"})
            _assert_401(response, (method, url, "cookie on a state change"))
    with factory() as session:  # nothing was created by the refused submits
        assert session.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 1
        assert session.execute(text("SELECT count(*) FROM datasets")).scalar_one() == 1


def test_revocation_takes_effect_on_the_very_next_request(client, alice, factory) -> None:
    """The same open connection, the next request, any endpoint: no cache lets a revoked key through."""
    with factory() as session:
        _, spare = create_key(session, alice[0], pepper=PEPPER)
        session.commit()
    main_key = _key_of(alice[1])
    for _ in range(3):  # warm whatever might cache
        assert client.get("/v1/jobs", headers=alice[1]).status_code == 200
        assert client.get("/v1/datasets", headers={"Cookie": f"{SESSION_COOKIE}={main_key}"}).status_code == 200
    with factory() as session:
        row = next(k for k in list_keys(session, alice[0]) if k.prefix == main_key[5:13])
        assert revoke_key(session, row.id, user_id=alice[0])
        session.commit()
    for url in ("/v1/jobs", "/v1/datasets", "/v1/plots/grid.svg"):
        _assert_401(client.get(url, headers=alice[1]), url)
        _assert_401(client.get(url, headers={"Cookie": f"{SESSION_COOKIE}={main_key}"}), url)
    response = client.get("/v1/jobs", headers=alice[1])
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    # the user's other key is untouched
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {spare}"}).status_code == 200
    with factory() as session:  # revoking twice reports nothing to revoke
        assert not revoke_key(session, row.id)


def test_oversized_headers_are_431_before_anyone_reads_them(client, alice) -> None:
    response = client.get("/v1/jobs", headers={"Authorization": "Bearer " + "x" * 1_000_000})
    assert response.status_code == 431 and response.json()["error"]["code"] == "headers_too_large"
    assert client.get("/v1/jobs", headers=alice[1]).status_code == 200
