"""The Thrifty NAS paper's Table 1 on any dataset: searched model vs U-Net vs UNet++.

Run from the repository root::

    python bench/table1.py --data DIR                       # readable table
    python bench/table1.py --data DIR --json                # one JSON object on stdout
    python bench/table1.py --render OUT/table1.json --markdown   # re-print a saved run

Steps (each in its own fresh subprocess, one after the other):

1. PC-DARTS search (``nas_core.search.run_search``). By default (``--search-cases train``)
   the search sees only the retrain *training* cases, halved by case into a weight half and
   an architecture half, so the validation cases that score every model below never
   influence the architecture; ``--search-cases all`` lets the engine halve every case,
   as ``thrifty-nas search`` does.
2. Retraining from scratch (``nas_core.retrain.run_retrain``) of the genotype found, then of
   U-Net and UNet++, with one ``RetrainConfig``: same epochs, image size, batch size,
   learning rate, augmentation, seed and therefore the same train/validation split.

Reported per model: trainable parameters and their share of U-Net's; validation DSC of the
best epoch (the engine's ``metrics.json`` "best": the epoch with the highest mean
validation DSC, so it is selected on the validation cases, equally for every model) as the
mean over cases with the population std, min and max over cases; the DSC after the last
epoch; training time (sum of the training epochs, without validation and checkpoints) and
the wall time of the whole run; peak memory; and the fraction of training-step time spent
waiting for data (mean over epochs of the engine's ``data_wait_fraction``; goal < 10%).

Memory. CPU: each run is a fresh process; the data is prepared first, then the RSS
high-water mark is reset to the current RSS by writing "5" to /proc/self/clear_refs, the
baseline is VmRSS read right then, and the peak is VmHWM after the run; the figure is
peak - baseline (if the reset is refused, VmHWM is the lifetime peak, data loading
included, and the JSON says so). CUDA: torch.cuda.max_memory_allocated after
reset_peak_memory_stats, minus memory_allocated before the run.

For context the JSON and the table also give the DSC of the trivial prediction "every
pixel is foreground" on the same validation cases (binary datasets only): on ISBI 2012 the
foreground (cell interior) covers most of the image, so that number is far from zero.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA_WAIT_GOAL = 0.10
PAPER = {"unet_params": 7_759_521, "unetpp_params": 9_041_601, "thrifty_params": 610_000}
MODELS = ("thrifty", "unet", "unetpp")
LABELS = {"thrifty": "Thrifty (searched)", "unet": "U-Net", "unetpp": "UNet++"}


# --------------------------------------------------------------------------- child side

def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _MemoryProbe:
    """Peak memory of what runs between start() and stop(), as described in the module doc."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def start(self) -> None:
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.reset = True
        else:
            self.reset = _reset_hwm()
            self.base = (_status_kb("VmRSS") or 0) * 1024

    def stop(self) -> dict[str, Any]:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            method = "cuda max_memory_allocated - memory_allocated before the run"
        else:
            hwm = _status_kb("VmHWM")
            peak = (hwm or 0) * 1024
            method = ("VmHWM - VmRSS before the run, HWM reset via /proc/self/clear_refs" if self.reset else
                      "VmHWM (lifetime, reset refused) - VmRSS before the run")
        return {"peak_bytes": max(peak - self.base, 0), "base_bytes": self.base, "abs_peak_bytes": peak,
                "method": method}


class _Progress:
    """Engine callbacks: one line per epoch on stderr."""

    def __init__(self, name: str) -> None:
        from nas_core.callbacks import Callbacks

        class P(Callbacks):
            def on_epoch(self, record: Any) -> None:  # noqa: ANN401
                m = record.metrics
                score = m.get("val", m.get("arch", {})).get("dsc")
                score_s = "-" if score is None else f"{score:.4f}"
                print(f"  [{name}] epoch {record.epoch + 1}/{record.epochs} loss {m['train']['loss']:.4f} "
                      f"dsc {score_s} train {m['train']['seconds']:.1f}s "
                      f"wait {100 * m['train']['data_wait_fraction']:.1f}% elapsed {record.elapsed_s:.0f}s",
                      file=sys.stderr, flush=True)

        self.callbacks = P()


def _history_stats(history: list[dict[str, Any]]) -> dict[str, Any]:
    waits = [h["metrics"]["train"]["data_wait_fraction"] for h in history]
    secs = [h["metrics"]["train"]["seconds"] for h in history]
    return {"epochs_run": len(history), "data_wait_fraction_mean": statistics.fmean(waits) if waits else None,
            "data_wait_fraction_max": max(waits) if waits else None,
            "train_seconds": sum(secs), "epoch_seconds_median": statistics.median(secs) if secs else None}


def _case_means(per_case: list[dict[str, Any]]) -> dict[str, float]:
    """{case id: mean over defined foreground classes of the case's DSC}."""
    out = {}
    for case in per_case:
        vals = [v for v in case["dsc"].values() if v is not None]
        if vals:
            out[case["case_id"]] = sum(vals) / len(vals)
    return out


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "n": len(values)}


def _trivial_dsc(val: Any, num_classes: int) -> float | None:
    """Mean over validation cases of the DSC of predicting foreground everywhere (binary only)."""
    import torch

    from nas_core.metrics import CaseScores

    if num_classes != 2:
        return None
    scores = []
    for ci, cid in enumerate(val.case_ids):
        idx = val.slices_of(ci)
        labels = torch.stack([val[i][1] for i in idx])
        s = CaseScores.compute(cid, torch.ones_like(labels), labels, num_classes)
        scores.append(s.dsc[1])
    scores = [s for s in scores if not math.isnan(s)]
    return statistics.fmean(scores) if scores else None


def _search_data(args: argparse.Namespace) -> Any:
    from nas_core.config import SearchConfig
    from nas_core.pipeline import prepare_search_data

    cache = Path(args.out) / "cache"
    val_fraction = args.val_fraction if args.search_cases == "train" else 0.0
    config = SearchConfig(image_size=args.image_size, seed=args.seed, val_fraction=val_fraction)
    return prepare_search_data(Path(args.data), config, cache_dir=cache, data_format=args.format)


def child_search(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    from nas_core.config import SearchConfig
    from nas_core.runtime import resolve_device
    from nas_core.search import run_search
    from nas_core.supernet import SearchNetwork

    config = SearchConfig.from_dict(json.loads(args.config_json))
    data = _search_data(args)
    device = resolve_device(config.device)
    probe = _MemoryProbe(device)
    probe.start()
    t0 = time.perf_counter()
    result = run_search(data, config, out, callbacks=_Progress("search").callbacks)
    wall = time.perf_counter() - t0
    memory = probe.stop()
    history = result.history
    genotypes = [h["genotype"] for h in history]
    last_change = max((i + 1 for i in range(1, len(genotypes)) if genotypes[i] != genotypes[i - 1]), default=0)
    torch.manual_seed(config.seed)
    supernet = SearchNetwork(data.in_channels, data.num_classes, channels=config.channels, depth=config.depth,
                             nodes=config.nodes, k=config.k)
    return {
        "kind": "search", "config": config.to_dict(), "genotype": result.genotype.to_dict(),
        "weight_cases": data.train.case_ids, "arch_cases": data.arch.case_ids,
        "supernet_weight_params": sum(p.numel() for p in supernet.weights()),
        "final_arch_dsc": result.summary.get("final_arch_dsc"),
        "genotype_last_changed_epoch": last_change, "stopped_early": result.stopped_early,
        "steps_per_epoch": len(data.train) // min(config.batch_size, len(data.train)),
        "wall_seconds": wall, "memory": memory, "device": str(device), **_history_stats(history),
        "arch_dsc_per_epoch": [h["metrics"]["arch"]["dsc"] for h in history],
    }


def child_retrain(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from nas_core.config import RetrainConfig
    from nas_core.pipeline import prepare_retrain_data
    from nas_core.retrain import run_retrain
    from nas_core.runtime import resolve_device

    config = RetrainConfig.from_dict(json.loads(args.config_json))
    spec = json.loads(args.spec_json)
    data = prepare_retrain_data(Path(args.data), config, cache_dir=Path(args.out) / "cache",
                                data_format=args.format)
    trivial = _trivial_dsc(data.val, data.num_classes)
    device = resolve_device(config.device)
    probe = _MemoryProbe(device)
    probe.start()
    t0 = time.perf_counter()
    name = spec.get("baseline", "thrifty")
    result = run_retrain(data, spec, config, out, callbacks=_Progress(name).callbacks)
    wall = time.perf_counter() - t0
    memory = probe.stop()
    m = result.metrics
    best_cases, final_cases = _case_means(m["best"]["per_case"]), _case_means(m["final"]["per_case"])
    return {
        "kind": "retrain", "model": name, "config": config.to_dict(), "spec": spec, "params": m["params"],
        "best_epoch": m["best_epoch"], "mean_dsc_best": m["best"]["mean_dsc"],
        "mean_dsc_final": m["final"]["mean_dsc"], "classes_best": m["best"]["classes"],
        "dsc_best": _spread(list(best_cases.values())), "dsc_final": _spread(list(final_cases.values())),
        "per_case_best": best_cases, "per_case_final": final_cases,
        "val_cases": data.val.case_ids, "train_cases": data.train.case_ids,
        "val_dsc_per_epoch": [h["metrics"]["val"]["dsc"] for h in result.history],
        "trivial_all_foreground_dsc": trivial, "wall_seconds": wall, "memory": memory, "device": str(device),
        **_history_stats(result.history),
    }


def run_child(args: argparse.Namespace) -> int:
    out = Path(args.child_out)
    out.mkdir(parents=True, exist_ok=True)
    result = child_search(args, out) if args._one == "search" else child_retrain(args, out)
    text = json.dumps(result, default=str)
    (out / "table1_child.json").write_text(text)
    print(text, flush=True)
    return 0


# --------------------------------------------------------------------------- parent side

def _child_cmd(args: argparse.Namespace, one: str, out: Path, config: dict[str, Any],
               spec: dict[str, Any] | None = None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_one", one, "--data", str(args.data),
           "--out", str(args.out), "--child-out", str(out), "--config-json", json.dumps(config),
           "--image-size", str(args.image_size), "--seed", str(args.seed),
           "--val-fraction", str(args.val_fraction), "--search-cases", args.search_cases]
    if args.format:
        cmd += ["--format", args.format]
    if spec is not None:
        cmd += ["--spec-json", json.dumps(spec)]
    return cmd


def _spawn(cmd: list[str], threads: int, label: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"== {label}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"{label} failed with exit code {proc.returncode}", "process_seconds": wall}
    result = json.loads(lines[-1])
    result["process_seconds"] = wall
    return result


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "cpu_threads": args.cpu_threads,
            "cpu_model": _cpu_model(), "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
            "loadavg_start": list(os.getloadavg())}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def run_parent(args: argparse.Namespace) -> dict[str, Any]:
    from nas_core.config import RetrainConfig, SearchConfig

    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup = args.warmup_epochs if args.warmup_epochs is not None else args.search_epochs // 3
    search_cfg = SearchConfig(epochs=args.search_epochs, warmup_epochs=warmup, image_size=args.image_size,
                              batch_size=args.batch_size, channels=args.channels, seed=args.seed,
                              device=args.device, cpu_threads=args.cpu_threads).to_dict()
    retrain_cfg = RetrainConfig(epochs=args.retrain_epochs, image_size=args.image_size,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                val_fraction=args.val_fraction, device=args.device,
                                cpu_threads=args.cpu_threads).to_dict()
    report: dict[str, Any] = {
        "benchmark": "table1", "command": shlex.join([sys.executable, *sys.argv]),
        "date_utc": started.isoformat(timespec="seconds"), "data": str(args.data), "out": str(out),
        "machine": _machine(args), "search_cases": args.search_cases,
        "config": {"search": search_cfg, "retrain": retrain_cfg}, "paper": PAPER, "models": {},
    }
    search = _spawn(_child_cmd(args, "search", out / "search", search_cfg), args.cpu_threads, "search")
    report["search"] = search
    specs = {"unet": {"baseline": "unet"}, "unetpp": {"baseline": "unetpp"}}
    if "genotype" in search:
        specs["thrifty"] = {"genotype": search["genotype"]}
        report["genotype"] = search["genotype"]
    for name in MODELS:
        if name not in specs:
            report["models"][name] = {"error": "no genotype: the search failed"}
            continue
        cmd = _child_cmd(args, "retrain", out / name, retrain_cfg, specs[name])
        report["models"][name] = _spawn(cmd, args.cpu_threads, f"retrain {name}")
    unet_params = report["models"].get("unet", {}).get("params")
    for r in report["models"].values():
        if "params" in r and unet_params:
            r["params_pct_of_unet"] = 100.0 * r["params"] / unet_params
    trivial = [r.get("trivial_all_foreground_dsc") for r in report["models"].values()]
    report["trivial_all_foreground_dsc"] = next((t for t in trivial if t is not None), None)
    report["total_wall_seconds"] = time.perf_counter() - t0
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["verdict"] = verdict(report)
    (out / "table1.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """The paper's claims checked on this run: size, DSC vs U-Net, and the data-wait goal."""
    m = report["models"]
    t, u = m.get("thrifty", {}), m.get("unet", {})
    out: dict[str, Any] = {}
    if "params" in t and "params" in u:
        out["thrifty_params_pct_of_unet"] = 100.0 * t["params"] / u["params"]
        out["thrifty_at_most_10pct_of_unet"] = t["params"] <= 0.10 * u["params"]
    if t.get("mean_dsc_best") is not None and u.get("mean_dsc_best") is not None:
        out["dsc_best_thrifty_minus_unet"] = t["mean_dsc_best"] - u["mean_dsc_best"]
        out["dsc_best_thrifty_ge_unet"] = t["mean_dsc_best"] >= u["mean_dsc_best"]
        out["dsc_final_thrifty_minus_unet"] = (t["mean_dsc_final"] or 0.0) - (u["mean_dsc_final"] or 0.0)
    waits = {k: r.get("data_wait_fraction_mean") for k, r in {**m, "search": report.get("search", {})}.items()}
    out["data_wait_below_goal"] = {k: (w is not None and w < DATA_WAIT_GOAL) for k, w in waits.items()}
    return out


# --------------------------------------------------------------------------- rendering

def _f(v: Any, fmt: str = "{:.4f}") -> str:  # noqa: ANN401
    return "-" if v is None else fmt.format(v)


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["Model", "Params", "% of U-Net", "DSC best ep (mean ± std)", "min-max (cases)", "DSC last ep",
            "best ep", "train s", "wall s", "peak mem MiB", "data wait %"]
    rows = []
    for name in MODELS:
        r = report["models"].get(name, {})
        if "error" in r:
            rows.append([LABELS[name], r["error"], *[""] * (len(head) - 2)])
            continue
        b, f = r["dsc_best"], r["dsc_final"]
        rows.append([
            LABELS[name], f"{r['params']:,}", _f(r.get("params_pct_of_unet"), "{:.1f}%"),
            f"{_f(b['mean'])} ± {_f(b['std'])}", f"{_f(b['min'], '{:.3f}')}-{_f(b['max'], '{:.3f}')}",
            f"{_f(f['mean'])} ± {_f(f['std'])}", f"{r['best_epoch']}/{r['epochs_run']}",
            _f(r["train_seconds"], "{:.0f}"), _f(r["wall_seconds"], "{:.0f}"),
            _f(r["memory"]["peak_bytes"] / 2**20, "{:.0f}"), _f(100 * r["data_wait_fraction_mean"], "{:.2f}"),
        ])
    s = report.get("search", {})
    if "error" in s:
        rows.append(["PC-DARTS search", s["error"], *[""] * (len(head) - 2)])
    else:
        rows.append([
            "PC-DARTS search", f"{s['supernet_weight_params']:,} (supernet)", "", f"arch-half {_f(s['final_arch_dsc'])}",
            "", "", f"{s['epochs_run']} ep", _f(s["train_seconds"], "{:.0f}"), _f(s["wall_seconds"], "{:.0f}"),
            _f(s["memory"]["peak_bytes"] / 2**20, "{:.0f}"), _f(100 * s["data_wait_fraction_mean"], "{:.2f}"),
        ])
    return head, rows


def _notes(report: dict[str, Any]) -> list[str]:
    s, m = report.get("search", {}), report["models"]
    val = next((r.get("val_cases") for r in m.values() if r.get("val_cases")), [])
    rc = report["config"]["retrain"]
    notes = [
        f"data {report['data']}: {len(val)} validation cases {val}; image {rc['image_size']}px, batch "
        f"{rc['batch_size']}, retrain {rc['epochs']} epochs, search {report['config']['search']['epochs']} epochs "
        f"(warm-up {report['config']['search']['warmup_epochs']}), seed {rc['seed']}, "
        f"search on {report['search_cases']} cases",
        f"trivial 'all foreground' DSC on the same validation cases: {_f(report.get('trivial_all_foreground_dsc'))}",
    ]
    if "genotype" in s:
        notes.append(f"genotype (last changed at search epoch {s['genotype_last_changed_epoch']}, "
                     f"{s['steps_per_epoch']} weight step(s)/epoch): {json.dumps(s['genotype'])}")
    notes.append(f"total wall {report['total_wall_seconds']:.0f}s; load average "
                 f"{report['machine']['loadavg_start'][0]:.2f} at start, {report['machine']['loadavg_end'][0]:.2f} "
                 f"at end; memory: {next((r['memory']['method'] for r in m.values() if 'memory' in r), '-')}")
    return notes


def render_markdown(report: dict[str, Any]) -> str:
    head, rows = table_rows(report)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in _notes(report)) + "\n"


def print_table(report: dict[str, Any]) -> None:
    head, rows = table_rows(report)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
        for row in (head, *rows):
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        print("\n".join(_notes(report)))
        return
    table = Table(title=f"Table 1 on {report['data']}")
    for h in head:
        table.add_column(h, justify="left" if h == "Model" else "right")
    for row in rows:
        table.add_row(*row)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for n in _notes(report):
        console.print(n, markup=False, highlight=False)


# --------------------------------------------------------------------------- CLI

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="dataset folder (any format nas_core reads)")
    p.add_argument("--format", default=None, help="dataset format; auto-detected when omitted")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--search-epochs", type=int, default=15)
    p.add_argument("--warmup-epochs", type=int, default=None, help="search warm-up; default a third")
    p.add_argument("--retrain-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--channels", type=int, default=32, help="search cell width C")
    p.add_argument("--lr", type=float, default=1e-3, help="retrain learning rate (all models)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--cpu-threads", type=int, default=1)
    p.add_argument("--search-cases", choices=("train", "all"), default="train",
                   help="search on the retrain training cases only (default) or on every case")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a folder under the temp dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--render", type=Path, default=None, help="print a saved table1.json instead of running")
    p.add_argument("--_one", choices=("search", "retrain"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--config-json", help=argparse.SUPPRESS)
    p.add_argument("--spec-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.render is None and args.data is None:
        p.error("--data is required (or --render FILE)")
    if args.out is None and args.data is not None:
        args.out = Path(tempfile.gettempdir()) / "thrifty_table1" / (args.data.resolve().name or "data")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._one:
        return run_child(args)
    report = json.loads(args.render.read_text()) if args.render else run_parent(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif args.markdown:
        print(render_markdown(report))
    else:
        print_table(report)
    failed = any("error" in r for r in [*report["models"].values(), report.get("search", {})])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
