"""Self-describing checkpoints, written atomically, loadable for inference in one call.

A checkpoint is a dict saved with torch.save:

* ``schema``: CHECKPOINT_SCHEMA; ``kind``: 'search' or 'retrain'; ``epoch``: epochs completed.
* ``architecture``: ``{"genotype": {...}}``, ``{"baseline": "unet"}`` or, for a search,
  ``{"supernet": {...}}`` plus the derived ``genotype``.
* ``in_channels``, ``num_classes``, ``class_names``, ``image_size`` ([H, W]), ``frame``, ``normalisation``,
  ``dataset`` (name, format, synthetic), ``config``.
* ``model``, ``optimizers``, ``schedulers``, ``rng``, ``history``, ``metrics``: the state
  needed to resume exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_core.bundle_format import bundled_checkpoint
from nas_core.io import atomic_write

CHECKPOINT_SCHEMA = 1


class CheckpointError(ValueError):
    """A file that is not a Thrifty NAS checkpoint, or one from an unsupported schema."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically: temp file in the same folder, fsync, rename.

    A crash mid-write leaves the previous file at `path` intact.
    """
    return atomic_write(path, lambda fh: torch.save({"schema": CHECKPOINT_SCHEMA, **state}, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict, refusing files that are not ours.

    `path` may also be a model bundle (``nas_core.bundle``): its checkpoint member is read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        member = bundled_checkpoint(path)
        state = torch.load(path if member is None else member, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from None
    if not isinstance(state, dict) or "schema" not in state:
        raise CheckpointError(f"{path} is not a Thrifty NAS checkpoint (no schema field)")
    if state["schema"] != CHECKPOINT_SCHEMA:
        raise CheckpointError(f"{path} has checkpoint schema {state['schema']}; this build reads {CHECKPOINT_SCHEMA}")
    return state


def check_resumable(state: dict[str, Any], kind: str, config: dict[str, Any], path: Path) -> None:
    """Refuse to resume a run from a checkpoint of another kind or configuration."""
    if state.get("kind") != kind:
        raise ValueError(f"cannot resume from {path}: it is a {state.get('kind')} checkpoint, not a {kind}")
    if state["config"] != config:
        changed = sorted(k for k in set(state["config"]) | set(config) if state["config"].get(k) != config.get(k))
        raise ValueError(f"cannot resume: the configuration differs from the checkpoint's in {changed}")


def inference_architecture(state: dict[str, Any]) -> dict[str, Any]:
    """The fixed architecture a checkpoint's weights belong to."""
    arch = state["architecture"]
    if "supernet" in arch:
        raise CheckpointError("this is a search (supernet) checkpoint; retrain its genotype to get a model "
                              "(thrifty-nas retrain --genotype genotype.json)")
    return arch


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network of a retrain checkpoint in eval mode: ``model, meta = load_model(p)``.

    `meta` is the checkpoint without its tensors (architecture, classes, normalisation...).
    """
    from nas_core.models import build_model

    state = load_checkpoint(path, map_location=device)
    model = build_model(inference_architecture(state), state["in_channels"], state["num_classes"],
                        deep_supervision=state.get("config", {}).get("deep_supervision", False))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizers", "schedulers", "rng")}
    return model, meta
