"""Read floor: decode the 2700 real EDF.gz frames with fabio vs our readers.

Run from the repository root::

    python3 benchmarks/bench_read.py            # all 2700 files, 3 repeats
    python3 benchmarks/bench_read.py --files 500 --repeats 5

Prints wall time and files/s (median of the repeats), CPU time per file (all
threads; insensitive to other processes competing for the cores) and ratios
to plain fabio. The "read floor" that later benchmarks compare with is the
fastest single-thread decode measured here (the minimal zlib + numpy decode
of the known layout).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "pyxsvs-example"


def fabio_decode(files: Sequence[Path]) -> int:
    import fabio

    total = 0
    for path in files:
        total += int(fabio.open(str(path)).data[0, 0])
    return total


def minimal_decode(files: Sequence[Path]) -> int:
    """Known layout (1024-byte header, uint16 LE): the least work possible."""
    total = 0
    for path in files:
        raw = zlib.decompress(path.read_bytes(), 31)
        total += int(np.frombuffer(raw, "<u2", 256 * 256, 1024)[0])
    return total


def bytes_only(files: Sequence[Path]) -> int:
    """File reads without decoding (the I/O part)."""
    return sum(len(path.read_bytes()) for path in files)


def fast_path(files: Sequence[Path]) -> int:
    from xsvs_bluesky.legacy import read_frame

    return sum(int(read_frame(path)[0, 0]) for path in files)


def series(threads: int) -> Callable[[Sequence[Path]], int]:
    def run(files: Sequence[Path]) -> int:
        from xsvs_bluesky.legacy import FrameSeries

        return sum(int(f[0, 0]) for f in FrameSeries(files, threads=threads))

    return run


def stacked(threads: int, size: int = 64) -> Callable[[Sequence[Path]], int]:
    def run(files: Sequence[Path]) -> int:
        from xsvs_bluesky.legacy import FrameSeries

        chunks = FrameSeries(files, threads=threads).chunks(size)
        return sum(int(c[:, 0, 0].sum()) for c in chunks)

    return run


def caller_work(frame: np.ndarray) -> float:
    """Stand-in for the consumer (~histogram cost): numpy work on the frame."""
    values = frame.astype(np.float64)
    return float(np.sqrt(values * values + 1.0).sum())


def with_work(threads: int) -> Callable[[Sequence[Path]], int]:
    def run(files: Sequence[Path]) -> int:
        from xsvs_bluesky.legacy import FrameSeries

        return sum(int(caller_work(f) > 0) for f in FrameSeries(files, threads=threads))

    return run


def measure(
    fn: Callable[[Sequence[Path]], int], files: Sequence[Path], n: int
) -> tuple[float, float]:
    """Median wall time and median CPU time (all threads) of ``n`` runs [s]."""
    walls, cpus = [], []
    for _ in range(n):
        cpu, start = time.process_time(), time.perf_counter()
        fn(files)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--files", type=int, default=0, help="0: all files")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from xsvs_bluesky.legacy import GUNZIP_BACKEND, read_ini

    ini = args.data / "analysis" / "xsvs" / "xsvs_input.txt"
    if not ini.is_file():
        print(f"example data not found: {ini}", file=sys.stderr)
        return 2
    files = list(read_ini(ini).all_files())
    if args.files:
        files = files[: args.files]
    bytes_only(files)  # warm the page cache
    cases: list[tuple[str, Callable[[Sequence[Path]], int]]] = [
        ("file bytes only (I/O, no decode)", bytes_only),
        ("fabio.open(f).data", fabio_decode),
        ("minimal zlib+frombuffer (floor)", minimal_decode),
        ("read_frame fast path", fast_path),
        ("FrameSeries threads=0", series(0)),
        ("FrameSeries threads=1", series(1)),
        ("FrameSeries threads=2", series(2)),
        ("FrameSeries threads=2 chunks(64)", stacked(2)),
        ("threads=0 + caller work", with_work(0)),
        ("threads=1 + caller work", with_work(1)),
        ("threads=2 + caller work", with_work(2)),
    ]
    print(
        f"{len(files)} files, median of {args.repeats}, gunzip backend "
        f"{GUNZIP_BACKEND}, {os.cpu_count()} CPUs"
    )
    try:
        load = f", load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    print(f"  {'case':36s} {'wall s':>7s} {'files/s':>9s} {'CPU ms/file':>12s}{load}")
    rates = {}
    for name, fn in cases:
        wall, cpu = measure(fn, files, args.repeats)
        rates[name] = len(files) / wall
        print(
            f"  {name:36s} {wall:7.3f} {rates[name]:9.0f} "
            f"{1e3 * cpu / len(files):12.3f}",
            flush=True,
        )
    base = rates["fabio.open(f).data"]
    floor = rates["minimal zlib+frombuffer (floor)"]
    print("ratios (files/s relative to fabio | to the single-thread floor):")
    for name, rate in rates.items():
        print(f"  {name:36s} x{rate / base:6.2f} | x{rate / floor:5.2f}")
    print(f"read floor (single thread): {floor:.0f} files/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
