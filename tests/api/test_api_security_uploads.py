"""Uploaded archives: every unsafe archive is refused before a single member is extracted.

Beyond ``tests/api/test_api_uploads.py`` (zip ``..``/absolute/symlink, tar symlink and
``..``, size, zip bomb, zip member count, not an archive): the tar forms of each attack
(absolute names, hardlinks, devices, bombs, member count), Windows-style names, later
members that are bad after good ones, conflicting members, damaged archives and
malformed multipart bodies. After each refusal the test checks that no file anywhere
under the test's folders (home, uploads, artefacts) or the data roots was added,
changed or removed, that no member was extracted even into the temp folder, and that no
dataset row exists. The answer is always a 4xx with a stable code, never the server's
own folder names.
"""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from api.services import uploads
from api.state import UploadLimits
from store.models import Dataset

MIB = 1024 * 1024


# --- archive builders ---------------------------------------------------------------------------


def _zip(members: dict[str, bytes], *, mode: int | None = None, flag_bits: int = 0) -> bytes:
    """A zip; ``mode`` (e.g. S_IFLNK) is set on the LAST member through its external attributes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        items = list(members.items())
        for i, (name, data) in enumerate(items):
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if i == len(items) - 1 and mode is not None:
                info.external_attr = (mode | 0o777) << 16
            zf.writestr(info, data)
            if i == len(items) - 1 and flag_bits:
                info.flag_bits |= flag_bits
    data = buffer.getvalue()
    if flag_bits:  # zipfile rewrites the flags it knows; patch the central directory entry by hand
        central = data.rfind(b"PK\x01\x02")
        flags = int.from_bytes(data[central + 8 : central + 10], "little") | flag_bits
        data = data[: central + 8] + flags.to_bytes(2, "little") + data[central + 10 :]
    return data


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


GOOD = ("ok/readme.txt", b"fine")  # a harmless member placed BEFORE the bad one

UNSAFE: dict[str, tuple[bytes, str, str]] = {
    # name: (archive bytes, error code, words in the message)
    "tar absolute path": (_tar([GOOD, ("/tmp/evil.txt", b"x")]), "unsafe_archive", "absolute path"),
    "tar dotdot in the middle": (_tar([GOOD, ("ok/../../evil.txt", b"x")]), "unsafe_archive", "'..'"),
    "tar.gz dotdot": (_tar([GOOD, ("../evil.txt", b"x")], "w:gz"), "unsafe_archive", "'..'"),
    "tar hardlink": (_tar([GOOD, _special("ok/passwd", tarfile.LNKTYPE, "/etc/passwd")]), "unsafe_archive",
                     "is a link"),
    "tar relative hardlink": (_tar([GOOD, _special("ok/again", tarfile.LNKTYPE, "ok/readme.txt")]),
                              "unsafe_archive", "is a link"),
    "tar symlink then a file through it": (
        _tar([_special("ok", tarfile.SYMTYPE, "/tmp"), ("ok/evil.txt", b"x")]), "unsafe_archive", "is a link"),
    "tar.bz2 symlink to a folder": (_tar([GOOD, _special("ok/up", tarfile.SYMTYPE, "../..")], "w:bz2"),
                                    "unsafe_archive", "is a link"),
    "tar character device": (_tar([GOOD, _special("ok/tty", tarfile.CHRTYPE)]), "unsafe_archive", "special file"),
    "tar block device": (_tar([GOOD, _special("ok/sda", tarfile.BLKTYPE)]), "unsafe_archive", "special file"),
    "tar fifo": (_tar([GOOD, _special("ok/pipe", tarfile.FIFOTYPE)]), "unsafe_archive", "special file"),
    "zip symlink after good members": (_zip({GOOD[0]: GOOD[1], "ok/link": b"/etc/passwd"}, mode=stat.S_IFLNK),
                                       "unsafe_archive", "is a link"),
    "zip fifo": (_zip({GOOD[0]: GOOD[1], "ok/pipe": b""}, mode=stat.S_IFIFO), "unsafe_archive", "special file"),
    "zip windows drive": (_zip({GOOD[0]: GOOD[1], "C:/evil.txt": b"x"}), "unsafe_archive", "absolute path"),
    "zip backslash dotdot": (_zip({GOOD[0]: GOOD[1], "..\\..\\evil.txt": b"x"}), "unsafe_archive", "backslash"),
    "zip dotdot folder entry": (_zip({GOOD[0]: GOOD[1], "ok/../../": b""}), "unsafe_archive", "'..'"),
    "zip encrypted member": (_zip({GOOD[0]: GOOD[1], "ok/secret.bin": b"x"}, flag_bits=0x1), "unsafe_archive",
                             "encrypted"),
    "truncated zip": (_zip({GOOD[0]: GOOD[1] * 1000})[:-30], "", "not a zip or tar"),  # no central directory
    "truncated tar.gz": (_tar([GOOD, ("ok/big.bin", bytes(200_000))], "w:gz")[:-200], "bad_archive", "damaged"),
    "gzip of something else": (gzip.compress(b"hello, not a tar" * 100), "not_an_archive",
                               "not a zip or tar"),
    "empty file": (b"", "not_an_archive", "not a zip or tar"),
}


def _duplicate_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("ok/x.txt", b"1")
        zf.writestr("ok/x.txt", b"2")
    return buffer.getvalue()


# --- what must stay untouched ---------------------------------------------------------------------


def _tree(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folders``: (size, mode); links and special files included, not followed."""
    found: dict[str, tuple[int, int]] = {}
    for folder in folders:
        if not folder.exists():
            continue
        for path in [folder, *folder.rglob("*")]:
            info = path.lstat()
            found[str(path)] = (info.st_size if stat.S_ISREG(info.st_mode) else 0, info.st_mode)
    return found


@pytest.fixture
def untouched(tmp_path, data_root, settings, factory, monkeypatch) -> Callable[[], None]:
    """Call it after a refusal: the folders are as before, nothing was extracted, no row was stored."""
    settings.ensure_dirs()  # what the app's start-up creates
    folders = (tmp_path, data_root, settings.upload_dir, settings.artifact_dir, settings.home)
    before = _tree(*folders)
    extracted: list[str] = []
    real_copy = uploads._copy_member
    monkeypatch.setattr(uploads, "_copy_member",
                        lambda a, m, raw, info, t, *rest: (extracted.append(raw), real_copy(a, m, raw, info, t, *rest)))

    def check() -> None:
        assert _tree(*folders) == before
        assert extracted == [], f"members were extracted before the refusal: {extracted}"
        with factory() as session:
            assert session.query(Dataset).count() == 0
        assert not Path("/tmp/evil.txt").exists()

    return check


def _upload(client, headers, data: bytes, filename: str = "data.tar"):
    return client.post("/v1/datasets", files={"file": (filename, data)}, data={"name": "up"}, headers=headers)


def _refused(response, status: int, code: str, words: str, settings) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code:
        assert error["code"] == code, error
    assert words in error["message"], error
    assert str(settings.upload_dir) not in response.text  # no server folder names in the answer


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archive_is_refused_before_anything_is_extracted(client, alice, settings, untouched, case) -> None:
    data, code, words = UNSAFE[case]
    filename = "data.zip" if case.startswith(("zip", "truncated zip")) else "data.tar"
    response = _upload(client, alice[1], data, filename)
    _refused(response, 400, code, words, settings)
    untouched()


@pytest.mark.parametrize(
    ("filename", "archive"),
    [
        ("dup.zip", "zip"),
        ("dup.tar", [GOOD, ("ok/x", b"1"), ("ok/x", b"22")]),
        ("file-then-folder.tar", [GOOD, ("ok/x", b"1"), _special("ok/x", tarfile.DIRTYPE), ("ok/x/y", b"2")]),
        ("file-then-child.tar", [GOOD, ("ok/x", b"1"), ("ok/x/y", b"2")]),
    ],
)
def test_conflicting_members_are_refused(client, alice, settings, factory, filename, archive) -> None:
    """Names used twice are caught while extracting (into the temp folder only, which is then removed)."""
    settings.ensure_dirs()
    data = _duplicate_zip() if archive == "zip" else _tar(archive)
    response = _upload(client, alice[1], data, filename)
    _refused(response, 400, "conflicting_members", "conflicting members", settings)
    assert list(settings.upload_dir.iterdir()) == []
    with factory() as session:
        assert session.query(Dataset).count() == 0


def test_tar_member_count_and_bomb_limits(make_client, alice, settings, untouched) -> None:
    crowded = make_client(upload_limits=UploadLimits(max_members=5))
    response = _upload(crowded, alice[1], _tar([(f"f{i}.txt", b"x") for i in range(6)]))
    _refused(response, 400, "too_many_members", "more than 5 members", settings)

    bombed = make_client(upload_limits=UploadLimits(bomb_floor_bytes=MIB))
    bomb = _tar([GOOD, ("ok/zeros.bin", bytes(30 * MIB))], "w:gz")
    assert len(bomb) < 100_000  # ratio > 300
    _refused(_upload(bombed, alice[1], bomb, "bomb.tar.gz"), 400, "archive_bomb", "decompression bomb", settings)

    many_small = _zip({f"z{i}.bin": bytes(200_000) for i in range(10)})  # 2 MB declared from ~20 kB
    _refused(_upload(bombed, alice[1], many_small, "many.zip"), 400, "archive_bomb", "decompression bomb", settings)
    untouched()


def test_malformed_multipart_bodies_are_4xx(client, alice, settings, untouched) -> None:
    archive = _zip({"a.txt": b"x"})
    cases = {
        "two files": {"files": [("file", ("a.zip", archive)), ("file", ("b.zip", archive))]},
        "too many fields": {"files": {"file": ("a.zip", archive)}, "data": {f"f{i}": "x" for i in range(20)}},
        "a 2 MB text field": {"files": {"file": ("a.zip", archive)}, "data": {"name": "x" * 2 * MIB}},
        "the file as a text field": {"data": {"file": "PK\x03\x04 not really"}},
    }
    for what, kwargs in cases.items():
        response = client.post("/v1/datasets", headers=alice[1], **kwargs)
        assert 400 <= response.status_code < 500, (what, response.text)
    for content_type, body in (("multipart/form-data; boundary=xyz", b"garbage--xyz"),
                               ("multipart/form-data", b"no boundary at all")):
        response = client.post("/v1/datasets", content=body, headers={**alice[1], "Content-Type": content_type})
        assert response.status_code == 400, response.text
    untouched()


def test_a_refused_upload_never_shows_the_server_folders(client, alice, settings, untouched) -> None:
    """A readable archive that is not a dataset: 422 with the report, paths relative to the archive."""
    response = _upload(client, alice[1], _zip({"notes/readme.txt": b"hello"}), "notes.zip")
    assert response.status_code == 422 and response.json()["error"]["code"] == "dataset_invalid"
    assert str(settings.upload_dir) not in response.text and ".incoming-" not in response.text, response.text
    assert list(settings.upload_dir.iterdir()) == []


def test_an_archive_declaring_exactly_the_limit_is_a_bomb(make_client, alice, settings, untouched) -> None:
    """The check was a strict '>' at the limit: an archive declaring exactly it was extracted whole."""
    archive = _tar([GOOD, ("ok/zeros.bin", bytes(MIB - len(GOOD[1])))], "w:gz")  # exactly 1 MiB declared
    exact = make_client(upload_limits=UploadLimits(bomb_floor_bytes=MIB, bomb_ratio=1.0))
    _refused(_upload(exact, alice[1], archive, "exact.tar.gz"), 400, "archive_bomb", "decompression bomb", settings)
    untouched()


def test_no_extraction_without_the_disk_space_for_it(client, alice, settings, untouched, monkeypatch) -> None:
    from collections import namedtuple

    from api.services import uploads

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(uploads.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    response = _upload(client, alice[1], _tar([GOOD, ("ok/data.bin", bytes(5000))]))
    _refused(response, 507, "insufficient_storage", "free", settings)
    untouched()


def test_a_user_s_uploads_in_flight_are_bounded(client, alice, bob, settings) -> None:
    state = client.app.state.api
    with state.upload_slot(alice[0]), state.upload_slot(alice[0]):  # two uploads of alice's in progress
        response = _upload(client, alice[1], _tar([GOOD]))
        _refused(response, 429, "too_many_requests", "uploads in progress", settings)
        assert response.headers["Retry-After"] == "5"
        assert _upload(client, bob[1], _tar([GOOD])).status_code != 429  # others are not affected
    assert _upload(client, alice[1], _tar([GOOD])).status_code != 429  # slots come back
