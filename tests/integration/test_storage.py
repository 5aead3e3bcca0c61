"""Tiled catalogs: lookups, document export, inline arrays, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky import plans as bp
from http_timing import kept_alive_seconds
from ophyd import Component as Cpt
from ophyd import Device, Signal
from tiled.queries import Key

from xsvs_bluesky.errors import XSVSError
from xsvs_bluesky.storage import (
    CATALOG_SPEC,
    ensure_run_catalog,
    make_tiled_writer,
    open_catalogs,
)

pytestmark = pytest.mark.tiled


class _Probe(Device):
    """A scalar and a 3-element array (the array needs max_array_size=0)."""

    counts = Cpt(Signal, value=7, kind="hinted")
    vector = Cpt(Signal, value=np.array([1.5, 2.5, 3.5]), kind="hinted")


def _probe() -> _Probe:
    return _Probe(name="probe")


def _stop_engine(engine: RunEngine) -> None:
    loop = engine.loop
    loop.call_soon_threadsafe(loop.stop)
    engine._th.join(timeout=10)
    loop.close()


def test_catalogs_are_catalogs_of_bluesky_runs(catalogs):
    for cat in (catalogs.raw, catalogs.processed):
        names = {(s.name, s.version) for s in cat.specs}
        assert CATALOG_SPEC in names
        assert type(cat).__name__ == "CatalogOfBlueskyRuns"
    assert catalogs.api_key and "api_key" not in catalogs.uri
    assert catalogs.external_dir is not None and catalogs.external_dir.is_dir()


def test_ensure_run_catalog_adds_the_spec_and_nests(catalogs):
    name = catalogs.raw.item["id"] + "-plain"
    catalogs.client.create_container(name)  # a container without the spec
    fixed = ensure_run_catalog(catalogs.client, name)
    assert CATALOG_SPEC[0] in {s.name for s in fixed.specs}
    assert type(fixed).__name__ == "CatalogOfBlueskyRuns"
    nested = ensure_run_catalog(catalogs.client, f"{name}-group/raw")
    assert type(nested).__name__ == "CatalogOfBlueskyRuns"
    assert f"{name}-group" in catalogs.client
    with pytest.raises(XSVSError, match="empty"):
        ensure_run_catalog(catalogs.client, "/")


def test_lookups_by_index_scan_id_partial_uid_and_query(RE, catalogs):
    det = _probe()
    uid_a = RE(bp.count([det], 2, md={"sample_name": "silica"}))[0]
    uid_b = RE(bp.count([det], 3, md={"sample_name": "latex"}))[0]
    raw = catalogs.raw
    assert raw[-1].start["uid"] == uid_b
    assert raw[-2].start["uid"] == uid_a
    assert raw.scan_id[1].start["uid"] == uid_a
    assert raw[2].start["uid"] == uid_b  # positive int: scan_id
    assert raw[uid_a[:8]].start["uid"] == uid_a  # partial uid
    assert raw.uid[uid_b[:6]].start["uid"] == uid_b
    found = raw.search(Key("start.sample_name") == "latex")
    assert list(found) == [uid_b]
    assert len(raw.search(Key("start.sample_name") == "nothing")) == 0
    table = raw[uid_b]["primary"].read()
    assert list(np.asarray(table["probe_counts"])) == [7, 7, 7]


def test_small_inline_arrays_and_documents_export(RE, catalogs):
    det = _probe()
    (uid,) = RE(bp.count([det], 2))
    vector = np.asarray(catalogs.raw[uid]["primary"]["probe_vector"].read())
    np.testing.assert_array_equal(vector, [[1.5, 2.5, 3.5]] * 2)
    docs = list(catalogs.raw[uid].documents())
    names = [name for name, _ in docs]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("event") == 2 and names.count("descriptor") == 1
    assert docs[0][1]["uid"] == uid


def test_writer_rejects_bad_batch_size(catalogs):
    with pytest.raises(ValueError, match="batch_size"):
        make_tiled_writer(catalogs.raw, batch_size=0)


@pytest.mark.slow
def test_embedded_catalogs_persist_across_restarts(tmp_path):
    data_dir = tmp_path / "xsvs-data"
    engine = RunEngine({})
    try:
        with open_catalogs(data_dir=data_dir) as cats:
            assert cats.server is not None and cats.data_dir == data_dir.resolve()
            assert cats.external_dir == data_dir.resolve() / "external"
            token = engine.subscribe(make_tiled_writer(cats.raw))
            uids = engine(bp.count([_probe()], 4, md={"sample_name": "kept"}))
            assert isinstance(uids, tuple)  # call_returns_result is off
            (uid,) = uids
            engine.unsubscribe(token)
    finally:
        _stop_engine(engine)
    assert (data_dir / "tiled" / "catalog.db").is_file()
    with open_catalogs(data_dir=data_dir) as again:
        run = again.raw[uid]
        assert run.start["sample_name"] == "kept"
        counts = np.asarray(run["primary"]["probe_counts"].read())
        assert list(counts) == [7, 7, 7, 7]
        assert again.raw[-1].start["uid"] == uid


def test_embedded_server_answers_kept_alive_connections_without_delay(tiled_server):
    assert kept_alive_seconds(tiled_server.uri) < 0.035
