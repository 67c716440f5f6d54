"""A latency-aware search against an unconstrained one on the same data, side by side.

Run from the repository root::

    python bench/latency_search.py --data /work/shared/data/isbi2012-em --out runs/latency_search

Both searches (the same config and seed; one with ``--latency-weight``) run at once with one
thread each; then each genotype is retrained from scratch with the same recipe, and scored
on test cases that neither search nor selection saw. Reported: each genotype's parameters,
its measured forward latency (batch 1 at ``--latency-size``, median of 10, the two networks
timed alternately in one process), test DSC, and the ratios. Goal of the speed issue: the
latency-aware genotype at least 30% faster, within 1 DSC point.

``--table-at retrain`` (the default) has the latency-aware search measure its op table at the
retrain's width (``--channels``) and at ``--latency-size``, where the genotype will run;
``--table-at search`` measures it at the search's own width and size (the first version).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(*args: str) -> dict[str, Any]:
    import os

    out = subprocess.run([sys.executable, "-m", "cli.main", *args, "--json"], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    return json.loads(out.stdout)


def search_and_retrain(name: str, a: argparse.Namespace, weight: float) -> dict[str, Any]:
    out = Path(a.out) / name
    common = ["--data", a.data, "--image-size", str(a.image_size), "--device", "cpu", "--seed", "0",
              "--test-cases", a.test_cases]
    t0 = time.time()
    if not (out / "search" / "summary.json").exists():
        _cli("search", *common, "--out", str(out / "search"), "--epochs", str(a.search_epochs),
             "--warmup-epochs", str(a.search_epochs // 3), "--channels", str(a.search_channels),
             "--time-budget-minutes", str(a.search_minutes),
             *(["--latency-weight", str(weight)] if weight else []),
             *(["--latency-channels", str(a.channels), "--latency-image-size", str(a.latency_size)]
               if weight and a.table_at == "retrain" else []))
    search_s = time.time() - t0
    if not (out / "retrain" / "metrics.json").exists():
        _cli("retrain", *common, "--out", str(out / "retrain"), "--genotype", str(out / "search" / "genotype.json"),
             "--channels", str(a.channels), "--epochs", "1000", "--time-budget-minutes", str(a.retrain_minutes))
    metrics = json.loads((out / "retrain" / "metrics.json").read_text())
    summary = json.loads((out / "search" / "summary.json").read_text())
    return {"name": name, "latency_weight": weight, "genotype": summary["genotype"],
            "search_latency_ms": summary.get("genotype_latency_ms"), "params": metrics["params"],
            "test_dsc": (metrics.get("test") or {}).get("mean_dsc"), "val_dsc": (metrics["best"] or {}).get("mean_dsc"),
            "steps": metrics.get("steps_run"), "search_seconds": search_s}


def latencies(genotypes: dict[str, dict[str, Any]], channels: int, size: int, rounds: int = 10) -> dict[str, float]:
    import torch

    from nas_core.fast import fold_batchnorm
    from nas_core.fixed import ThriftyNet
    from nas_core.genotype import Genotype

    torch.set_num_threads(1)
    nets = {k: fold_batchnorm(ThriftyNet(Genotype.from_dict({**g, "C": channels}), 1, 2)) for k, g in genotypes.items()}
    x = torch.randn(1, 1, size, size)
    times: dict[str, list[float]] = {k: [] for k in nets}
    with torch.no_grad():
        for net in nets.values():
            net(x)
        for _ in range(rounds):
            for k, net in nets.items():
                t0 = time.perf_counter()
                net(x)
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/work/shared/data/isbi2012-em")
    ap.add_argument("--out", default=str(ROOT / "runs" / "latency_search"))
    ap.add_argument("--test-cases", default="24,25,26,27,28,29", help="cases only scored, never searched on")
    ap.add_argument("--latency-weight", type=float, default=1.0)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--search-epochs", type=int, default=30)
    ap.add_argument("--search-channels", type=int, default=16)
    ap.add_argument("--search-minutes", type=float, default=7.0)
    ap.add_argument("--channels", type=int, default=32, help="retrain width")
    ap.add_argument("--retrain-minutes", type=float, default=6.0)
    ap.add_argument("--latency-size", type=int, default=256)
    ap.add_argument("--table-at", choices=["retrain", "search"], default="retrain",
                    help="the latency table's width and size: the retrain's or the search's")
    a = ap.parse_args()
    aware = "latency_aware" if a.table_at == "search" else "latency_aware_retrain_table"
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(lambda nw: search_and_retrain(nw[0], a, nw[1]),
                             [("unconstrained", 0.0), (aware, a.latency_weight)]))
    by_name = {r["name"]: r for r in rows}
    ms = latencies({k: r["genotype"] for k, r in by_name.items()}, a.channels, a.latency_size)
    for k, r in by_name.items():
        r["latency_ms"] = ms[k]
    u, la = by_name["unconstrained"], by_name[aware]
    result = {"rows": rows, "latency_ratio": la["latency_ms"] / u["latency_ms"],
              "dsc_points": None if la["test_dsc"] is None or u["test_dsc"] is None
              else 100 * (la["test_dsc"] - u["test_dsc"]), "args": vars(a)}
    (Path(a.out) / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
