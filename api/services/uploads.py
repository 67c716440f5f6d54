"""Uploaded dataset archives: size-limited receipt and safe extraction.

Every member of a .zip / .tar(.gz, .bz2, .xz) is checked before a byte is extracted:
no absolute paths, no ``..``, no links or device files, at most ``max_members``
members, and no "bomb" (members declaring far more than the archive's size). The
extraction then writes only regular files and folders into a fresh folder, counting
the bytes actually written, so an archive whose headers lie is stopped too.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from api.errors import BadRequest, InsufficientStorage, PayloadTooLarge, Unprocessable
from api.state import UploadLimits

CHUNK = 1024 * 1024
DISK_MARGIN = 64 * 1024**2  # left free after an extraction
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small text fields
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")
IGNORED_TOP_LEVEL = {"__MACOSX"}


class UnsafeArchive(BadRequest):
    code = "unsafe_archive"


@dataclass(frozen=True)
class Member:
    parts: tuple[str, ...]  # the normalised relative path
    size: int
    is_dir: bool

    @property
    def name(self) -> str:
        return "/".join(self.parts)


@dataclass(frozen=True)
class Upload:
    """A received multipart upload: the archive on disk (in a temp folder) and the form fields."""

    archive: Path
    filename: str
    name: str | None
    format: str | None


# --- receiving --------------------------------------------------------------------------------


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"upload is larger than the server's limit of {limit} bytes; register the dataset from a server "
        f"path instead, or ask the operator to raise THRIFTY_MAX_UPLOAD_BYTES",
        details={"max_upload_bytes": limit},
    )


async def receive_upload(request: Request, limit: int, folder: Path) -> Upload:
    """Parse a multipart upload into ``folder/archive``, refusing (413) past ``limit`` bytes.

    The body is counted while it streams in, so an oversized upload is stopped early
    whether or not it announced its length.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD_BYTES:
        raise _too_large(limit)
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit + FORM_OVERHEAD_BYTES:
                raise _too_large(limit)
        return message

    counted = Request(request.scope, counting_receive)
    form = await counted.form(max_files=1, max_fields=10)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable(
                "multipart upload needs a 'file' part holding a .zip or .tar(.gz) archive",
                code="validation_error",
                details={"fields": {"file": "field required"}},
            )
        target = folder / "archive"
        await _save(upload, target)
        if target.stat().st_size > limit:
            raise _too_large(limit)
        name, fmt = form.get("name"), form.get("format")
        return Upload(
            archive=target,
            filename=upload.filename or "upload",
            name=name if isinstance(name, str) else None,
            format=(fmt or None) if isinstance(fmt, str) else None,  # "" (an empty form field): detect it
        )
    finally:
        await form.close()


async def _save(upload: UploadFile, target: Path) -> None:
    def copy() -> None:
        upload.file.seek(0)
        with open(target, "xb") as out:
            shutil.copyfileobj(upload.file, out, CHUNK)

    await run_in_threadpool(copy)


def name_from_filename(filename: str) -> str:
    """``spleen.tar.gz`` -> ``spleen``."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    for suffix in ARCHIVE_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)] or "upload"
    return base or "upload"


# --- checking ---------------------------------------------------------------------------------


def _parts(name: str) -> tuple[str, ...]:
    """The safe relative path of a member name, or ``UnsafeArchive`` naming it."""
    if "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"archive member {name!r} has a NUL or backslash in its name",
                            details={"member": name})
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":"):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path; archive relative paths only",
                            details={"member": name})
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"archive member {name!r} contains '..' (a path escaping the archive)",
                            details={"member": name})
    return parts


def _link(name: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"archive member {name!r} is a link or special file; only regular files and folders are accepted",
        details={"member": name},
    )


def _zip_members(zf: zipfile.ZipFile) -> Iterator[Member]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _link(info.filename)
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"archive member {info.filename!r} is encrypted", details={"member": info.filename})
        yield Member(_parts(info.filename), info.file_size, info.is_dir())


def _tar_members(tf: tarfile.TarFile) -> Iterator[Member]:
    while (info := tf.next()) is not None:
        if not (info.isreg() or info.isdir()) or info.issparse():
            raise _link(info.name)
        yield Member(_parts(info.name), info.size, info.isdir())


def archive_kind(path: Path) -> str:
    """'zip' or 'tar'; else 400 not a zip or tar archive."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, tarfile.TarError, EOFError):
        pass
    raise BadRequest(
        "not a zip or tar archive: upload a .zip, .tar or .tar.gz of the dataset folder",
        code="not_an_archive",
    )


def _open(path: Path, kind: str) -> zipfile.ZipFile | tarfile.TarFile:
    return zipfile.ZipFile(path) if kind == "zip" else tarfile.open(path, "r:*")


def scan(path: Path, kind: str, limits: UploadLimits) -> list[Member]:
    """Check every member (names, types, count, total size) without extracting anything."""
    archive_size = path.stat().st_size
    bomb_at = max(limits.bomb_ratio * archive_size, limits.bomb_floor_bytes)
    members: list[Member] = []
    total = 0
    try:
        with _open(path, kind) as archive:
            source = _zip_members(archive) if kind == "zip" else _tar_members(archive)  # type: ignore[arg-type]
            for member in source:
                members.append(member)
                total += member.size
                if len(members) > limits.max_members:
                    raise UnsafeArchive(
                        f"archive has more than {limits.max_members} members; pack fewer, larger files",
                        code="too_many_members",
                    )
                if total >= bomb_at:
                    raise UnsafeArchive(
                        f"archive expands to {int(bomb_at)} bytes or more ({limits.bomb_ratio:g}x its "
                        f"{archive_size} bytes): refused as a decompression bomb",
                        code="archive_bomb",
                        details={"archive_bytes": archive_size, "declared_bytes_so_far": total},
                    )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, NotImplementedError) as exc:
        raise BadRequest(f"archive is damaged or unreadable: {exc}", code="bad_archive") from None
    return members


# --- extracting -------------------------------------------------------------------------------


Info = zipfile.ZipInfo | tarfile.TarInfo


def _member_stream(archive: zipfile.ZipFile | tarfile.TarFile, info: Info) -> IO[bytes]:
    """The member's bytes, opened by its entry (by name, a repeated name would give the last one)."""
    if isinstance(archive, zipfile.ZipFile):
        assert isinstance(info, zipfile.ZipInfo)
        return archive.open(info)
    assert isinstance(info, tarfile.TarInfo)
    stream = archive.extractfile(info)
    if stream is None:
        raise _link(info.name)
    return stream


def _entries(archive: zipfile.ZipFile | tarfile.TarFile) -> list[tuple[str, Info]]:
    """(raw name, entry) of every member, in archive order (the order ``scan`` checked them in)."""
    if isinstance(archive, zipfile.ZipFile):
        return [(info.filename, info) for info in archive.infolist()]
    return [(info.name, info) for info in archive.getmembers()]


def extract(path: Path, kind: str, dest: Path, limits: UploadLimits) -> None:
    """Check, then write the regular files and folders of the archive into the empty folder ``dest``."""
    members = scan(path, kind, limits)
    declared = sum(m.size for m in members)
    free = shutil.disk_usage(dest).free
    if declared + DISK_MARGIN > free:
        raise InsufficientStorage(f"the archive expands to {declared} bytes and the server has {free} bytes free; "
                                  f"try again later or upload a smaller dataset",
                                  details={"declared_bytes": declared, "free_bytes": free})
    budget = _Budget(max(limits.bomb_ratio * path.stat().st_size, limits.bomb_floor_bytes))
    dest_real = dest.resolve()
    try:
        with _open(path, kind) as archive:
            for (raw, info), member in zip(_entries(archive), members, strict=True):
                if not member.parts:
                    continue
                target = dest_real.joinpath(*member.parts)
                if not target.resolve().is_relative_to(dest_real):  # defence in depth: no links exist here
                    raise UnsafeArchive(f"archive member {raw!r} escapes the extraction folder")
                if member.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(archive, member, raw, info, target, budget)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, NotImplementedError) as exc:
        raise BadRequest(f"archive is damaged or unreadable: {exc}", code="bad_archive") from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        clash = Path(str(exc.filename))  # named inside the archive, never by the server's temp folder
        name = clash.relative_to(dest_real).as_posix() if clash.is_relative_to(dest_real) else "a member"
        raise UnsafeArchive(f"archive has conflicting members (a name used twice, or as file and folder): "
                            f"{name}", code="conflicting_members", details={"member": name}) from None


class _Budget:
    """A running count of the bytes extraction writes, refused the moment it reaches the limit."""

    def __init__(self, limit: float) -> None:
        self.limit, self.written = limit, 0

    def spend(self, n: int) -> None:
        self.written += n
        if self.written >= self.limit:
            raise UnsafeArchive(f"archive expands to {int(self.limit)} bytes or more: refused as a "
                                f"decompression bomb", code="archive_bomb")


def _copy_member(
    archive: zipfile.ZipFile | tarfile.TarFile, member: Member, raw: str, info: Info, target: Path, budget: _Budget
) -> None:
    written = 0
    with _member_stream(archive, info) as src, open(target, "xb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > member.size:
                raise UnsafeArchive(
                    f"archive member {raw!r} expands beyond the {member.size} bytes it declares",
                    code="archive_bomb",
                )
            budget.spend(len(chunk))
            out.write(chunk)
    os.chmod(target, 0o644)


def dataset_root(folder: Path) -> Path:
    """The dataset's top folder: ``folder`` itself, or its only sub-folder if the archive wrapped one."""
    entries = [e for e in folder.iterdir() if e.name not in IGNORED_TOP_LEVEL and not e.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder
