"""Datums analysed on Dask workers vs one Dask worker vs the in-process callback.

Run from the repository root::

    python3 -m benchmarks.bench_dask             # 320 frames of 1024x1024
    python3 -m benchmarks.bench_dask --quick     # 96 frames
    python3 -m benchmarks dask                   # through the runner

Simulated 1024x1024 uint16 speckle frames are written once with h5py to a
temporary folder (one frame per chunk, uncompressed; deleted at the end);
the documents of a fly scan (start, descriptor, StreamResource, one
StreamDatum per 32 frames, stop) are fed to an XSVSCallback:

- in process (no Dask);
- ``DaskShards`` on a ``LocalCluster`` of 1 single-thread worker process;
- the same with 2 worker processes (memory-limited, 127.0.0.1).

Wall time from the start document to the end of the stop document (the
derived run complete), medians of the repeats, frames/s; the derived runs
are checked equal.  Also the merge cost per datum: ``absorb`` of one
datum's partial (median over datums).  Target: 2 workers >= 1.7x 1 worker.
Needs 2 free cores: on a shared machine the ratio is bounded by the others'
load.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 1.7
SHAPE = (1024, 1024)
PER_DATUM = 32


def _write_frames(folder: Path, n: int) -> Path:
    import h5py
    import numpy as np

    rng = np.random.default_rng(1)
    path = folder / "frames.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "entry/data", shape=(n, *SHAPE), dtype=np.uint16, chunks=(1, *SHAPE)
        )
        base = rng.gamma(2.0, 1.0, size=SHAPE)  # a static speckle pattern
        block = rng.poisson(base, size=(16, *SHAPE)).astype(np.uint16)
        for a in range(0, n, 16):  # 16 distinct frames, repeated
            b = min(n, a + 16)
            ds[a:b] = block[: b - a]
    return path


def _documents(path: Path, n: int) -> list[tuple[str, dict[str, Any]]]:
    from event_model import compose_run

    geometry = {
        "wavelength": 1.5,
        "distance": 5000.0,
        "pixel_size": 0.055,
        "center_x": 512.0,
        "center_y": 512.0,
        "shape": list(SHAPE),
    }
    run = compose_run(
        metadata={
            "xsvs_geometry": geometry,
            "xsvs_partitions": {"q1": 0.002, "q2": 0.01, "qs": 0.002, "dq": 0.0008},
            "acquire_time": 0.001,
        }
    )
    docs: list[tuple[str, dict[str, Any]]] = [("start", run.start_doc)]
    key = {
        "source": "sim",
        "shape": [1, *SHAPE],
        "dtype": "array",
        "dtype_numpy": "<u2",
        "external": "STREAM:",
    }
    desc = run.compose_descriptor(data_keys={"maxipix": key}, name="primary")
    docs.append(("descriptor", desc.descriptor_doc))
    res = run.compose_stream_resource(
        mimetype="application/x-hdf5",
        uri=path.as_uri(),
        data_key="maxipix",
        parameters={"dataset": "entry/data", "chunk_shape": [1, *SHAPE]},
    )
    docs.append(("stream_resource", res.stream_resource_doc))
    for a in range(0, n, PER_DATUM):
        b = min(n, a + PER_DATUM)
        datum = res.compose_stream_datum(
            indices={"start": a, "stop": b}, descriptor=desc.descriptor_doc
        )
        docs.append(("stream_datum", datum))
    docs.append(("stop", run.compose_stop()))
    return docs


def _analyse(docs: list[tuple[str, dict[str, Any]]], shards: Any) -> tuple[float, Any]:
    from xsvs_bluesky.callback import XSVSCallback

    cb = XSVSCallback(shards=shards, progress_interval_s=60.0, read_timeout_s=30.0)
    t0 = time.perf_counter()
    for name, doc in docs:
        cb(name, doc)
    seconds = time.perf_counter() - t0
    record = cb.records[docs[0][1]["uid"]]
    if record.exit_status != "success":
        raise RuntimeError(f"analysis failed: {record.reason}")
    return seconds, record.results


def _merge_cost(path: Path, docs: list[tuple[str, dict[str, Any]]]) -> float:
    """Median seconds of ``absorb`` of one datum's partial."""
    from xsvs_bluesky.analysis import shard_recipe
    from xsvs_bluesky.callback import XSVSCallback
    from xsvs_bluesky.callback._shards import analyse_datum

    setup = XSVSCallback().setup_for(docs[0][1])
    recipe = shard_recipe(setup)
    resource = next(d for n, d in docs if n == "stream_resource")
    datums = [d for n, d in docs if n == "stream_datum"]
    partials = [
        analyse_datum(
            recipe,
            resource,
            [1, *SHAPE],
            d["indices"]["start"],
            d["indices"]["stop"],
            5.0,
        )
        for d in datums
    ]
    exposure = setup.new_exposure("primary", 0.001)
    times = []
    for arrays in partials:
        t0 = time.perf_counter()
        exposure.absorb(arrays)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _same(a: Any, b: Any) -> bool:
    return all(
        x.counts.tobytes() == y.counts.tobytes()
        and x.mean_image.tobytes() == y.mean_image.tobytes()
        and x.beta.tobytes() == y.beta.tobytes()
        for x, y in zip(a, b, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96 frames, 1 repeat")
    parser.add_argument("--frames", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", default="1GiB", help="memory limit per worker")
    args = parser.parse_args(argv)
    n = 96 if args.quick else args.frames
    repeats = 1 if args.quick else args.repeats

    from xsvs_bluesky.callback import DaskShards

    folder = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    try:
        t0 = time.perf_counter()
        path = _write_frames(folder, n)
        print(
            f"{n} frames {SHAPE[0]}x{SHAPE[1]} uint16 written in "
            f"{time.perf_counter() - t0:.1f} s ({path.stat().st_size / 2**20:.0f} "
            f"MiB, {PER_DATUM} frames per StreamDatum)",
            flush=True,
        )
        docs = _documents(path, n)
        _analyse(docs[:3] + docs[3:4] + docs[-1:], None)  # warm numba caches
        rows: dict[str, list[float]] = {}
        results: dict[str, Any] = {}
        rows["in process"] = []
        for _ in range(repeats):
            seconds, results["in process"] = _analyse(docs, None)
            rows["in process"].append(seconds)
        for workers in (1, 2):
            label = f"Dask, {workers} worker{'s' if workers > 1 else ''}"
            rows[label] = []
            with DaskShards.connect(
                f"local:{workers}", memory_limit=args.memory
            ) as shards:
                _analyse(docs, shards)  # every worker warm (numba, recipe)
                for _ in range(repeats):
                    seconds, results[label] = _analyse(docs, shards)
                    rows[label].append(seconds)
        merge = _merge_cost(path, docs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    base = statistics.median(rows["Dask, 1 worker"])
    print(f"\n{'path':<18} {'seconds':>8} {'frames/s':>9} {'vs 1 worker':>12}")
    for label, times in rows.items():
        t = statistics.median(times)
        print(f"{label:<18} {t:8.2f} {n / t:9.1f} {base / t:11.2f}x")
    same = all(_same(r, results["in process"]) for r in results.values())
    print(f"derived results equal to the in-process ones: {same}")
    print(
        f"merge (absorb) per datum of {PER_DATUM} frames: {merge * 1e3:.2f} ms "
        f"({merge / PER_DATUM * 1e6:.0f} us per frame)"
    )
    ratio = base / statistics.median(rows["Dask, 2 workers"])
    print(f"2 workers vs 1: {ratio:.2f}x (target >= {TARGET}x)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
