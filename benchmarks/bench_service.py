"""Whole-command times with and without ``xsvs-bluesky serve``, beside Tiled's import.

Run from the repository root::

    python3 -m benchmarks.bench_service              # demo of 500 frames, 3 repeats
    python3 -m benchmarks.bench_service --quick      # demo of 100 frames, 1 repeat

Every case is a whole process (wall time, median of the repeats), in one
run on the same machine:

- baseline: ``python -c "import tiled.client"``;
- ``demo`` into a fresh data folder with an empty numba cache (cold), then
  into another fresh folder with the cache it left (warm); no server running,
  so the demo starts ``xsvs-bluesky serve`` of the folder in the background
  (stopped after each demo, outside the time);
- ``results`` of that folder with no server running: the command starts a
  background server (its time included; stopped after each repeat, outside
  the time), and with ``--in-process`` (Tiled inside the command);
- ``results`` with ``xsvs-bluesky serve`` of the folder running.

Targets (issue 13): ``results`` <= 1 s above the baseline with ``serve``
running, <= 8 s with none; ``demo`` <= 30 s with numba's cache warm.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import machine_info, print_table

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "xsvs_bluesky.cli"]


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return wall


def _median(cmd: list[str], repeats: int) -> float:
    return statistics.median(_wall(cmd) for _ in range(repeats))


def _stop(data_dir: Path) -> None:
    """Stop the folder's background server, if any (not timed)."""
    _wall([*CLI, "serve", "--stop", "--data-dir", str(data_dir)])


def _first_command(cmd: list[str], data_dir: Path, repeats: int) -> float:
    """Median time of ``cmd`` with no server running (it starts one)."""
    times = []
    for _ in range(repeats):
        _stop(data_dir)
        times.append(_wall(cmd))
    _stop(data_dir)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 frames, 1 repeat")
    args = parser.parse_args(argv)
    frames, repeats = (100, 1) if args.quick else (args.frames, args.repeats)
    os.environ.pop("XSVS_BLUESKY_IN_PROCESS", None)  # background servers allowed
    print(machine_info())
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        base = _median([sys.executable, "-c", "import tiled.client"], repeats)
        rows.append(("python -c 'import tiled.client'", base))
        env = {**os.environ, "NUMBA_CACHE_DIR": str(root / "numba-cache")}
        env.pop("XSVS_BLUESKY_IN_PROCESS", None)
        for label, folder in (("cold", "cold"), ("warm", "data")):
            demo = [*CLI, "demo", "--frames", str(frames), "--no-progress"]
            demo += ["--data-dir", str(root / folder)]
            demo += ["--figure", str(root / f"{folder}.png")]
            rows.append(
                (f"demo {frames} frames, numba cache {label}", _wall(demo, env))
            )
            _stop(root / folder)
        results = [*CLI, "results", "--data-dir", str(root / "data")]
        rows.append(
            (
                "results, no server running (starts one)",
                _first_command(results, root / "data", repeats),
            )
        )
        rows.append(
            (
                "results --in-process, no server running",
                _median([*results, "--in-process"], repeats),
            )
        )
        serve = subprocess.Popen(
            [*CLI, "serve", "--data-dir", str(root / "data")],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert serve.stderr is not None
            t0 = time.perf_counter()
            for line in serve.stderr:
                if "ready" in line:
                    break
            rows.append(("serve: start until ready", time.perf_counter() - t0))
            rows.append(("results, serve running", _median(results, repeats)))
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)
            serve.stderr.close()  # type: ignore[union-attr]
    table = [
        (name, f"{s:.2f}", f"{s - base:+.2f}", f"{s / base:.1f}x") for name, s in rows
    ]
    print_table(("case", "wall s", "above baseline s", "ratio"), table)
    got = dict(rows)
    checks = [
        (
            "results with serve <= baseline + 1 s",
            got["results, serve running"] - base <= 1,
        ),
        (
            "results without a server <= 8 s",
            got["results, no server running (starts one)"] <= 8,
        ),
        (
            "demo <= 30 s, cache warm",
            got[f"demo {frames} frames, numba cache warm"] <= 30,
        ),
    ]
    for text, ok in checks:
        print(f"target {text}: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
