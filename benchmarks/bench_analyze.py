"""Offline analysis of the real 2700-frame series vs the plain decode of its files.

Run from the repository root::

    python3 -m benchmarks.bench_analyze             # 2 repeats, all frames
    python3 -m benchmarks.bench_analyze --quick     # 60 frames per exposure
    python3 -m benchmarks analyze                   # through the runner

Measured in the same run, alternating, medians of the repeats (wall clock
and process CPU time, all threads):

- plain decode: every frame file decoded with ``FrameSeries(threads=T)``
  and dropped (the read floor of the analysis, same reader and threads);
- plain decode in one thread (``threads=0``), for reference;
- ``LegacyAnalysis(...).run()``: masks, flat field, partitions, decode,
  histograms, image average and fits of every exposure (default estimator
  ``mle-weighted``), and the legacy compatibility mode (``pyxsvs-lsq`` with
  ``divide-round``);
- once, the CLI end to end in a fresh interpreter (imports included).

Numba caches are warmed first (a 2-frame analysis) so compile time is not
counted in the in-process rows.  Target: analysis <= 1.5x the plain decode.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "pyxsvs-example"
TARGET = 1.5

_CLI = "import sys\nfrom xsvs_bluesky.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--quick", action="store_true", help="60 frames per exposure, 1 repeat"
    )
    args = parser.parse_args(argv)
    ini = args.data / "analysis" / "xsvs" / "xsvs_input.txt"
    if not ini.is_file():
        print(f"example data not found: {ini}", file=sys.stderr)
        return 2
    limit = 60 if args.quick else None
    repeats = 1 if args.quick else max(args.repeats, 1)

    from benchmarks._common import machine_info
    from xsvs_bluesky.legacy import GUNZIP_BACKEND, FrameSeries
    from xsvs_bluesky.offline import LegacyAnalysis

    def decode(threads: int) -> Callable[[], object]:
        def go() -> int:
            job = LegacyAnalysis(ini, frames_per_exposure=limit)
            files = [p for f in job.reader.files for p in f]
            return sum(1 for _ in FrameSeries(files, threads=threads))

        return go

    def analyze(**options: object) -> Callable[[], object]:
        def go() -> object:
            job = LegacyAnalysis(
                ini, frames_per_exposure=limit, threads=args.threads, **options
            )
            return job.run()

        return go

    compat = {"estimator": "pyxsvs-lsq", "flat_field": "divide-round"}
    cases: dict[str, Callable[[], object]] = {
        f"plain decode, threads={args.threads}": decode(args.threads),
        "plain decode, 1 thread": decode(0),
        "analyze (default: mle-weighted)": analyze(),
        "analyze (pyxsvs-lsq, divide-round)": analyze(**compat),
    }
    n_files = LegacyAnalysis(ini, frames_per_exposure=limit).reader.n_files
    # warm-up: page cache, imports, numba caches
    decode(args.threads)()
    LegacyAnalysis(ini, frames_per_exposure=2).run()
    LegacyAnalysis(ini, frames_per_exposure=2, **compat).run()  # type: ignore[arg-type]

    walls: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    for rep in range(repeats):
        names = list(cases) if rep % 2 == 0 else list(reversed(cases))
        for name in names:
            wall, cpu = timed(cases[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    print(machine_info())
    print(
        f"{n_files} files, median of {repeats}, gunzip {GUNZIP_BACKEND}, "
        f"decode threads {args.threads}"
    )
    floor = statistics.median(walls[next(iter(cases))])
    floor_cpu = statistics.median(cpus[next(iter(cases))])
    print(f"  {'case':38s} {'wall s':>7} {'cpu s':>7} {'files/s':>8} {'x decode':>9}")
    for name in cases:
        wall = statistics.median(walls[name])
        cpu = statistics.median(cpus[name])
        print(
            f"  {name:38s} {wall:7.2f} {cpu:7.2f} {n_files / wall:8.0f} "
            f"{wall / floor:8.2f}x (cpu {cpu / floor_cpu:.2f}x)"
        )
    cmd = [sys.executable, "-c", _CLI, "analyze", str(ini), "--no-progress"]
    cmd += ["--format", "json"]
    if limit:
        cmd += ["--frames-per-exposure", str(limit)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, cwd=REPO, check=False)
    cli = time.perf_counter() - start
    print(
        f"  {'CLI end to end (fresh interpreter)':38s} {cli:7.2f} {'':>7} "
        f"{n_files / cli:8.0f} {cli / floor:8.2f}x  exit {proc.returncode}"
    )
    ratio = statistics.median(walls["analyze (default: mle-weighted)"]) / floor
    verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
    print(
        f"analyze / plain decode (wall): {ratio:.2f}x, target <= {TARGET}x: {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
