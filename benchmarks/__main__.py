"""Run every benchmark in this folder, one after another.

Usage::

    python3 -m benchmarks            # all benchmarks
    python3 -m benchmarks --quick    # a fast smoke run of each
    python3 -m benchmarks histogram fit   # only bench_histogram and bench_fit

Each ``bench_*.py`` module is run as ``python3 -m benchmarks.bench_NAME`` in
its own process (so numba caches, threads and memory do not leak between
them) and prints its own table with ratios against baselines measured in the
same run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in argv if a.startswith("-")]
    names = [a for a in argv if not a.startswith("-")]
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    unknown = sorted(set(names) - set(available))
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; "
            f"available: {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    failed = []
    for name in names or available:
        print(f"\n=== bench_{name} {' '.join(flags)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(
            [sys.executable, "-m", f"benchmarks.bench_{name}", *flags],
            cwd=HERE.parent,
        )
        print(f"=== bench_{name}: exit {rc}, {time.perf_counter() - t0:.1f} s")
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
