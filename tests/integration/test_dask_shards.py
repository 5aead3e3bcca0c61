"""Datums analysed on two Dask worker processes equal one in-process analysis.

A RunEngine with a simulated MAXIPIX (fly scans: HDF5 + StreamResource +
StreamDatum) feeds two XSVSCallbacks: one analyses every frame in process,
the other hands each StreamDatum to a ``distributed.LocalCluster`` of two
single-thread worker processes on 127.0.0.1 and merges their partial
analyses in order.  Every document of the two derived runs must be equal,
bit for bit, but uids, times and the progress stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xsvs_bluesky.callback import DaskShards, XSVSCallback
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.sim import (
    SimMaxipix,
    SpeckleModel,
    directory_path_provider,
    xsvs_series,
)

pytestmark = [pytest.mark.slow]

GEO = Geometry(1.53, 2140.0, 0.055, 32.5, 32.5, (64, 64))
PARTS = {"q1": 0.0016, "q2": 0.0028, "qs": 0.0004, "dq": 0.0002}
FLAT = np.random.default_rng(7).gamma(30.0, 1 / 30.0, size=(64, 64))
Docs = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def shards() -> Iterator[DaskShards]:
    with DaskShards.connect("local:2", memory_limit="600MiB") as pool:
        yield pool


@pytest.fixture
def engine() -> Iterator[Any]:
    from bluesky import RunEngine

    RE = RunEngine({})
    yield RE
    loop = RE.loop
    loop.call_soon_threadsafe(loop.stop)
    RE._th.join(timeout=10)
    loop.close()


def _detector(directory: Path) -> SimMaxipix:
    from ophyd_async.core import init_devices

    model = SpeckleModel(geometry=GEO, efficiency_sigma=0.1, seed=5)
    with init_devices():
        return SimMaxipix(directory_path_provider(directory), model, name="maxipix")


def _keeper(docs: Docs) -> Any:
    def keep(name: str, doc: dict[str, Any]) -> None:
        docs.append((name, doc))

    return keep


_VOLATILE = {"uid", "time", "run_start", "descriptor", "timestamps", "datum_id"}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items()) if k not in _VOLATILE}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float):
        return np.float64(value).tobytes()  # NaN == NaN, bit for bit
    return value


def _comparable(docs: Docs) -> list[Any]:
    """The documents without uids, times and the progress stream."""
    names = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    out = []
    for name, doc in docs:
        if name == "descriptor" and doc["name"] == "progress":
            continue
        if name in ("event", "event_page") and names[doc["descriptor"]] == "progress":
            continue
        if name == "stop":
            doc = {k: v for k, v in doc.items() if k != "num_events"}
        out.append((name, _plain(doc)))
    return out


@pytest.mark.parametrize("flat_field", [None, FLAT], ids=["mle", "mle-weighted"])
def test_two_dask_workers_give_the_in_process_derived_run_bit_for_bit(
    engine: Any, shards: DaskShards, tmp_path: Path, flat_field: Any
) -> None:
    assert shards.n_workers == 2
    local: Docs = []
    sharded: Docs = []
    options = {"geometry": GEO, "flat_field": flat_field, "progress_interval_s": 0}
    cb_local = XSVSCallback(emit=_keeper(local), **options)
    cb_dask = XSVSCallback(emit=_keeper(sharded), shards=shards, **options)
    engine.subscribe(cb_local)
    engine.subscribe(cb_dask)
    det = _detector(tmp_path)
    raw: Docs = []
    engine.subscribe(_keeper(raw))
    before = shards.submitted
    (raw_uid,) = engine(
        xsvs_series(det, [1e-3, 4e-3, 1.6e-2], 70, sample_name="latex",
                    partitions=PARTS, flush_period=0.05, deadtime=0.004)
    )  # fmt: skip
    assert cb_dask.records[raw_uid].exit_status == "success"
    assert not cb_dask.open_runs
    # every StreamDatum went to a worker (one or more per exposure: how many
    # depends on how fast the simulated detector writes)
    datums = sum(1 for name, _ in raw if name == "stream_datum")
    assert datums >= 3 and shards.submitted - before == datums
    assert sum(1 for name, _ in local if name == "stop") == 1
    got, want = _comparable(sharded), _comparable(local)
    assert [n for n, _ in got] == [n for n, _ in want]
    for (name, a), (_, b) in zip(got, want, strict=True):
        assert a == b, name
    results = cb_dask.records[raw_uid].results
    assert [r.n_frames for r in results] == [70, 70, 70]
    for mine, theirs in zip(results, cb_local.records[raw_uid].results, strict=True):
        assert mine.mean_image is not None and theirs.mean_image is not None
        assert mine.mean_image.tobytes() == theirs.mean_image.tobytes()
        assert mine.counts.tobytes() == theirs.counts.tobytes()
        assert mine.trace.tobytes() == theirs.trace.tobytes()


def test_a_file_the_workers_cannot_read_fails_the_run_naming_it(
    engine: Any, shards: DaskShards, tmp_path: Path
) -> None:
    from xsvs_bluesky.callback import FrameAccess

    sharded: Docs = []
    elsewhere = tmp_path / "not-mounted"
    elsewhere.mkdir()
    access = FrameAccess.build(path_map=[f"{tmp_path / 'data'}={elsewhere}"])
    short = DaskShards(shards.client, read_timeout_s=0.5)
    cb = XSVSCallback(
        emit=_keeper(sharded), geometry=GEO, shards=short, frame_access=access
    )
    engine.subscribe(cb)
    (tmp_path / "data").mkdir()
    det = _detector(tmp_path / "data")
    (raw_uid,) = engine(xsvs_series(det, [1e-3], 20, sample_name="x", partitions=PARTS))
    record = cb.records[raw_uid]
    assert record.exit_status == "fail"
    assert str(elsewhere) in record.reason and "Dask worker" in record.reason
    assert sharded[-1][0] == "stop" and sharded[-1][1]["exit_status"] == "fail"
