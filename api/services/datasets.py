"""Registering datasets: verify every file first, refuse a dataset with errors as a whole.

A registered dataset is always ``ready``: one with any problem is refused (422) with
the verification report, which names each bad file, and nothing is stored. Uploads
are extracted into a temp folder under ``upload_dir`` and moved to
``upload_dir/<dataset id>`` only once they verified.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, Unprocessable
from api.schemas import Name
from api.services import uploads
from api.services.paths import resolve_dataset_folder
from api.state import UploadLimits
from nas_core.data.formats import FORMATS
from store.datasets import create_dataset, get_dataset_by_name
from store.models import Dataset, DatasetStatus
from store.settings import Settings

if TYPE_CHECKING:
    from nas_core.data.verify import VerificationReport

log = logging.getLogger(__name__)


def check_format(format: str | None) -> str | None:
    if format is not None and format not in FORMATS:
        message = f"unknown dataset format {format!r}; known formats: {sorted(FORMATS)} (or omit it to detect)"
        raise Unprocessable(message, code="validation_error", details={"fields": {"format": message}})
    return format


_NAME = TypeAdapter(Name)


def valid_name(value: str, field: str = "name") -> str:
    """The same rules for a multipart upload's name as for JSON registration (``schemas.Name``):
    1 to 200 characters, no control characters; 422 naming the field otherwise, never a silent cut."""
    try:
        return _NAME.validate_python(value)
    except ValidationError:
        shown = value[:40] + ("..." if len(value) > 40 else "")
        raise Unprocessable(f"dataset name {shown!r} is not allowed: use 1 to 200 characters without control "
                            f"characters" + ("; pass a 'name' field" if field == "file" else ""),
                            code="validation_error", details={"fields": {field: "invalid dataset name"}}) from None


def check_name_free(session: Session, owner_id: str, name: str) -> None:
    if get_dataset_by_name(session, owner_id, name) is not None:
        raise _name_taken(name)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"you already have a dataset named {name!r}; choose another name",
                    code="dataset_exists", details={"name": name})


def _report_dict(report: VerificationReport, relative_to: Path | None) -> dict[str, Any]:
    """The report as JSON; upload paths are shown relative to the archive's dataset folder.

    The server's temp folder is named nowhere: neither as an issue's path nor in its text.
    """
    data = report.to_dict()
    if relative_to is not None:
        prefix = str(relative_to)
        for issue in data["issues"]:
            path = issue["path"]
            if path == prefix:
                issue["path"] = "."
            elif path.startswith(prefix + os.sep):
                issue["path"] = path[len(prefix) + 1 :]
            issue["problem"] = str(issue["problem"]).replace(prefix + os.sep, "").replace(prefix, ".")
    return data


def _verify(root: Path, format: str | None, relative_to: Path | None) -> tuple[VerificationReport, dict]:
    # The remaining ML work in the web tier (decoders: SimpleITK, pydicom): to move to the workers.
    from nas_core.data.verify import verify_dataset

    report = verify_dataset(root, format)
    data = _report_dict(report, relative_to)
    if not report.ok:
        first = data["issues"][0] if data["issues"] else {"path": str(root), "problem": "unknown"}
        raise Unprocessable(
            f"dataset has {len(data['issues'])} problem(s) and was not registered; first: {first['path']}: "
            f"{first['problem']}. Fix every file listed in details.report.issues and register it again",
            code="dataset_invalid",
            details={"report": data},
        )
    return report, data


def _store(
    session: Session, owner_id: str, name: str, path: str, report: VerificationReport, data: dict
) -> Dataset:
    try:
        return create_dataset(
            session,
            owner_id=owner_id,
            name=name,
            path=path,
            format=report.format or "unknown",
            num_cases=report.num_cases,
            num_classes=len(report.labels),
            labels=data["labels"],
            modality=report.modality,
            synthetic=report.synthetic,
            report=data,
            status=DatasetStatus.READY,
        )
    except IntegrityError:  # the same name registered concurrently
        session.rollback()
        raise _name_taken(name) from None


def register_path(
    session: Session, settings: Settings, owner_id: str, name: str, raw_path: str, format: str | None
) -> Dataset:
    """Verify and register a folder under the data roots (or an nnU-Net dataset name or id found in
    ``$nnUNet_raw`` inside them); committed on return."""
    check_format(format)
    root = resolve_dataset_folder(raw_path, settings.data_roots)
    check_name_free(session, owner_id, name)
    report, data = _verify(root, format, relative_to=None)
    dataset = _store(session, owner_id, name, str(root), report, data)
    session.commit()
    log.info("registered dataset %s (%s) from %s for %s", dataset.id, name, root, owner_id)
    return dataset


def new_upload_folder(settings: Settings) -> Path:
    """A fresh temp folder under ``upload_dir`` (same file system as the final place)."""
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".incoming-", dir=settings.upload_dir))


def register_upload(
    session: Session,
    settings: Settings,
    limits: UploadLimits,
    owner_id: str,
    upload: uploads.Upload,
    work: Path,
) -> Dataset:
    """Extract (safely) and verify an uploaded archive, then move it to ``upload_dir/<id>``; committed.

    ``work`` is the temp folder holding the archive; the caller removes it afterwards.
    """
    name = valid_name(upload.name if upload.name is not None else uploads.name_from_filename(upload.filename),
                      "name" if upload.name is not None else "file")
    check_format(upload.format)
    check_name_free(session, owner_id, name)
    kind = uploads.archive_kind(upload.archive)
    files = work / "files"
    files.mkdir()
    uploads.extract(upload.archive, kind, files, limits)
    root = uploads.dataset_root(files)
    report, data = _verify(root, upload.format, relative_to=root)
    dataset = _store(session, owner_id, name, "", report, data)
    final = settings.upload_dir / dataset.id
    dataset.path = str(final)
    os.replace(root, final)
    try:
        session.commit()
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    log.info("registered uploaded dataset %s (%s, %d cases) for %s", dataset.id, name, report.num_cases, owner_id)
    return dataset
