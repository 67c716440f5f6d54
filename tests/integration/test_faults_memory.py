"""The memory estimate (``nas_core.memory``) against measured peaks, and the API's refusal.

Accuracy: each case runs a real engine (1 epoch, 2 training steps, then evaluation of
validation cases of 16 slices, batched by pixels as ``nas_core.loop.evaluate`` does) in a
fresh process on CPU; its peak RSS (``VmHWM``, reset just before the run, after the data are prepared and the
modules imported) minus its RSS then is the measured peak. The estimate must lie within
0.6x..2x of it (errs on the safe side more than the other; see the README's Reliability
section for the table measured while calibrating: 0.76x..1.18x over eleven configurations).

The worker's check against its device is exercised in ``test_faults_jobs.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT, Services
from tests.integration.faults_support import SEARCH, Processes, new_user, processes

pytestmark = pytest.mark.integration

MEASURE = r"""
import json, sys, tempfile
from pathlib import Path
kind, arch, size, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from nas_core.config import RetrainConfig, SearchConfig
from nas_core.data import make_phantom_dataset
from nas_core.models import default_genotype
from nas_core.pipeline import prepare_retrain_data, prepare_search_data
from nas_core.retrain import run_retrain
from nas_core.search import run_search
import nas_core.loop, nas_core.metrics

tmp = Path(tempfile.mkdtemp())
data = make_phantom_dataset(tmp / "phantom", num_cases=8, image_size=32, depth=16, num_classes=3, seed=0)
if kind == "search":
    cfg = SearchConfig(epochs=1, warmup_epochs=0, image_size=size, batch_size=batch, channels=8, k=2, depth=3,
                       steps_per_epoch=2, val_fraction=0)
    spec = None
    prepared = prepare_search_data(data, cfg)
else:
    cfg = RetrainConfig(epochs=1, image_size=size, batch_size=batch, steps_per_epoch=2, val_fraction=0.25)
    spec = {"baseline": arch} if arch != "genotype" else {"genotype": default_genotype().to_dict()}
    prepared = prepare_retrain_data(data, cfg)

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

import gc
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
base = vm("VmRSS")
if kind == "search":
    run_search(prepared, cfg, tmp / "out")
else:
    run_retrain(prepared, spec, cfg, tmp / "out")
peak = vm("VmHWM") - base
from nas_core.memory import estimate_peak_bytes  # after the run: its calibration allocates too
print(json.dumps({"measured": peak, "estimated": estimate_peak_bytes(kind, cfg, 1, 3, spec)}))
"""

CASES = [("search", "-", 64, 4), ("retrain", "genotype", 64, 4), ("retrain", "genotype", 128, 4)]


def _measure(kind: str, arch: str, size: int, batch: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", MEASURE, kind, arch, str(size), str(batch)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure peak RSS")
def test_the_estimate_is_within_a_factor_of_the_measured_peak_on_cpu():
    rows = []
    for kind, arch, size, batch in CASES:
        got = _measure(kind, arch, size, batch)
        rows.append((kind, arch, size, batch, got["measured"], got["estimated"], got["estimated"] / got["measured"]))
    table = "\n".join(f"{k:8} {a:9} {s:4}px batch {b}: measured {m / 2**20:7.0f} MiB, estimated {e / 2**20:7.0f} "
                      f"MiB, ratio {r:.2f}" for k, a, s, b, m, e, r in rows)
    print(table)
    for *_, ratio in rows:
        assert 0.6 <= ratio <= 2.0, table
    # the estimate grows with the image: 4x the pixels, more than 2x the memory
    assert rows[2][5] > 2 * rows[1][5], table


@pytest.fixture(scope="module")
def procs(thrifty_env: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    with processes(thrifty_env, tmp_path_factory) as started:
        yield started


def test_the_api_refuses_a_job_above_the_configured_memory_limit(thrifty_env: Services, procs: Processes,
                                                                 phantom_dataset: Path):
    limit = 512 * 1024**2
    api = procs.api(THRIFTY_MAX_JOB_MEMORY_BYTES=str(limit))
    user = new_user(thrifty_env.sessions)
    with api.client(headers=user.headers) as client:
        dataset = client.post("/v1/datasets", json={"name": "phantom", "path": phantom_dataset.name})
        assert dataset.status_code == 201, dataset.text
        dataset_id = dataset.json()["id"]

        big = {**SEARCH, "image_size": 512, "batch_size": 16}
        refused = client.post("/v1/searches", json={"dataset_id": dataset_id, "config": big})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "job_too_large", error
        message = error["message"]
        assert message.startswith("the search needs ~") and "GiB of memory" in message, message
        assert "this service accepts at most 0.5 GiB per job" in message, message
        assert "lower batch_size (now 16) or image_size (now 512), or channels (now 8), or raise k (now 2)" \
            in message, message
        assert error["details"]["estimated_bytes"] > limit == error["details"]["limit_bytes"]
        assert "config.batch_size" in error["details"]["fields"]

        unet = client.post("/v1/retrains", json={"dataset_id": dataset_id, "architecture": {"baseline": "unet"},
                                                 "config": {"epochs": 1, "image_size": 1024, "batch_size": 64}})
        assert unet.status_code == 422 and unet.json()["error"]["code"] == "job_too_large", unet.text
        assert "lower batch_size (now 64) or image_size (now 1024) and resubmit" in unet.json()["error"]["message"]

        accepted = client.post("/v1/searches", json={"dataset_id": dataset_id, "config": SEARCH})
        assert accepted.status_code == 202, accepted.text
        listed = client.get("/v1/jobs").json()["items"]
        assert [job["id"] for job in listed] == [accepted.json()["id"]]  # nothing was made for the refusals
        client.post(f"/v1/jobs/{accepted.json()['id']}/cancel")  # no worker runs in this module
    assert httpx.get(f"{api.url}/healthz").status_code == 200
