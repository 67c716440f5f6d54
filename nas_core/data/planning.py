"""A job's data plan: its working frame and normalisation, derived from the training cases.

The same fingerprint and plan that verification reports (``nas_core.data.fingerprint``),
taken over the cases the job trains on, so a job's defaults come from the scans it sees:
the median in-plane spacing, a working size that holds the median slice at that spacing
without distortion, CT clipped at the foreground's 0.5/99.5 percentiles then z-scored, MR
and other modalities z-scored per case. ``image_size`` in a config overrides the size only.

MR and 2D plans read only the labels (geometry); CT plans decode the images too. Plans are
cached as JSON beside the slice cache, keyed by the files they were computed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.data.cache import case_files
from nas_core.data.fingerprint import Plan, case_fingerprint, make_plan
from nas_core.data.frame import Frame, frame_for
from nas_core.data.preprocess import Normalisation
from nas_core.data.readers import get_reader
from nas_core.data.spec import DatasetSpec
from nas_core.io import atomic_write_text

log = logging.getLogger(__name__)

PLAN_VERSION = 1


def _key(spec: DatasetSpec, case_ids: Sequence[str], depth: int) -> str:
    files = []
    for cid in case_ids:
        for f in case_files(spec.case(cid)):
            st = f.stat()
            files.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    payload = {"v": PLAN_VERSION, "format": spec.format, "modality": spec.modality, "depth": depth, "files": files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def plan_dataset(spec: DatasetSpec, case_ids: Sequence[str], depth: int, cache_dir: Path | None = None) -> Plan:
    """The plan of a job training on ``case_ids`` with a network of ``depth`` poolings."""
    path = None if cache_dir is None else Path(cache_dir) / f"plan-{_key(spec, case_ids, depth)}.json"
    if path is not None and path.exists():
        try:
            return Plan(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            log.warning("ignoring an unreadable plan cache %s", path)
    reader = get_reader(spec.format)
    prints, samples = [], []
    for cid in case_ids:
        case = spec.case(cid)
        if spec.modality == "CT":  # the clipping window comes from the foreground's intensities
            loaded = reader.load(spec, case)
            fingerprint, sample = case_fingerprint(cid, loaded.image, loaded.label, loaded.geometry)
        else:  # shape and spacing are all an MR / 2D plan needs: the label holds both
            label = reader.read_label(spec, case)
            fingerprint, sample = case_fingerprint(cid, np.zeros((1, 1, 1, 1), np.float32), None, label.geometry)
            fingerprint.shape = [int(s) for s in label.array.shape]
        prints.append(fingerprint)
        samples.append(sample)
    plan = make_plan(prints, samples, spec.modality, depth=depth)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(plan.to_dict()))
    log.info("plan of %d cases: working size %s, spacing %s, %s%s", len(prints), plan.working_size,
             plan.target_spacing, plan.normalisation["scheme"], "".join(f"; {n}" for n in plan.notes))
    return plan


def normalisation_of(plan: Plan) -> Normalisation:
    """The plan's intensity scheme as the preprocessing record checkpoints carry."""
    norm: dict[str, Any] = plan.normalisation
    if norm["scheme"] == "ct_foreground":
        return Normalisation("ct_foreground", clip=tuple(map(tuple, norm["clip"])),
                             mean=tuple(norm["mean"]), std=tuple(norm["std"]))
    return Normalisation("zscore")


def job_frame(plan: Plan, image_size: int | None) -> Frame:
    """The frame a job works in: the plan's, or ``image_size`` square when the user set one."""
    return frame_for(plan.working_size, plan.target_spacing, image_size)
