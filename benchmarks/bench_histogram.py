"""Per-frame histogram update: our numba kernel vs numpy, scikit-beam, a plain read.

Run from the repository root::

    python3 -m benchmarks.bench_histogram            # full run (~1-2 min)
    python3 -m benchmarks.bench_histogram --quick    # smoke run (~20 s)
    python3 -m benchmarks.bench_histogram --clock wall
    python3 benchmarks/bench_histogram.py            # same, as a script

For 256x256 and 516x516 frames, uint16 and uint32, kbar 0.1, 1 and 10, with
10 rings covering about half of the pixels, each method streams a pool of
distinct pre-generated frames (tens of MB, far larger than L2) and the rate
is frames/s, the median of repeats, single thread:

* ``stack``: ``HistogramAccumulator.update(pool)`` (numba, one call),
* ``single``: ``update(frame)`` once per frame (numba, Python per frame),
* ``numpy``: the numpy backend on the whole pool,
* ``skbeam``: ``skbeam.core.speckle.xsvs`` with one time level (fewer frames),
* ``read``: a numba sum of every pixel of every frame, compiled like ours.

Ratios ``stack/skbeam`` and ``stack/read`` are computed in the same run.
Targets (256x256): stack >= 40x skbeam and >= 25% of the plain read.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402
import logging  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks._common import (  # noqa: E402
    Case,
    Timing,
    fmt_rate,
    machine_info,
    measure,
    print_table,
    ratio,
)
from xsvs_bluesky.core._image_kernels import plain_sum  # noqa: E402
from xsvs_bluesky.core.geometry import Partitions  # noqa: E402
from xsvs_bluesky.core.histogram import Backend, HistogramAccumulator  # noqa: E402
from xsvs_bluesky.core.synthetic import speckle_frames  # noqa: E402

N_RINGS = 10
TARGET_SKBEAM = 40.0
TARGET_READ = 0.25


def rings(shape: tuple[int, int]) -> Partitions:
    """10 contiguous rings around an off-centre beam, ~half of the pixels."""
    rows, cols = np.indices(shape)
    radius = np.hypot(rows - shape[0] / 2 + 0.3, cols - shape[1] / 2 - 0.7)
    r0 = 8.0
    r1 = np.sqrt(0.5 * shape[0] * shape[1] / np.pi + r0**2)
    step = (r1 - r0) / N_RINGS
    centers = r0 + step * (np.arange(N_RINGS) + 0.5)
    return Partitions.from_centers(radius, centers, dq=0.4999 * step)


def skbeam_xsvs() -> Callable[..., object] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from skbeam.core import speckle
    except ImportError:
        return None
    logging.getLogger("skbeam").setLevel(logging.WARNING)
    return speckle.xsvs


def run_case(
    parts: Partitions,
    pool: np.ndarray,
    n_skbeam: int,
    repeats: int,
    xsvs: Callable[..., object] | None,
) -> dict[str, Timing]:
    n = pool.shape[0]
    box: dict[str, HistogramAccumulator] = {}
    # steady state: bins already grown to what the pool needs (growth is a
    # one-off per series, and a fresh accumulator per repeat would redo it)
    n_bins = 1 << int(pool.max()).bit_length()

    def fresh(backend: Backend) -> Callable[[], None]:
        def setup() -> None:
            box[backend] = HistogramAccumulator(parts, n_bins=n_bins, backend=backend)

        return setup

    def stack(backend: Backend) -> Callable[[], None]:
        return lambda: box[backend].update(pool)

    def single() -> None:
        acc = box["numba"]
        for frame in pool:
            acc.update(frame)

    flat = pool.reshape(n, -1)
    cases = {
        "stack": Case(stack("numba"), n, fresh("numba")),
        "single": Case(single, n, fresh("numba")),
        "numpy": Case(stack("numpy"), n, fresh("numpy"), repeats=max(3, repeats // 2)),
        "read": Case(lambda: plain_sum(flat), n),
    }
    if xsvs is not None:
        labels = np.zeros(parts.shape, dtype=np.int64)
        for j, pix in enumerate(parts.pixels):
            labels.ravel()[pix] = j + 1
        sub = pool[:n_skbeam]
        max_cts = int(sub.max()) + 2

        def skbeam() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                xsvs([sub], labels, number_of_img=1, timebin_num=2, max_cts=max_cts)

        cases["skbeam"] = Case(skbeam, n_skbeam, repeats=max(3, repeats // 2), warmup=0)
    timings = measure(cases, repeats)
    acc = box["numba"]
    assert acc.counts.sum() == acc.n_frames * parts.n_pixels.sum()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small pools, 3 repeats")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    clock = args.clock
    xsvs = skbeam_xsvs()
    print(f"machine: {machine_info()}")
    print(f"clock: {clock} time, median of {repeats} repeats, single thread")
    if xsvs is None:
        print("scikit-beam not installed: skbeam column skipped")
    rows = []
    checks = []
    for shape, n_pool, n_sk in (((256, 256), 256, 24), ((516, 516), 96, 8)):
        if args.quick:
            n_pool, n_sk = max(16, n_pool // 6), max(4, n_sk // 3)
        parts = rings(shape)
        covered = np.unique(np.concatenate(parts.pixels)).size / (shape[0] * shape[1])
        for kbar in (0.1, 1.0, 10.0):
            base = speckle_frames(n_pool, shape, kbar, 0.2, rng=7)
            for dtype in (np.uint16, np.uint32):
                pool = base.astype(dtype)
                t = run_case(parts, pool, n_sk, repeats, xsvs)
                r = {k: v.rate(clock) for k, v in t.items()}
                sk = r.get("skbeam", 0.0)
                rows.append(
                    [
                        f"{shape[0]}x{shape[1]}",
                        np.dtype(dtype).name,
                        kbar,
                        fmt_rate(r["stack"]),
                        fmt_rate(r["single"]),
                        fmt_rate(r["numpy"]),
                        fmt_rate(sk) if sk else "-",
                        fmt_rate(r["read"]),
                        ratio(r["stack"], sk),
                        f"{r['stack'] / r['read']:.0%}",
                        f"{r['single'] / r['read']:.0%}",
                    ]
                )
                if shape == (256, 256):
                    checks.append(
                        (r["stack"] / sk if sk else np.inf, r["stack"] / r["read"])
                    )
        print(
            f"\n{shape[0]}x{shape[1]}: {N_RINGS} rings, {covered:.0%} of the pixels, "
            f"pool of {n_pool} distinct frames ({pool.nbytes / 2**20:.0f} MiB as "
            f"uint32), skbeam on {n_sk} frames"
        )
    print()
    print_table(
        [
            "frames",
            "dtype",
            "kbar",
            "stack/s",
            "single/s",
            "numpy/s",
            "skbeam/s",
            "read/s",
            "stack/skbeam",
            "stack/read",
            "single/read",
        ],
        rows,
    )
    worst_sk = min(c[0] for c in checks)
    worst_read = min(c[1] for c in checks)
    print(
        f"\n256x256 targets: stack/skbeam >= {TARGET_SKBEAM:.0f}x: "
        f"worst {worst_sk:.1f}x "
        f"({'met' if worst_sk >= TARGET_SKBEAM else 'NOT met'}); stack/read >= "
        f"{TARGET_READ:.0%}: worst {worst_read:.0%} "
        f"({'met' if worst_read >= TARGET_READ else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
