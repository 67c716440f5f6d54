"""API process start-up time and resident memory, for one or more checkouts side by side.

For each checkout (a folder holding ``api/``; default: this one), alternating so that both
see the same machine load:

* import: wall time of ``python -c "import api.main"`` (median of ``--runs``),
* serve: ``uvicorn api.main:app`` on a free port with ``THRIFTY_HOME`` in a temp folder; the
  seconds until ``GET /healthz`` answers 200, then VmRSS (and VmHWM) of the process from
  ``/proc/PID/status`` (median of ``--runs``),
* which of torch, SimpleITK, pydicom, nibabel, matplotlib, onnx the import loaded.

    .venv/bin/python bench/api_startup.py                       # this checkout
    git worktree add /tmp/before HEAD~2                         # a checkout to compare with
    .venv/bin/python bench/api_startup.py /tmp/before .         # side by side
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HEAVY = ("torch", "SimpleITK", "pydicom", "nibabel", "matplotlib", "onnx", "onnxruntime", "monai")
PROBE = f"import sys, api.main; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"


def _env(repo: Path, home: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo), "THRIFTY_HOME": home}


def import_seconds(repo: Path) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as home:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PROBE], cwd=repo, env=_env(repo, home),
                              capture_output=True, text=True, check=True)
        return time.perf_counter() - start, proc.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def serve(repo: Path, timeout: float = 120.0) -> tuple[float, int, int]:
    """(seconds to the first /healthz 200, VmRSS KiB, VmHWM KiB) of a fresh uvicorn."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port),
                                 "--log-level", "warning"], cwd=repo, env=_env(repo, home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"uvicorn in {repo} exited with {proc.returncode}")
                if time.perf_counter() - start > timeout:
                    raise TimeoutError(f"uvicorn in {repo} did not answer /healthz in {timeout} s")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.05)
            ready = time.perf_counter() - start
            return ready, _status_kib(proc.pid, "VmRSS"), _status_kib(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repos", nargs="*", type=Path, default=[Path(__file__).resolve().parents[1]])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    imports: dict[Path, list[float]] = {r: [] for r in args.repos}
    served: dict[Path, list[tuple[float, int, int]]] = {r: [] for r in args.repos}
    loaded: dict[Path, str] = {}
    for _ in range(args.runs):
        for repo in args.repos:
            seconds, loaded[repo] = import_seconds(repo)
            imports[repo].append(seconds)
            served[repo].append(serve(repo))
    for repo in args.repos:
        ready, rss, hwm = (statistics.median(x[i] for x in served[repo]) for i in range(3))
        print(json.dumps({"repo": str(repo), "import_s_median": round(statistics.median(imports[repo]), 2),
                          "import_s_all": [round(s, 2) for s in imports[repo]],
                          "healthz_ready_s_median": round(ready, 2), "rss_mib_median": round(rss / 1024, 1),
                          "hwm_mib_median": round(hwm / 1024, 1), "heavy_modules_loaded": loaded[repo] or "none"}))


if __name__ == "__main__":
    main()
