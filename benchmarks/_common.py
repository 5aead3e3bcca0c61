"""Small timing helpers shared by the benchmarks.

Import this module *before* numpy/numba so that :func:`single_thread` can
still pin the thread pools::

    from benchmarks._common import single_thread
    single_thread()
    import numpy as np

Timings are medians of repeats.  Each repeat records both the process CPU
time and the wall time; on a shared machine the CPU time is the more
reproducible measure of single-thread throughput (other processes delay the
wall clock, not the work done), so rates use it unless ``clock="wall"``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_THREAD_VARS = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def single_thread() -> None:
    """Pin numba/BLAS/OpenMP thread pools to one thread (call before imports)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"


@dataclass(frozen=True)
class Timing:
    """Repeated timing of one operation on ``n_items`` items."""

    name: str
    n_items: int
    cpu_s: tuple[float, ...]
    wall_s: tuple[float, ...]

    def seconds(self, clock: str = "cpu") -> float:
        """Median duration of one repeat, s."""
        return statistics.median(self.cpu_s if clock == "cpu" else self.wall_s)

    def rate(self, clock: str = "cpu") -> float:
        """Items per second (median over repeats)."""
        return self.n_items / max(self.seconds(clock), 1e-12)


@dataclass(frozen=True)
class Case:
    """One operation to time: ``fn()`` processes ``n_items`` items.

    ``setup()`` (untimed) runs before every call, e.g. to build a fresh
    accumulator; ``repeats`` overrides the common number of repeats (for slow
    baselines).
    """

    fn: Callable[[], object]
    n_items: int
    setup: Callable[[], object] | None = None
    repeats: int | None = None
    warmup: int = 1


def measure(cases: dict[str, Case], repeats: int = 5) -> dict[str, Timing]:
    """Time several cases, interleaved repeat by repeat.

    Interleaving exposes every case to the same background load, so the
    ratios between them stay meaningful on a busy machine.
    """
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        for _ in range(case.warmup):
            if case.setup is not None:
                case.setup()
            case.fn()
    for r in range(max(c.repeats or repeats for c in cases.values())):
        for name, case in cases.items():
            if r >= (case.repeats or repeats):
                continue
            if case.setup is not None:
                case.setup()
            c0, w0 = time.process_time(), time.perf_counter()
            case.fn()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {
        name: Timing(name, case.n_items, tuple(cpu[name]), tuple(wall[name]))
        for name, case in cases.items()
    }


def fmt_rate(rate: float) -> str:
    """Compact rate, e.g. ``12.3k``."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if rate >= limit:
            return f"{rate / limit:.1f}{suffix}"
    return f"{rate:.1f}"


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``12.3x`` (or ``-`` when ``b`` is 0)."""
    return f"{a / b:.1f}x" if b else "-"


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain aligned text table (first column left-aligned)."""
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))


def machine_info() -> str:
    """One line: CPU model, logical cores, python and key package versions."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for row in fh:
                if row.startswith("model name"):
                    model = row.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        model,
        f"{os.cpu_count()} logical cores",
        f"python {sys.version.split()[0]}",
    ]
    for mod in ("numpy", "numba"):
        if mod in sys.modules:
            parts.append(f"{mod} {sys.modules[mod].__version__}")
    try:
        load = os.getloadavg()[0]
        parts.append(f"load {load:.1f}")
    except OSError:
        pass
    return ", ".join(parts)


def start_tiled_poller(module: str, cats: Any, *extra: str) -> Any:
    """Start ``python -m benchmarks.<module>`` on the processed catalog.

    The poller is another process with a plain Tiled client (key from
    ``TILED_API_KEY``); it prints "ready" once connected, which is awaited.
    ``extra``: more arguments after the catalog's and the known runs'.
    """
    import subprocess
    from pathlib import Path

    env = dict(os.environ, TILED_API_KEY=cats.api_key)
    poller = subprocess.Popen(
        [
            sys.executable,
            "-m",
            f"benchmarks.{module}",
            cats.uri,
            cats.processed.item["id"],
            str(len(cats.processed)),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert poller.stdout is not None
    poller.stdout.readline()  # "ready"
    return poller
