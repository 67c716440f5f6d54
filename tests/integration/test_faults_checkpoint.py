"""A process killed while it writes a checkpoint leaves the previous one intact and loadable.

A child process (forked, so it starts in milliseconds) saves ~24 MB checkpoints in a loop
with ``nas_core.checkpoint.save_checkpoint`` (temp file, fsync, rename) and reports each
version once ``save_checkpoint`` has returned; the test SIGKILLs it at random moments,
many times. After every kill the target file loads with ``load_checkpoint``, is one whole
version (its payload matches its version number), and is never older than the last version
the child reported saved. What a kill leaves is at most one temp file (the one in flight);
the next ``save_checkpoint`` sweeps it, and the worker also removes it before it resumes a
job there (``worker.runner.remove_partial_checkpoints``), which the end of the test checks.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_core.checkpoint import load_checkpoint, save_checkpoint
from worker.runner import remove_partial_checkpoints

pytestmark = pytest.mark.integration

ELEMENTS = 6 * 1024 * 1024  # float32: 24 MiB per checkpoint
KILLS = 25


def _payload(version: int) -> torch.Tensor:
    # numpy, not torch ops: a forked child must not start OpenMP threads the parent may hold
    return torch.from_numpy(np.full(ELEMENTS, version % 1000, dtype=np.float32))


def _writer(path: str, first: int, saved: multiprocessing.sharedctypes.Synchronized) -> None:  # type: ignore[name-defined]
    version = first
    while True:
        save_checkpoint({"kind": "test", "version": version, "payload": _payload(version)}, path)
        saved.value = version  # reported only once the checkpoint is complete on disk
        version += 1


def _check(path: Path, reported: int) -> int:
    state = load_checkpoint(path)
    version = state["version"]
    assert version >= reported, f"the file holds version {version}, but version {reported} was saved before"
    payload = state["payload"]
    assert payload.shape == (ELEMENTS,) and bool((payload == version % 1000).all()), \
        f"version {version} is not whole"
    return version


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_sigkill_during_checkpoint_writes_never_leaves_a_broken_checkpoint(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    target = tmp_path / "last.pt"
    saved = ctx.Value("q", -1, lock=False)
    rng = random.Random(1234)

    save_checkpoint({"kind": "test", "version": 0, "payload": _payload(0)}, target)
    t0 = time.monotonic()
    save_checkpoint({"kind": "test", "version": 0, "payload": _payload(0)}, target)
    one_save = max(time.monotonic() - t0, 0.02)

    version, mid_write, seen = 0, 0, set()
    for _ in range(KILLS):
        before = set(_temps(tmp_path))
        saved.value = -1
        child = ctx.Process(target=_writer, args=(str(target), version + 1, saved), daemon=True)
        child.start()
        time.sleep(rng.uniform(0.0, 3 * one_save))  # sometimes before the first save ends, often mid-write
        child.kill()
        child.join(timeout=30)
        assert child.exitcode == -9
        version = _check(target, max(saved.value, version))  # never older than what was saved or loaded before
        seen.add(version)
        new = set(_temps(tmp_path)) - before
        assert len(new) <= 1, f"a kill left more than the one temp file in flight: {sorted(new)}"
        mid_write += len(new)

    assert mid_write >= 3, f"only {mid_write} of {KILLS} kills hit a write: the test did not exercise the window"
    assert len(seen) >= 3, f"the child rarely completed a save ({sorted(seen)}): kills came too early"

    # each save sweeps what killed writers left: at most the last kill's temp file remains
    assert len(_temps(tmp_path)) <= 1
    removed = remove_partial_checkpoints(tmp_path)
    assert len(removed) <= 1 and _temps(tmp_path) == []
    assert _check(target, version) == version  # the checkpoint itself is untouched
    save_checkpoint({"kind": "test", "version": version + 1, "payload": _payload(version + 1)}, target)
    assert _temps(tmp_path) == [] and _check(target, version + 1) == version + 1
