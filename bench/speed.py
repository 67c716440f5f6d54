"""Speed of a derived network against U-Net, side by side in one process: inference and training.

Run from the repository root::

    python bench/speed.py                      # the default genotype, readable table
    python bench/speed.py --genotype FILE      # another genotype
    python bench/speed.py --json

Measured on the CPU with one intra-op thread (``--threads``), models interleaved round by
round so a change in machine load hits both, median over rounds:

* inference latency, eval mode, no_grad, batch 1, 1 channel, 256x256, 4 classes: the derived
  network as trained (PyTorch eager), with its BatchNorms folded (``nas_core.fast``, what
  ``predict`` and ``evaluate`` run), and through onnxruntime (the exported graph); U-Net
  eager and through onnxruntime;
* one training step (forward, CE + Dice, backward, Adam) at batch 8, 128x128.

Goals of the speed issue: derived / U-Net inference <= 0.5, training step <= 0.7.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nas_core.baselines import UNet  # noqa: E402
from nas_core.export import export_module  # noqa: E402
from nas_core.fast import fold_batchnorm  # noqa: E402
from nas_core.fixed import ThriftyNet  # noqa: E402
from nas_core.genotype import Genotype  # noqa: E402
from nas_core.losses import DiceCELoss  # noqa: E402
from nas_core.models import default_genotype  # noqa: E402

CLASSES = 4


def _ort(model: torch.nn.Module, size: int, folder: Path, name: str) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    path = export_module(model, folder / f"{name}.onnx", 1, size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def inference(derived: torch.nn.Module, unet: torch.nn.Module, size: int, rounds: int) -> dict[str, float]:
    derived.eval()
    unet.eval()
    folded = fold_batchnorm(derived)
    x = torch.randn(1, 1, size, size)
    xn = x.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "derived_eager": lambda: derived(x), "derived_folded": lambda: folded(x),
            "unet_eager": lambda: unet(x),
        }
        d_ort, u_ort = _ort(derived, size, Path(tmp), "derived"), _ort(unet, size, Path(tmp), "unet")
        runs["derived_onnxruntime"] = lambda: d_ort(xn)
        runs["unet_onnxruntime"] = lambda: u_ort(xn)
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.no_grad():
            for fn in runs.values():
                fn()  # warm-up
            for _ in range(rounds):
                for key, fn in runs.items():
                    times[key].append(_time(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def training(derived: torch.nn.Module, unet: torch.nn.Module, size: int, batch: int, rounds: int) -> dict[str, float]:
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, CLASSES, (batch, size, size))
    loss = DiceCELoss(CLASSES)
    steps = {}
    for key, model in (("derived", derived), ("unet", unet)):
        model.train()
        opt = torch.optim.Adam(model.parameters(), 1e-3)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            loss(model(x), y).backward()
            opt.step()

        steps[key] = step
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()
    for _ in range(rounds):
        for key, fn in steps.items():
            times[key].append(_time(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def run(genotype: Genotype, threads: int, rounds: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    derived, unet = ThriftyNet(genotype, 1, CLASSES), UNet(1, CLASSES)
    infer = inference(derived, unet, 256, rounds)
    train = training(derived, unet, 128, 8, max(3, rounds // 2))
    return {
        "threads": threads, "rounds": rounds, "torch": torch.__version__,
        "params": {"derived": sum(p.numel() for p in derived.parameters()),
                   "unet": sum(p.numel() for p in unet.parameters())},
        "inference_ms_256": infer, "train_step_ms_128_b8": train,
        "ratios": {
            "inference_eager": infer["derived_eager"] / infer["unet_eager"],
            "inference_folded_vs_unet_eager": infer["derived_folded"] / infer["unet_eager"],
            "inference_onnxruntime": infer["derived_onnxruntime"] / infer["unet_onnxruntime"],
            "best_derived_vs_best_unet": min(infer["derived_folded"], infer["derived_onnxruntime"])
            / min(infer["unet_eager"], infer["unet_onnxruntime"]),
            "train_step": train["derived"] / train["unet"],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--genotype", help="genotype JSON (default: the project's default genotype)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    genotype = Genotype.from_json(Path(args.genotype).read_text()) if args.genotype else default_genotype()
    result = run(genotype, args.threads, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result["inference_ms_256"].items():
        print(f"inference 1x1x256x256  {key:22s} {value:9.1f} ms")
    for key, value in result["train_step_ms_128_b8"].items():
        print(f"train step 8x1x128x128 {key:22s} {value:9.1f} ms")
    for key, value in result["ratios"].items():
        print(f"ratio derived / U-Net  {key:32s} {value:6.3f}")


if __name__ == "__main__":
    main()
