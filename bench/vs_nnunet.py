"""Thrifty NAS against nnU-Net v2 (2d), U-Net and UNet++ on ACDC cardiac MRI, at an equal budget.

One command, one machine, side by side:

    .venv/bin/python bench/vs_nnunet.py                      # default: 20 training minutes per model
    .venv/bin/python bench/vs_nnunet.py --budget-minutes 60 --json

1. nnU-Net v2 (pinned, in a virtual environment this script creates with torch 2.13.0),
   2d configuration, planned and preprocessed on the 70 training cases with
   ``--verify_dataset_integrity``, trained with nnU-Net's default recipe under a wall-clock
   budget (``bench/nnunet_budget_trainer.py``), predicted on the 20 test cases with its
   default test-time mirroring.
2. Thrifty NAS: a PC-DARTS search on the 70 training cases (its own ``--search-minutes``,
   reported apart), then the found genotype retrained from scratch.
3. U-Net and UNet++, retrained with the same recipe and budget as Thrifty.

Split: the SSL4MIS split of ACDC listed in the data's SOURCE.md (by patient): 70 train,
10 validation (Thrifty picks its best epoch on them; nnU-Net uses its final checkpoint, as
it does by default), 20 test. Every model is scored by the same code on the 20 test cases
at their own size: hard Dice per case and class, mean and std over cases. HD95 is not
reported: the files' spacing is unknown (SOURCE.md).

Models run two at a time (``--parallel``), one intra-op thread each. Every step is
resumable: an interrupted run continues where it stopped (finished steps are skipped,
training resumes from its last checkpoint). Work goes to ``runs/vs_nnunet`` (``--work``).
A variant of the Thrifty/U-Net/UNet++ recipe runs under a ``--tag`` (its own folders and
rows, e.g. ``--tag tta --tta``); every invocation adds its rows to ``results.json`` and
``--report`` prints the table of all rows so far. Not part of the test suite: it needs
nnunetv2 and the ACDC data.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas_core.metrics import CaseScores, summarise  # noqa: E402

NNUNET_VERSION = "2.8.1"
TORCH_VERSION = "2.13.0"
DATASET = "Dataset003_ACDC"
CLASSES = ["background", "RV", "MYO", "LV"]
# SSL4MIS split (SOURCE.md), by patient number.
VAL = [2, 19, 28, 30, 39, 45, 78, 82, 85, 87]
TEST = [1, 7, 8, 11, 13, 22, 24, 33, 52, 59, 64, 65, 66, 68, 75, 80, 81, 83, 84, 93]
MODELS = ("nnunet", "thrifty", "unet", "unetpp")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
_data_lock = threading.Lock()
_state_lock = threading.Lock()


def case_id(n: int) -> str:
    return f"patient{n:03d}_frame01"


def split() -> dict[str, list[str]]:
    test, val = [case_id(n) for n in TEST], [case_id(n) for n in VAL]
    train = [case_id(n) for n in range(1, 101) if n not in TEST and n not in VAL]
    return {"train": train, "val": val, "test": test}


class StepFailed(RuntimeError):
    pass


def python_value(python: Path, script: str, *args: object) -> str:
    """The last line a short ``script`` prints, run by ``python`` (one thread) with ``args``."""
    res = subprocess.run([str(python), "-c", script, *map(str, args)], cwd=ROOT, check=True, capture_output=True,
                         text=True, env={**os.environ, **ONE_THREAD})
    return res.stdout.strip().splitlines()[-1]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).resolve()
        self.data = Path(args.data).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_path = self.work / "state.json"
        self.split = split()

    # -- bookkeeping: finished steps in state.json, shared by concurrent invocations ------
    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        with _state_lock, open(self.work / "state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                tmp = self.state_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=2))
                tmp.replace(self.state_path)

    def done(self, model: str, step: str) -> dict[str, Any] | None:
        with self._state() as state:
            return state.get(model, {}).get(step)

    def record(self, model: str, step: str, value: dict[str, Any]) -> dict[str, Any]:
        with self._state() as state:
            state.setdefault(model, {})[step] = value
        return value

    def run(self, model: str, step: str, cmd: list[str], env: dict[str, str] | None = None,
            cwd: Path | None = None) -> dict[str, Any]:
        """Run one step as a subprocess once: wall time and peak resident memory (wait4)."""
        if (rec := self.done(model, step)) is not None:
            return rec
        log = self.work / model / f"{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{time.strftime('%H:%M:%S')}] {model}: {step} ...", flush=True)
        t0 = time.time()
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                    env={**os.environ, **ONE_THREAD, **(env or {})})
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.time() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise StepFailed(f"{model}: {step} failed (exit {os.waitstatus_to_exitcode(status)}); "
                             f"log {log}:\n{tail}")
        print(f"[{time.strftime('%H:%M:%S')}] {model}: {step} done in {seconds:.0f} s", flush=True)
        return self.record(model, step, {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024})

    # -- data views ------------------------------------------------------------------
    def _link(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src)

    def thrifty_data(self) -> Path:
        """nnU-Net layout with the 80 train+val cases in imagesTr and the 20 test cases in
        imagesTs/labelsTs (Thrifty keeps a labelled imagesTs apart as its test set)."""
        root = self.work / "data" / DATASET
        with _data_lock:  # two models start at once: one writes the folder, the other waits
            if not (root / "dataset.json").exists():
                self._write_thrifty_data(root)
        return root

    def _write_thrifty_data(self, root: Path) -> None:
        for part, ids in (("Tr", self.split["train"] + self.split["val"]), ("Ts", self.split["test"])):
            for cid in ids:
                self._link(self.data / "imagesTr" / f"{cid}_0000.nii.gz", root / f"images{part}" / f"{cid}_0000.nii.gz")
                self._link(self.data / "labelsTr" / f"{cid}.nii.gz", root / f"labels{part}" / f"{cid}.nii.gz")
        dj = json.loads((self.data / "dataset.json").read_text())
        dj["numTraining"] = 80
        (root / "dataset.json").write_text(json.dumps(dj, indent=2))

    def nnunet_raw(self) -> Path:
        """nnU-Net's raw folder: the 70 training cases only (imagesTs holds the test images)."""
        raw = self.work / "nnunet" / "raw"
        root = raw / DATASET
        if (root / "dataset.json").exists():
            return raw
        for cid in self.split["train"]:
            self._link(self.data / "imagesTr" / f"{cid}_0000.nii.gz", root / "imagesTr" / f"{cid}_0000.nii.gz")
            self._link(self.data / "labelsTr" / f"{cid}.nii.gz", root / "labelsTr" / f"{cid}.nii.gz")
        for cid in self.split["test"]:
            self._link(self.data / "imagesTr" / f"{cid}_0000.nii.gz", root / "imagesTs" / f"{cid}_0000.nii.gz")
        dj = json.loads((self.data / "dataset.json").read_text())
        dj["numTraining"] = len(self.split["train"])
        (root / "dataset.json").write_text(json.dumps(dj, indent=2))
        return raw

    # -- nnU-Net ---------------------------------------------------------------------
    def nnunet_env(self) -> Path:
        venv = self.work / "nnunet-venv"
        py = venv / "bin" / "python"
        if self.done("nnunet", "venv") is None:
            if not py.exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            constraints = self.work / "constraints.txt"
            constraints.write_text(f"torch=={TORCH_VERSION}\n")  # the CPU wheel; nnunetv2 would take a CUDA one
            self.run("nnunet", "venv-torch", [str(py), "-m", "pip", "install", "-q", f"torch=={TORCH_VERSION}"])
            self.run("nnunet", "venv", [str(py), "-m", "pip", "install", "-q", "-c", str(constraints),
                                        f"nnunetv2=={NNUNET_VERSION}"])
        site = subprocess.run([str(py), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        # Top level of nnU-Net's trainer package: its class lookup imports top-level modules before
        # sub-packages, some of which (primus) import timm -> torchvision, which fails beside CPU torch.
        shutil.copyfile(ROOT / "bench" / "nnunet_budget_trainer.py",
                        Path(site) / "training" / "nnUNetTrainer" / "thrifty_budget.py")
        return venv

    def nnunet(self) -> dict[str, Any]:
        venv = self.nnunet_env()
        raw = self.nnunet_raw()
        base = self.work / "nnunet"
        name = "nnunet" if not self.args.nnunet_batch_size else f"nnunet-b{self.args.nnunet_batch_size}"
        env = {"nnUNet_raw": str(raw), "nnUNet_preprocessed": str(base / "preprocessed"),
               "nnUNet_results": str(self.work / name / "results"), "nnUNet_n_proc_DA": "0", "nnUNet_compile": "f",
               "THRIFTY_BUDGET_MINUTES": str(self.args.budget_minutes),
               "THRIFTY_BATCH_SIZE": str(self.args.nnunet_batch_size or "")}
        bin_ = venv / "bin"
        # The planner sets torch's threads to nnUNet_n_proc_DA, which must then be positive.
        self.run("nnunet", "plan_preprocess", [str(bin_ / "nnUNetv2_plan_and_preprocess"), "-d", "3",
                                               "--verify_dataset_integrity", "-c", "2d", "-np", "1"],
                 {**env, "nnUNet_n_proc_DA": "1"})
        out = self.work / name / "results" / DATASET / "nnUNetTrainer_ThriftyBudget__nnUNetPlans__2d" / "fold_all"
        resume = ["--c"] if (out / "checkpoint_latest.pth").exists() else []
        train = self.run(name, "train", [str(bin_ / "nnUNetv2_train"), "3", "2d", "all", "-tr",
                                             "nnUNetTrainer_ThriftyBudget", "-device", "cpu", *resume], env)
        pred = self.work / name / "pred_test"
        pred.mkdir(parents=True, exist_ok=True)  # nnU-Net's sequential predictor does not create it
        script = ("import sys, torch\ntorch.set_num_threads(1)\n"
                  "from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor\n"
                  "p = nnUNetPredictor(use_mirroring=True, perform_everything_on_device=False,"
                  " device=torch.device('cpu'), allow_tqdm=False)\n"
                  "p.initialize_from_trained_model_folder(sys.argv[1], use_folds=('all',),"
                  " checkpoint_name='checkpoint_final.pth')\n"
                  "p.predict_from_files_sequential(sys.argv[2], sys.argv[3])\n")
        predict = self.run(name, "predict", [str(bin_ / "python"), "-c", script, str(out.parent),
                                                 str(raw / DATASET / "imagesTs"), str(pred)], env)
        budget = json.loads((out / "thrifty_budget.json").read_text())
        plans = json.loads((base / "preprocessed" / DATASET / "nnUNetPlans.json").read_text())
        return {"model": "nnU-Net 2d" + (f", batch {self.args.nnunet_batch_size}" if name != "nnunet" else ""),
                "key": name, "params": self.nnunet_params(venv, out), "pred_dir": pred,
                "train_seconds": budget["spent_s"], "search_seconds": None,
                "epochs": budget["epochs_done"], "steps": budget["epochs_done"] * budget["iterations_per_epoch"],
                "batch_size": budget["batch_size"], "working_size": budget["patch_size"],
                "planned_batch_size": plans["configurations"]["2d"]["batch_size"],
                "infer_seconds_per_case": predict["seconds"] / len(self.split["test"]),
                "peak_rss_mb": max(train["peak_rss_mb"], predict["peak_rss_mb"])}

    def nnunet_params(self, venv: Path, out: Path) -> int:
        # The decoder holds a reference to the encoder, so the state dict lists encoder tensors twice
        # (encoder.* and decoder.encoder.*, one storage): count each storage once.
        script = ("import sys, torch\nsd = torch.load(sys.argv[1], map_location='cpu', weights_only=False)"
                  "['network_weights']\nseen = {v.data_ptr(): v.numel() for k, v in sd.items()"
                  " if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}\n"
                  "print(sum(seen.values()))")
        return int(python_value(venv / "bin" / "python", script, out / "checkpoint_final.pth"))

    # -- Thrifty and the baselines ---------------------------------------------------------
    def thrifty_cli(self) -> list[str]:
        return [sys.executable, "-m", "cli.main"]

    def recipe(self) -> list[str]:
        """The retrain options of this invocation's recipe (the same for Thrifty and the baselines)."""
        a = self.args
        return ([*(["--augmentation", a.augmentation] if a.augmentation else []),
                 *(["--image-size", str(a.image_size)] if a.image_size else []),
                 *(["--deep-supervision"] if a.deep_supervision else []),
                 *(["--optimizer", a.optimizer] if a.optimizer else []),
                 *(["--seed", str(a.seed)] if a.seed is not None else [])])

    def retrain(self, model: str, arch: list[str], search_seconds: float | None = None,
                reuse: str | None = None) -> dict[str, Any]:
        """Retrain (or, with ``reuse``, take that model's finished retrain), predict the test cases."""
        data = self.thrifty_data()
        out = self.work / (reuse or model) / "retrain"
        resume = ["--resume"] if (out / "last.pt").exists() else []
        val = ",".join(self.split["val"])
        command = [*self.thrifty_cli(), "retrain", "--data", str(data), "--out", str(out), *arch, *self.recipe(),
                   "--epochs", "1000", "--val-cases", val, "--time-budget-minutes", str(self.args.budget_minutes),
                   "--device", "cpu", "--json", *resume]
        train = self.done(reuse, "retrain") if reuse else self.run(model, "retrain", command, cwd=ROOT)
        if train is None:
            raise StepFailed(f"{model}: --reuse-training needs a finished retrain of {reuse!r} first")
        pred = self.work / model / "pred_test"
        predict = self.run(model, "predict", [*self.thrifty_cli(), "predict", "--checkpoint", str(out / "best.pt"),
                                              "--input", str(data / "imagesTs"), "--output", str(pred),
                                              *(["--tta"] if self.args.tta else []), "--json"], cwd=ROOT)
        metrics = json.loads((out / "metrics.json").read_text())
        latency = self.latency_ms(out / "best.pt", metrics["working_size"])
        return {"model": model, "tag": self.args.tag, "latency_ms": latency, "params": metrics["params"], "pred_dir": pred,
                "train_seconds": metrics["elapsed_seconds"], "search_seconds": search_seconds,
                "epochs": metrics["epochs_run"], "steps": metrics.get("steps_run"),
                "best_epoch": metrics["best_epoch"], "working_size": metrics.get("working_size"),
                "val_dsc": (metrics["best"] or {}).get("mean_dsc"),
                "test_dsc_engine": (metrics.get("test") or {}).get("mean_dsc"),
                "infer_seconds_per_case": predict["seconds"] / len(self.split["test"]),
                "peak_rss_mb": max(train["peak_rss_mb"], predict["peak_rss_mb"])}

    def latency_ms(self, checkpoint: Path, size: list[int]) -> float:
        """Forward time of the trained network, batch 1 at its working size, one thread (median of 10)."""
        script = ("import sys, torch\ntorch.set_num_threads(1)\nfrom nas_core.checkpoint import load_model\n"
                  "from nas_core.latency import measure_network_ms\n"
                  "model, meta = load_model(sys.argv[1], 'cpu')\n"
                  "size = [int(s) for s in sys.argv[2].split('x')]\n"
                  "print(measure_network_ms(model, meta['in_channels'], size, torch.device('cpu'), reps=10))")
        return float(python_value(Path(sys.executable), script, checkpoint, "x".join(map(str, size))))

    def thrifty(self) -> dict[str, Any]:
        data = self.thrifty_data()
        name = self.dir("thrifty")
        if self.args.genotype:  # a genotype found before (e.g. the default one): retrain only
            row = self.retrain(name, ["--genotype", self.args.genotype, "--channels", str(self.args.channels)])
            row["model"] = f"Thrifty ({Path(self.args.genotype).name})"
            return row
        out = self.work / name / "search"
        resume = ["--resume"] if (out / "last.pt").exists() else []
        a = self.args
        search = self.run(name, "search", [
            *self.thrifty_cli(), "search", "--data", str(data), "--out", str(out), "--epochs", str(a.search_epochs),
            "--warmup-epochs", str(a.search_epochs * 3 // 10), "--channels", str(a.search_channels),
            "--image-size", str(a.search_image_size), "--steps-per-epoch", "20", "--eval-every", str(a.eval_every),
            *(["--latency-weight", str(a.latency_weight)] if a.latency_weight else []),
            "--val-cases", ",".join(self.split["val"]), "--time-budget-minutes", str(a.search_minutes),
            "--device", "cpu", "--json", *resume], cwd=ROOT)
        row = self.retrain(name, ["--genotype", str(out / "genotype.json"), "--channels", str(a.channels)],
                           search_seconds=json.loads((out / "summary.json").read_text())["seconds"])
        row["model"] = "Thrifty (searched)"
        summary = json.loads((out / "summary.json").read_text())
        row["genotype"] = summary["genotype"]
        row["search_epochs"] = summary["epochs_run"]
        row["genotype_latency_ms_at_search_size"] = summary.get("genotype_latency_ms")
        row["peak_rss_mb"] = max(row["peak_rss_mb"], search["peak_rss_mb"])
        return row

    def dir(self, model: str) -> str:
        """The folder (and state key) of a model in this invocation's variant."""
        return model if not self.args.tag else f"{model}-{self.args.tag}"

    def baseline(self, name: str) -> dict[str, Any]:
        row = self.retrain(self.dir(name), ["--arch", name], reuse=name if self.args.reuse_training else None)
        row["model"] = {"unet": "U-Net", "unetpp": "UNet++"}[name]
        return row

    # -- scoring ---------------------------------------------------------------------
    def score(self, pred_dir: Path) -> dict[str, Any]:
        """Hard Dice per case and class on each test case at its own size (same code for all)."""
        scores = []
        for cid in self.split["test"]:
            ref = sitk.GetArrayFromImage(sitk.ReadImage(str(self.data / "labelsTr" / f"{cid}.nii.gz")))
            candidates = [pred_dir / f"{cid}.nii.gz", pred_dir / f"{cid}_0000_seg.nii.gz"]
            path = next((p for p in candidates if p.exists()), None)
            if path is None:
                raise StepFailed(f"no prediction for {cid} in {pred_dir}")
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            if pred.shape != ref.shape:
                raise StepFailed(f"{path}: prediction {pred.shape} is not at the case's size {ref.shape}")
            scores.append(CaseScores.compute(cid, pred.astype(np.int64), ref.astype(np.int64), len(CLASSES)))
        summary = summarise(scores, CLASSES)
        per_case = [np.nanmean(list(s.dsc.values())) for s in scores]
        summary["mean_dsc_std_over_cases"] = float(np.std(per_case))
        summary["per_case"] = [s.to_dict() for s in scores]
        return summary

    def model(self, name: str) -> dict[str, Any]:
        row = {"nnunet": self.nnunet, "thrifty": self.thrifty,
               "unet": lambda: self.baseline("unet"), "unetpp": lambda: self.baseline("unetpp")}[name]()
        row["test"] = self.score(Path(row.pop("pred_dir")))
        row.setdefault("key", self.dir(name))
        row["recipe"] = None if name == "nnunet" else " ".join(self.recipe() + (["--tta"] if self.args.tta else []))
        return row

    def merge_results(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Add this invocation's rows to results.json (by key), under the state lock."""
        path = self.work / "results.json"
        with _state_lock, open(self.work / "state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            results = json.loads(path.read_text()) if path.exists() else {"rows": {}}
            if isinstance(results.get("rows"), list):  # an older run's file
                results["rows"] = {}
            results["machine"] = machine()
            for row in rows:
                results["rows"][row["key"]] = {**row, "command": " ".join(sys.argv),
                                               "budget_minutes": self.args.budget_minutes,
                                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=2, default=str))
            tmp.replace(path)
        return results


def machine() -> str:
    cpus = os.cpu_count()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{cpus} CPU cores ({model}), no GPU, Python {platform.python_version()}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | params | RV | MYO | LV | mean DSC (± std over cases) | train s | search s | "
            "epochs | infer s/case | latency ms | peak MB |")
    lines = [head.replace("| model |", "| model | variant |"), "|" + "---|" * 13]
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        t = r["test"]
        cls = [fmt(t["classes"][c]["dsc_mean"]) for c in CLASSES[1:]]
        lines.append(f"| {r['model']} | {r.get('key', '')} | {r['params']:,} | {' | '.join(cls)} | {fmt(t['mean_dsc'])} ± "
                     f"{fmt(t['mean_dsc_std_over_cases'])} | {fmt(r['train_seconds'], '.0f')} | "
                     f"{fmt(r['search_seconds'], '.0f')} | {r['epochs']} | {fmt(r['infer_seconds_per_case'], '.1f')} | "
                     f"{fmt(r.get('latency_ms'), '.0f')} | "
                     f"{fmt(r['peak_rss_mb'], ',.0f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "acdc-ed-100cases" / DATASET))
    ap.add_argument("--work", default=str(ROOT / "runs" / "vs_nnunet"))
    ap.add_argument("--budget-minutes", type=float, default=20.0, help="training wall-clock per model")
    ap.add_argument("--search-minutes", type=float, default=15.0, help="Thrifty's search, reported apart")
    ap.add_argument("--search-epochs", type=int, default=60)
    ap.add_argument("--search-channels", type=int, default=16)
    ap.add_argument("--search-image-size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32, help="Thrifty's width at retrain")
    ap.add_argument("--genotype", help="Thrifty: retrain this genotype file instead of searching")
    ap.add_argument("--image-size", type=int,
                    help="retrain frame S x S (aspect kept); default: the dataset's plan")
    ap.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    ap.add_argument("--parallel", type=int, default=2, help="models trained at once (one thread each)")
    ap.add_argument("--latency-weight", type=float, default=0.0, help="search: latency-aware, with this weight")
    ap.add_argument("--eval-every", type=int, default=1, help="search: score the architecture half every N epochs")
    ap.add_argument("--nnunet-batch-size", type=int, help="a variant: nnU-Net with this batch size, not the plan's")
    ap.add_argument("--reuse-training", action="store_true",
                    help="baselines: keep the untagged run's trained model, only predict again (e.g. with --tta)")
    ap.add_argument("--tag", default="", help="a name for this recipe variant (its own folders and rows)")
    ap.add_argument("--seed", type=int, default=None, help="retrain seed (default: the CLI's, 0); use with --tag")
    ap.add_argument("--augmentation", choices=["none", "basic", "nnunet"], help="retrain augmentation")
    ap.add_argument("--deep-supervision", action="store_true", help="retrain with a loss on every head")
    ap.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="retrain optimiser")
    ap.add_argument("--tta", action="store_true", help="predict with mirroring (as nnU-Net does)")
    ap.add_argument("--report", action="store_true", help="print the table of every row so far and exit")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    bench = Bench(args)
    if args.report:
        path = bench.work / "results.json"
        results = json.loads(path.read_text()) if path.exists() else {"rows": {}}
        print(json.dumps(results, indent=2, default=str) if args.json else table(list(results["rows"].values())))
        return
    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    t0 = time.time()
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = {name: pool.submit(bench.model, name) for name in names}
    rows, failed = [], []
    for name, fut in futures.items():
        try:
            rows.append(fut.result())
        except StepFailed as exc:
            failed.append(name)
            print(exc, file=sys.stderr)
    result = {"machine": machine(), "budget_minutes": args.budget_minutes, "search_minutes": args.search_minutes,
              "wall_seconds_this_invocation": time.time() - t0, "command": " ".join(sys.argv),
              "rows": rows, "failed": failed}
    bench.merge_results(rows)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(table(rows))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
