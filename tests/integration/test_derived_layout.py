"""Layout 2 of a derived run in a real Tiled server, and layout-1 runs read back.

- the derived run of a small synthetic scan, written by ``make_tiled_writer``
  (the page writer) and, beside it, by a default ``TiledWriter``
  (``max_array_size=16``): both read by a plain ``tiled.client`` with no
  warning (``filterwarnings = error``), numeric columns of the right dtype,
  at most 15 nodes, the same results as the documents in memory;
- the committed layout-1 fixture (written by the code before layout 2),
  stored as that code stored it (``TiledWriter(max_array_size=0)``), read
  back by today's readers: the same table, dynamics and arrays as the
  layout-1 reader made of it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xsvs_bluesky.derived import RESULT_FLAGS, RESULTS, STREAMS
from xsvs_bluesky.results import RunResults, dynamics_records, load_results, records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from derived_docs import N_Q, TIMES, derived_run  # noqa: E402

pytestmark = pytest.mark.tiled

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v1"


def _count_nodes(node: Any) -> int:
    """Nodes under ``node``, itself included (containers walked)."""
    from tiled.client.container import Container

    total = 1
    base = getattr(node, "base", node)
    if isinstance(base, Container):
        for child in base.values():
            total += _count_nodes(child)
    return total


@pytest.fixture(scope="module")
def docs() -> list[tuple[str, dict[str, Any]]]:
    return derived_run()


def _write(writer: Any, docs: list[tuple[str, dict[str, Any]]]) -> None:
    for name, doc in docs:
        writer(name, doc)


@pytest.fixture
def plain(catalogs: Any) -> Iterator[Any]:
    """A separate plain tiled client of the processed catalog."""
    from tiled.client import from_uri

    client = from_uri(catalogs.uri, api_key=catalogs.api_key)
    try:
        yield client[catalogs.processed.item["id"]]
    finally:
        client.context.close()


def test_page_writer_run_reads_cleanly_in_a_plain_client(catalogs, plain, docs):
    from xsvs_bluesky.storage import make_tiled_writer

    _write(make_tiled_writer(catalogs.processed), docs)
    uid = docs[0][1]["uid"]
    run = plain[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["start"]["xsvs"]["schema_version"] == 2
    assert set(run) == {s.name for s in STREAMS}
    assert _count_nodes(run) <= 15
    results = run["results"].read()  # warnings are errors here
    assert results.sizes["time"] == len(TIMES) * N_Q
    assert results["beta"].dtype == np.float64
    assert results["flags"].dtype == np.int64
    assert results["exposure_index"].dtype == np.int64
    np.testing.assert_allclose(
        np.unique(results["exposure_time"].values), sorted(TIMES)
    )
    desc = run["results"].metadata
    assert desc["hints"]["xsvs"]["fields"] == list(RESULTS.hints)
    assert desc["data_keys"]["flags"]["flag_names"] == list(RESULT_FLAGS)
    assert desc["data_keys"]["exposure_time"]["units"] == "s"
    images = run["images"].read()
    assert images["mean_image"].dims == ("time", "col")
    for stream in run:
        run[stream].read()  # every stream, no warning
    stored = load_results(run)
    memory = RunResults.from_documents(docs)
    assert records(stored.table) == records(memory.table)
    np.testing.assert_array_equal(stored.histograms.values, memory.histograms.values)
    assert stored.trace is not None and memory.trace is not None
    assert stored.images is not None and memory.images is not None
    np.testing.assert_array_equal(stored.trace.values, memory.trace.values)
    np.testing.assert_array_equal(stored.images.values, memory.images.values)
    assert dynamics_records(stored.dynamics) == dynamics_records(memory.dynamics)
    assert stored.diffusion == memory.diffusion


def test_default_tiled_writer_stores_layout_2_as_tables(catalogs, plain, docs):
    from bluesky_tiled_plugins import TiledWriter

    _write(TiledWriter(catalogs.processed), docs)  # max_array_size=16
    run = plain[docs[0][1]["uid"]]
    assert _count_nodes(run) <= 15
    results = run["results"].read()
    assert results["beta"].dtype == np.float64  # not text
    assert run["images"].read()["mean_image"].ndim == 2
    stored = load_results(run)
    memory = RunResults.from_documents(docs)
    assert records(stored.table) == records(memory.table)
    np.testing.assert_array_equal(stored.counts.values, memory.counts.values)


def _v1_docs() -> list[tuple[str, dict[str, Any]]]:
    lines = (FIXTURES / "derived_run_v1.jsonl").read_text().splitlines()
    return [tuple(json.loads(line)) for line in lines]


def _check_v1(res: RunResults) -> None:
    expected = json.loads((FIXTURES / "derived_run_v1_expected.json").read_text())
    assert res.schema_version == 1
    got = records(res.table)
    for row in got:
        row["run_uid"] = None
    for row in expected["records"]:
        row["run_uid"] = None
    assert got == expected["records"]
    assert dynamics_records(res.dynamics) == expected["dynamics"]
    assert res.diffusion == expected["diffusion"]
    np.testing.assert_array_equal(res.histograms.values, expected["histograms"])
    np.testing.assert_array_equal(res.counts.values, expected["counts"])
    np.testing.assert_array_equal(res.intensity.values, expected["intensity"])
    np.testing.assert_allclose(
        np.nanmean(res.trace.values, axis=1), expected["trace_mean"], rtol=1e-12
    )
    assert res.images is not None
    np.testing.assert_allclose(
        res.images.values.sum(axis=(1, 2)), expected["image_sums"], rtol=1e-12
    )


def test_layout_1_fixture_stored_by_the_old_writer_reads_back(catalogs):
    from bluesky_tiled_plugins import TiledWriter

    docs = _v1_docs()
    _check_v1(RunResults.from_documents(docs))
    _write(TiledWriter(catalogs.processed, max_array_size=0), docs)
    run = catalogs.processed[docs[0][1]["uid"]]
    _check_v1(load_results(run))
