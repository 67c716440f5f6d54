"""The web tier imports no ML stack: the import contract, and the torch-free checks that stand in for it.

The contract runs in a fresh interpreter: ``import api.main``, build the app, serve a few
requests (liveness, a refused key, the login page) and the OpenAPI schema, then look at
``sys.modules``. Work that still needs the ML stack imports it inside the function that
does it (dataset verification, the memory estimate, pictures); this test does not reach it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from api.services.submit import FIT_RANGES
from nas_core.genotype import EDGES_PER_NODE, Genotype
from nas_core.models import build_model
from nas_core.space import op_names
from nas_core.topology import CellType, edge_family

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "SimpleITK", "nibabel", "pydicom", "matplotlib", "onnx", "onnxruntime", "monai")

SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
import api.main
from api.main import create_app

with TestClient(create_app()) as client:
    statuses = [
        client.get("/healthz").status_code,
        client.get("/v1/jobs/job_missing", headers={"Authorization": "Bearer tnas_not_a_key"}).status_code,
        client.get("/login").status_code,
    ]
    schema = client.app.openapi()
print(json.dumps({"statuses": statuses, "paths": len(schema["paths"]),
                  "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def test_the_api_process_imports_no_ml_stack(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "THRIFTY_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT % (FORBIDDEN,)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["statuses"] == [200, 401, 200]
    assert result["paths"] > 10
    assert result["loaded"] == [], (
        f"the web process imported {result['loaded']}: import the ML stack inside the function that "
        "needs it (and move that work to the workers), or use the torch-free nas_core modules")


def _extreme(C: int, depth: int, nodes: int, pick: int) -> Genotype:
    """A genotype at given sizes whose every entry takes the ``pick``-th non-`none` op of its family."""
    cells = {}
    for cell_type in CellType:
        entries = []
        for node in range(nodes):
            for src in (node, node + 1)[:EDGES_PER_NODE]:
                names = [n for n in op_names(edge_family(cell_type, src)) if n != "none"]
                entries.append((names[pick % len(names)], src))
        cells[cell_type] = tuple(entries)
    return Genotype(C=C, depth=depth, nodes=nodes, dn=cells[CellType.DN], up=cells[CellType.UP])


@pytest.mark.parametrize("pick", range(6))
@pytest.mark.parametrize("corner", ["low", "high"])
def test_a_valid_genotype_in_the_accepted_ranges_builds(corner: str, pick: int) -> None:
    """Why the API's genotype check builds no network: validation plus the ranges imply it builds."""
    sizes = {name: bounds[0 if corner == "low" else 1] for name, bounds in FIT_RANGES.items()}
    genotype = _extreme(**sizes, pick=pick)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        build_model({"genotype": genotype}, in_channels=1, num_classes=2)
