"""Uploading dataset archives: size-limited, extracted safely, verified, or refused whole."""

from __future__ import annotations

import asyncio
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from api.errors import BadRequest, PayloadTooLarge
from api.services import uploads
from api.state import UploadLimits
from store.models import Dataset

MIB = 1024 * 1024


def _zip_folder(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _zip_members(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _upload(client, headers, data: bytes, filename: str = "phantom.zip", name: str | None = "up"):
    fields = {"name": name} if name else {}
    return client.post("/v1/datasets", files={"file": (filename, data)}, data=fields, headers=headers)


def _nothing_left(settings, factory) -> None:
    with factory() as session:
        assert session.query(Dataset).count() == 0
    leftovers = list(settings.upload_dir.iterdir()) if settings.upload_dir.exists() else []
    assert leftovers == []


def test_upload_a_zip(client, alice, data_root, settings) -> None:
    response = _upload(client, alice[1], _zip_folder(data_root / "phantom", prefix="phantom/"), name=None)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "phantom" and body["num_cases"] == 3 and body["status"] == "ready"
    assert body["path"] == str(settings.upload_dir / body["id"])
    assert (Path(body["path"]) / "dataset.json").is_file()
    assert [p.name for p in settings.upload_dir.iterdir()] == [body["id"]]  # the temp folder is gone


def test_upload_a_tar_gz(client, alice, data_root) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(data_root / "phantom", arcname=".")
    response = _upload(client, alice[1], buffer.getvalue(), filename="ph.tar.gz", name="tarred")
    assert response.status_code == 201, response.text


def test_broken_upload_is_refused_with_relative_paths(client, alice, data_root, settings, factory) -> None:
    response = _upload(client, alice[1], _zip_folder(data_root / "broken"))
    assert response.status_code == 422
    issues = response.json()["error"]["details"]["report"]["issues"]
    assert [i["path"] for i in issues] == ["labelsTr/phantom_001.nii.gz"]
    _nothing_left(settings, factory)


@pytest.mark.parametrize(
    ("archive", "code", "words"),
    [
        (_zip_members({"../evil.txt": b"x"}), "unsafe_archive", "contains '..'"),
        (_zip_members({"ok/../../evil.txt": b"x"}), "unsafe_archive", "contains '..'"),
        (_zip_members({"/etc/evil.txt": b"x"}), "unsafe_archive", "absolute path"),
        (_zip_members({"a.txt": b"x"}, link="passwd"), "unsafe_archive", "is a link"),
        (b"just some text, certainly not an archive" * 10, "not_an_archive", "not a zip or tar archive"),
    ],
)
def test_unsafe_or_foreign_uploads_are_400(client, alice, settings, factory, archive, code, words) -> None:
    response = _upload(client, alice[1], archive)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    _nothing_left(settings, factory)
    assert not (settings.upload_dir.parent / "evil.txt").exists()


def test_tar_with_symlink_or_dotdot_is_refused(client, alice, tmp_path) -> None:
    for make in ("symlink", "dotdot"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tf:
            info = tarfile.TarInfo("data/link" if make == "symlink" else "../../evil")
            if make == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(info)
            else:
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
        response = _upload(client, alice[1], buffer.getvalue(), filename="x.tar")
        assert response.status_code == 400 and response.json()["error"]["code"] == "unsafe_archive", make


def test_too_large_upload_is_413(make_client, alice, data_root, settings, factory) -> None:
    small = make_client(max_upload_bytes=5_000)
    archive = _zip_folder(data_root / "phantom")
    for data in (archive, archive * 30):  # caught after parsing; caught from Content-Length alone
        assert len(data) > 5_000
        response = _upload(small, alice[1], data)
        assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
        assert response.json()["error"]["details"] == {"max_upload_bytes": 5_000}
    _nothing_left(settings, factory)


def test_zip_bomb_is_refused_before_extraction(make_client, alice, settings, factory) -> None:
    bombed = make_client(upload_limits=UploadLimits(bomb_floor_bytes=MIB))
    bomb = _zip_members({"zeros.bin": bytes(20 * MIB)})
    assert len(bomb) < 100_000  # ratio > 200
    response = _upload(bombed, alice[1], bomb)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "archive_bomb"
    _nothing_left(settings, factory)


def test_too_many_members_is_refused(make_client, alice, settings, factory) -> None:
    crowded = make_client(upload_limits=UploadLimits(max_members=5))
    response = _upload(crowded, alice[1], _zip_members({f"f{i}.txt": b"x" for i in range(6)}))
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_members"
    _nothing_left(settings, factory)


def test_missing_file_part_is_422(client, alice) -> None:
    response = client.post("/v1/datasets", data={"name": "x"}, files={"other": ("a.zip", b"x")},
                           headers=alice[1])
    assert response.status_code == 422 and "file" in response.json()["error"]["details"]["fields"]


# --- the extraction on its own ----------------------------------------------------------------


def test_a_member_larger_than_declared_is_stopped(tmp_path) -> None:
    archive = tmp_path / "lying.zip"
    archive.write_bytes(_zip_members({"data.bin": bytes(100_000)}))
    raw = bytearray(archive.read_bytes())
    # make the central directory and the local header declare 10 bytes instead of 100000
    declared = (100_000).to_bytes(4, "little")
    assert raw.count(declared) == 2
    archive.write_bytes(bytes(raw).replace(declared, (10).to_bytes(4, "little")))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BadRequest) as refused:
        uploads.extract(archive, "zip", dest, UploadLimits())
    assert refused.value.code in ("archive_bomb", "bad_archive")
    assert sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) <= 10


def test_dataset_root_unwraps_a_single_folder(tmp_path) -> None:
    (tmp_path / "one" / "imagesTr").mkdir(parents=True)
    (tmp_path / "__MACOSX").mkdir()
    assert uploads.dataset_root(tmp_path) == tmp_path / "one"
    (tmp_path / "other.txt").write_text("x")
    assert uploads.dataset_root(tmp_path) == tmp_path


@pytest.mark.parametrize(
    ("filename", "name"), [("spleen.tar.gz", "spleen"), ("a.b.zip", "a.b"), ("C:\\x\\prost.tgz", "prost")]
)
def test_name_from_filename(filename, name) -> None:
    assert uploads.name_from_filename(filename) == name


def test_a_body_without_length_is_stopped_while_it_streams(tmp_path) -> None:
    encoded = httpx.Request("POST", "http://test/", files={"file": ("big.zip", bytes(300_000))})
    body, content_type = encoded.read(), encoded.headers["content-type"]
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    sent: list[int] = []

    async def receive() -> dict:
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        sent.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", content_type.encode())]}
    with pytest.raises(PayloadTooLarge):
        asyncio.run(uploads.receive_upload(Request(scope, receive), 1_000, tmp_path))
    assert sum(sent) < 100_000 < len(body)  # refused after ~65 kB, not after reading it all
    assert not (tmp_path / "archive").exists()


@pytest.mark.parametrize("name", ["bad\x00name", "tab\there", "x" * 5000, "   "])
def test_upload_names_follow_the_json_registration_rules(client, alice, data_root, settings, factory, name) -> None:
    response = _upload(client, alice[1], _zip_folder(data_root / "phantom", prefix="phantom/"), name=name)
    assert response.status_code == 422, response.text
    assert "name" in response.json()["error"]["details"]["fields"]
    _nothing_left(settings, factory)
    too_long_json = client.post("/v1/datasets", json={"name": "x" * 5000, "path": "phantom"}, headers=alice[1])
    assert too_long_json.status_code == 422  # the same rule on both paths


def test_deleting_an_uploaded_dataset_removes_its_files(client, alice, data_root, settings) -> None:
    body = _upload(client, alice[1], _zip_folder(data_root / "phantom", prefix="phantom/"), name=None).json()
    assert Path(body["path"]).is_dir()
    assert client.delete(f"/v1/datasets/{body['id']}", headers=alice[1]).status_code == 204
    assert list(settings.upload_dir.iterdir()) == []
    assert data_root.joinpath("phantom", "dataset.json").is_file()  # a registered path is never touched
