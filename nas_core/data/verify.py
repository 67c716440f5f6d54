"""Dataset integrity check run when a dataset is registered (in the spirit of nnU-Net's).

Every file is decoded once and every problem is recorded, so the report names all
bad files at once instead of stopping at the first.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.data.checks import Issue, check_case
from nas_core.data.errors import DatasetError
from nas_core.data.fingerprint import CaseFingerprint, Plan, case_fingerprint, make_plan
from nas_core.data.imageio import Volume
from nas_core.data.readers import get_reader, open_dataset
from nas_core.data.readers.base import Reader
from nas_core.data.spec import Case, DatasetSpec

log = logging.getLogger(__name__)


@dataclass
class VerificationReport:
    """Outcome of ``verify_dataset``; ``ok`` is True only when there are no issues."""

    ok: bool
    format: str | None
    name: str | None
    num_cases: int
    labels: dict[int, str]
    modality: str | None
    synthetic: bool
    issues: list[Issue] = field(default_factory=list)
    fingerprint: list[CaseFingerprint] = field(default_factory=list)
    plan: Plan | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "format": self.format,
            "name": self.name,
            "num_cases": self.num_cases,
            "labels": {str(k): v for k, v in self.labels.items()},
            "modality": self.modality,
            "synthetic": self.synthetic,
            "issues": [i.to_dict() for i in self.issues],
            "fingerprint": [asdict(c) for c in self.fingerprint],
            "plan": None if self.plan is None else self.plan.to_dict(),
        }

    def render(self) -> str:
        """Human-readable text naming every bad file and why."""
        title = f"{self.name or '?'} ({self.format or 'unknown format'})"
        if self.synthetic:
            title += " [SYNTHETIC]"
        head = (
            f"dataset {title}: {self.num_cases} case(s), {len(self.labels)} class(es) {self.labels}, "
            f"modality {self.modality}"
        )
        if self.ok:
            plan = "" if self.plan is None else (
                f"\nplan: working size {self.plan.working_size[0]}x{self.plan.working_size[1]} (aspect kept), "
                f"target spacing {self.plan.target_spacing or 'unknown'}, normalisation "
                f"{self.plan.normalisation['scheme']}" + "".join(f"; {n}" for n in self.plan.notes))
            return f"{head}\nOK: no problems found{plan}"
        lines = [head, f"{len(self.issues)} problem(s):"]
        for issue in self.issues:
            where = f"[{issue.case_id}] " if issue.case_id else ""
            lines.append(f"  - {where}{issue.path}: {issue.problem}")
        return "\n".join(lines)


def _spec_issues(spec: DatasetSpec) -> list[Issue]:
    root = str(spec.root)
    issues = []
    if not spec.cases:
        issues.append(Issue(root, None, "dataset has no cases; add image/label files in the expected layout"))
    ids = sorted(spec.labels)
    if ids != list(range(len(ids))):
        issues.append(Issue(root, None, f"label ids {ids} must be consecutive from 0 (0 = background)"))
    return issues


def _read(fn: Any, case: Case, path: Path | None, issues: list[Issue]) -> Volume | None:
    """Run one decode, turning a failure into an issue on the file that failed."""
    try:
        return fn()
    except DatasetError as exc:
        issues.append(Issue(str(exc.path or path), case.case_id, str(exc)))
    except Exception as exc:  # a decoder crashing on a bad file is still a bad file, not a crash
        log.debug("unexpected error reading %s", path, exc_info=True)
        issues.append(Issue(str(path), case.case_id, f"cannot read: {type(exc).__name__}: {exc}"))
    return None


def _case_issues(reader: Reader, spec: DatasetSpec, case: Case,
                 prints: list[tuple[CaseFingerprint, list[Any]]] | None = None) -> list[Issue]:
    issues: list[Issue] = []
    images = [
        _read(lambda i=i: reader.read_image(spec, case, i), case, p, issues)
        for i, p in enumerate(case.image_paths)
    ]
    label = None
    if case.label_path is None:
        issues.append(Issue(str(case.image_paths[0]), case.case_id, "no label file for this case"))
    else:
        label = _read(lambda: reader.read_label(spec, case), case, case.label_path, issues)
    readable = [v for v in images if v is not None]
    if readable:  # still check what could be read, so a bad label is reported beside a missing channel
        issues += check_case(spec, case, readable, label, count_channels=len(readable) == len(images))
    if not issues and prints is not None and label is not None:
        image = np.concatenate([v.array for v in readable])
        prints.append(case_fingerprint(case.case_id, image, label.array, readable[0].geometry))
    return list(dict.fromkeys(issues))  # a file read twice (a DICOM slice for image and order) counts once


def verify_dataset(root: Path | str, format: str | None = None, **options: Any) -> VerificationReport:
    """Decode every file of a dataset and report every problem, file by file."""
    try:
        spec = open_dataset(root, format, **options)
    except DatasetError as exc:
        return VerificationReport(
            False, format, None, 0, {}, None, False, [Issue(str(exc.path or root), None, str(exc))]
        )
    reader = get_reader(spec.format)
    issues = _spec_issues(spec)
    prints: list[tuple[CaseFingerprint, list[Any]]] = []
    for case in spec.cases:
        issues += _case_issues(reader, spec, case, prints)
    report = VerificationReport(
        not issues,
        spec.format,
        spec.name,
        len(spec.cases),
        dict(spec.labels),
        spec.modality,
        spec.synthetic,
        issues,
        [p[0] for p in prints],
        make_plan([p[0] for p in prints], [p[1] for p in prints], spec.modality) if prints and not issues else None,
    )
    log.info("verified %s: %s", root, "ok" if report.ok else f"{len(issues)} problem(s)")
    return report


def require_valid(report: VerificationReport) -> VerificationReport:
    """Refuse a dataset with any problem as a whole, raising DatasetError with the report text."""
    if not report.ok:
        raise DatasetError(report.render())
    return report
