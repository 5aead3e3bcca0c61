"""Start-up of the command line: ``--help``/``--version`` vs a bare interpreter.

Run from the repository root::

    python3 -m benchmarks.bench_cli              # 7 repeats
    python3 -m benchmarks.bench_cli --repeats 15

Each case is a whole process (wall time, median of interleaved repeats):
``python -c pass`` (the baseline), ``xsvs-bluesky --version``, ``--help``,
``demo --help`` and an argument error (``results --no-such-option``), all run
as ``python -m xsvs_bluesky.cli``.  Target: every CLI case <= 0.3 s above the
baseline (the last line says whether it was met).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import machine_info, print_table

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.3

CASES: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "--version": [sys.executable, "-m", "xsvs_bluesky.cli", "--version"],
    "--help": [sys.executable, "-m", "xsvs_bluesky.cli", "--help"],
    "demo --help": [sys.executable, "-m", "xsvs_bluesky.cli", "demo", "--help"],
    "argument error": [
        sys.executable,
        "-m",
        "xsvs_bluesky.cli",
        "results",
        "--no-such-option",
    ],
}


def _wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, capture_output=True, check=False)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    print(machine_info())
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for cmd in CASES.values():  # warm the file cache
        _wall(cmd)
    for _ in range(repeats):
        for name, cmd in CASES.items():
            times[name].append(_wall(cmd))
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["python -c pass"]
    rows = [
        (name, f"{s:.3f}", f"{s - base:+.3f}", f"{s / base:.2f}x")
        for name, s in median.items()
    ]
    print_table(("case", "wall s", "above baseline s", "ratio"), rows)
    worst = max(s - base for name, s in median.items() if name != "python -c pass")
    met = worst <= TARGET_S
    print(
        f"target <= {TARGET_S} s above python -c pass: "
        f"{'met' if met else 'NOT met'} (worst {worst:.3f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
