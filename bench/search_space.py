"""Benchmark of the Thrifty NAS search space: model sizes, supernet step cost, derived-net latency.

Run from the repository root::

    python bench/search_space.py            # readable table
    python bench/search_space.py --json     # one JSON object on stdout
    python bench/search_space.py --quick    # smaller sizes, a smoke run

What is measured (see bench/RESULTS.md for the figures of a full run):

* parameters of U-Net / UNet++ (1 channel in, 1-class head), of the default derived
  genotype (C=32, depth 4, 2 nodes) and of 200 random valid genotypes of that configuration;
* one supernet training step (forward, DiceCE loss, backward, SGD step on the weights) at
  batch 8, 128x128, C=16, 2 classes, for K=4 and K=1, each in a fresh subprocess:
  peak memory above the memory held just before the first step, and the median step time
  of a few steps after one warm-up step;
* forward latency (eval, no_grad, batch 1, 1 channel, 256x256) of the default derived net
  against U-Net, interleaved in one process, median of several runs.

Memory method on CPU: peak resident set size. Just before the first step the kernel's
high-water mark is reset to the current RSS by writing "5" to /proc/self/clear_refs
(Linux >= 4.0); the baseline is VmRSS read right then, and the peak is VmHWM read after the
last step (it equals getrusage's ru_maxrss after the reset). If the reset is refused, the
baseline is VmRSS just before the step and the peak VmHWM after it (the lifetime maximum,
which is then at least the step's peak; the JSON says which was used). On CUDA:
torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated just
before the step.

Threads: every measurement runs with ``--threads`` intra-op threads, 1 by default. The
benchmark machine has 2 cores shared with other jobs; with 2 OpenMP threads, any other
runnable process stalls the per-op thread barriers, and a supernet step (thousands of small
ops) then measured 6-10x slower and with a K=4/K=1 ratio that moved with the load. One
thread keeps timings and ratios stable; ``--threads 2`` measures the torch default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from nas_core.baselines import UNet, UNetPlusPlus  # noqa: E402
from nas_core.fixed import ThriftyNet  # noqa: E402
from nas_core.genotype import Genotype  # noqa: E402
from nas_core.losses import DiceCELoss  # noqa: E402
from nas_core.models import count_parameters, default_genotype  # noqa: E402
from nas_core.ops import op_names  # noqa: E402
from nas_core.supernet import SearchNetwork  # noqa: E402
from nas_core.topology import CellType, edge_family  # noqa: E402

PARAM_TARGET = 610_000  # about 8% of U-Net's 7,759,521
MEM_RATIO_TARGET = 0.5  # supernet peak memory, K=4 / K=1
TIME_RATIO_TARGET = 0.7  # supernet step time, K=4 / K=1

FULL = {"n_genotypes": 200, "step_batch": 8, "step_hw": 128, "step_repeats": 3,
        "latency_hw": 256, "latency_repeats": 7}
QUICK = {"n_genotypes": 20, "step_batch": 4, "step_hw": 64, "step_repeats": 1,
         "latency_hw": 128, "latency_repeats": 3}
SEED = 0
DEFAULT_THREADS = torch.get_num_threads()


# --------------------------------------------------------------------------- sizes

def random_genotype(rng: random.Random, channels: int = 32, depth: int = 4, nodes: int = 2) -> Genotype:
    """A uniformly drawn valid genotype: per node two distinct sources, a non-`none` op each."""
    cells = {}
    for t in CellType:
        entries = []
        for node in range(nodes):
            for src in sorted(rng.sample(range(node + 2), 2)):
                names = [n for n in op_names(edge_family(t, src)) if n != "none"]
                entries.append((rng.choice(names), src))
        cells[t] = tuple(entries)
    return Genotype(C=channels, depth=depth, nodes=nodes, dn=cells[CellType.DN], up=cells[CellType.UP])


def measure_sizes(n_genotypes: int) -> dict[str, Any]:
    unet = count_parameters(UNet(1, 1))
    unetpp = count_parameters(UNetPlusPlus(1, 1))
    default = count_parameters(ThriftyNet(default_genotype(), 1, 1))
    rng = random.Random(SEED)
    counts = [count_parameters(ThriftyNet(random_genotype(rng), 1, 1)) for _ in range(n_genotypes)]
    derived_max = max(counts)
    return {
        "unet_params": unet,
        "unetpp_params": unetpp,
        "derived_params_default": default,
        "derived_params_max": derived_max,
        "derived_params_min": min(counts),
        "derived_params_mean": round(statistics.fmean(counts), 1),
        "derived_genotypes_sampled": n_genotypes,
        "derived_vs_unet_params_ratio": round(derived_max / unet, 4),
        "derived_default_vs_unet_params_ratio": round(default / unet, 4),
    }


# --------------------------------------------------------------------------- supernet step

def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_step(k: int, batch: int, hw: int, repeats: int, arch_step: bool) -> dict[str, Any]:
    """One supernet configuration in this (fresh) process; see the module docstring."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(SEED)
    net = SearchNetwork(1, 2, channels=16, depth=4, nodes=2, k=k).to(device)
    opt_w = torch.optim.SGD(net.weights(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=6e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    loss_fn = DiceCELoss(2)
    x = torch.randn(batch, 1, hw, hw, device=device)
    y = torch.randint(0, 2, (batch, hw, hw), device=device)

    def step() -> None:
        if arch_step:  # first-order architecture step (on the same batch, for cost only)
            opt_a.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            opt_a.step()
        opt_w.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt_w.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    gc.collect()
    out: dict[str, Any] = {"k": k, "device": device.type}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        out["hwm_reset"] = _reset_hwm()
        base = _proc_status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    step()  # warm-up step; also the first step the memory peak covers
    out["warmup_step_s"] = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_kb("VmHWM") * 1024
        out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(baseline_mb=base / 2**20, peak_mb=peak / 2**20, peak_above_baseline_mb=(peak - base) / 2**20,
               step_s=statistics.median(times), step_times_s=times,
               step_cpu_s=statistics.median(cpu_times), loadavg_1min=os.getloadavg()[0],
               supernet_params=count_parameters(net))
    return out


def run_step_subprocess(k: int, cfg: dict[str, Any], arch_step: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_measure-step", "--k", str(k),
           "--batch", str(cfg["step_batch"]), "--hw", str(cfg["step_hw"]),
           "--repeats", str(cfg["step_repeats"]), "--threads", str(torch.get_num_threads())]
    if arch_step:
        cmd.append("--arch-step")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"step measurement for K={k} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- latency

def measure_latency(hw: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(SEED)
    models = {"derived": ThriftyNet(default_genotype(), 1, 1).eval(), "unet": UNet(1, 1).eval()}
    x = torch.randn(1, 1, hw, hw)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model(x)
        for _ in range(repeats):  # interleaved, so load changes hit both alike
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
    derived, unet = (statistics.median(times[n]) * 1e3 for n in ("derived", "unet"))
    gflops = {}
    with torch.no_grad():
        for name, model in models.items():
            with FlopCounterMode(display=False) as counter:
                model(x)
            gflops[name] = counter.get_total_flops() / 1e9
    return {"derived_gflops": round(gflops["derived"], 2), "unet_gflops": round(gflops["unet"], 2),"derived_latency_ms": round(derived, 2), "unet_latency_ms": round(unet, 2),
            "derived_vs_unet_latency_ratio": round(derived / unet, 3), "latency_hw": hw,
            "latency_repeats": repeats}


# --------------------------------------------------------------------------- report

def run_all(quick: bool, arch_step: bool) -> dict[str, Any]:
    cfg = QUICK if quick else FULL
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "threads_torch_default": DEFAULT_THREADS,
        "cpu_count": os.cpu_count(),
        "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
    }
    result.update(measure_sizes(cfg["n_genotypes"]))
    steps = {k: run_step_subprocess(k, cfg, arch_step) for k in (4, 1)}
    result.update({
        "supernet_step_batch": cfg["step_batch"], "supernet_step_hw": cfg["step_hw"],
        "supernet_step_repeats": cfg["step_repeats"], "supernet_step_includes_arch_step": arch_step,
        "supernet_mem_method": ("cuda max_memory_allocated" if steps[4]["device"] == "cuda" else
                                "RSS high-water mark reset via /proc/self/clear_refs" if steps[4].get("hwm_reset")
                                else "VmHWM (lifetime) minus VmRSS before the step"),
    })
    for k, s in steps.items():
        result[f"supernet_params_k{k}"] = s["supernet_params"]
        result[f"supernet_peak_mem_mb_k{k}"] = round(s["peak_above_baseline_mb"], 1)
        result[f"supernet_baseline_mem_mb_k{k}"] = round(s["baseline_mb"], 1)
        result[f"supernet_step_s_k{k}"] = round(s["step_s"], 3)
        result[f"supernet_step_times_s_k{k}"] = [round(t, 3) for t in s["step_times_s"]]
        result[f"supernet_warmup_step_s_k{k}"] = round(s["warmup_step_s"], 3)
        result[f"supernet_step_cpu_s_k{k}"] = round(s["step_cpu_s"], 3)
        result[f"loadavg_1min_during_k{k}"] = round(s["loadavg_1min"], 2)
    result["supernet_peak_mem_ratio_k4_k1"] = round(
        result["supernet_peak_mem_mb_k4"] / result["supernet_peak_mem_mb_k1"], 3)
    result["supernet_step_time_ratio_k4_k1"] = round(result["supernet_step_s_k4"] / result["supernet_step_s_k1"], 3)
    result["supernet_step_cpu_time_ratio_k4_k1"] = round(
        result["supernet_step_cpu_s_k4"] / result["supernet_step_cpu_s_k1"], 3)
    result.update(measure_latency(cfg["latency_hw"], cfg["latency_repeats"]))
    result["targets"] = {
        "derived_params_max_le": PARAM_TARGET,
        "supernet_peak_mem_ratio_k4_k1_le": MEM_RATIO_TARGET,
        "supernet_step_time_ratio_k4_k1_le": TIME_RATIO_TARGET,
    }
    result["pass"] = {
        "derived_params": result["derived_params_max"] <= PARAM_TARGET
        and result["derived_params_default"] <= PARAM_TARGET,
        "supernet_peak_mem_ratio": result["supernet_peak_mem_ratio_k4_k1"] <= MEM_RATIO_TARGET,
        "supernet_step_time_ratio": result["supernet_step_time_ratio_k4_k1"] <= TIME_RATIO_TARGET,
    }
    return result


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    p = r["pass"]
    step = f"batch {r['supernet_step_batch']}, {r['supernet_step_hw']}x{r['supernet_step_hw']}"
    return [
        ("U-Net params (1 in, 1 out)", f"{r['unet_params']:,}", "", ""),
        ("UNet++ params (1 in, 1 out)", f"{r['unetpp_params']:,}", "", ""),
        ("Derived params, default genotype (C=32)", f"{r['derived_params_default']:,}",
         f"<= {PARAM_TARGET:,}", ok(r["derived_params_default"] <= PARAM_TARGET)),
        (f"Derived params, max of {r['derived_genotypes_sampled']} random", f"{r['derived_params_max']:,}",
         f"<= {PARAM_TARGET:,}", ok(p["derived_params"])),
        (f"Derived params, mean / min of {r['derived_genotypes_sampled']} random",
         f"{r['derived_params_mean']:,.0f} / {r['derived_params_min']:,}", "", ""),
        ("Derived max / U-Net params", f"{r['derived_vs_unet_params_ratio']:.3f}", "", ""),
        (f"Supernet step peak mem K=4 ({step})", f"{r['supernet_peak_mem_mb_k4']:,.0f} MB", "", ""),
        (f"Supernet step peak mem K=1 ({step})", f"{r['supernet_peak_mem_mb_k1']:,.0f} MB", "", ""),
        ("Supernet peak mem ratio K=4 / K=1", f"{r['supernet_peak_mem_ratio_k4_k1']:.3f}",
         f"<= {MEM_RATIO_TARGET}", ok(p["supernet_peak_mem_ratio"])),
        ("Supernet step time K=4 (median)", f"{r['supernet_step_s_k4']:.2f} s", "", ""),
        ("Supernet step time K=1 (median)", f"{r['supernet_step_s_k1']:.2f} s", "", ""),
        ("Supernet step time ratio K=4 / K=1", f"{r['supernet_step_time_ratio_k4_k1']:.3f}",
         f"<= {TIME_RATIO_TARGET}", ok(p["supernet_step_time_ratio"])),
        ("  (CPU-time ratio K=4 / K=1, for reference)", f"{r['supernet_step_cpu_time_ratio_k4_k1']:.3f}", "", ""),
        ("Load average (1 min) during K=4 / K=1",
         f"{r['loadavg_1min_during_k4']:.2f} / {r['loadavg_1min_during_k1']:.2f}", "", ""),
        (f"Derived (default) latency, 1x1x{r['latency_hw']}x{r['latency_hw']}",
         f"{r['derived_latency_ms']:.1f} ms", "", ""),
        (f"U-Net latency, 1x1x{r['latency_hw']}x{r['latency_hw']}", f"{r['unet_latency_ms']:.1f} ms", "", ""),
        ("Derived / U-Net latency", f"{r['derived_vs_unet_latency_ratio']:.3f}", "", ""),
        (f"Derived (default) / U-Net GFLOPs at {r['latency_hw']}x{r['latency_hw']}",
         f"{r['derived_gflops']:.2f} / {r['unet_gflops']:.2f}", "", ""),
    ]


def print_table(r: dict[str, Any]) -> None:
    title = (f"Thrifty NAS search space ({r['mode']}) - {r['device']}, torch {r['torch_version']}, "
             f"{r['threads']} threads, {r['date']}")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for name, value, target, status in rows(r):
            print(f"{name:<55} {value:>16} {target:>12} {status:>5}")
        return
    table = Table(title=title)
    for col, justify in (("Metric", "left"), ("Value", "right"), ("Target", "right"), ("", "center")):
        table.add_column(col, justify=justify)
    for name, value, target, status in rows(r):
        style = {"PASS": "green", "FAIL": "bold red"}.get(status, "")
        table.add_row(name, value, target, f"[{style}]{status}[/]" if style else status)
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--arch-step", action="store_true",
                        help="add a first-order architecture step to each supernet step")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for every measurement (default 1; see the module docstring)")
    parser.add_argument("--_measure-step", dest="measure_step", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=FULL["step_batch"], help=argparse.SUPPRESS)
    parser.add_argument("--hw", type=int, default=FULL["step_hw"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=FULL["step_repeats"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure_step:
        print(json.dumps(measure_step(args.k, args.batch, args.hw, args.repeats, args.arch_step)))
        return 0
    result = run_all(args.quick, args.arch_step)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
