"""Runs of layout 1, as the code before layout 2 wrote them, read by today's readers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from xsvs_bluesky.export import export_hdf5
from xsvs_bluesky.live import LiveXSVSTable
from xsvs_bluesky.results import RunResults, dynamics_records, records

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "v1"


def v1_docs() -> list[tuple[str, dict[str, Any]]]:
    lines = (FIXTURES / "derived_run_v1.jsonl").read_text().splitlines()
    return [(n, d) for n, d in map(json.loads, lines)]


def test_layout_1_fixture_reads_as_the_layout_1_reader_read_it():
    expected = json.loads((FIXTURES / "derived_run_v1_expected.json").read_text())
    res = RunResults.from_documents(v1_docs())
    assert res.schema_version == 1
    got = records(res.table)
    assert [{**r, "run_uid": None} for r in got] == [
        {**r, "run_uid": None} for r in expected["records"]
    ]
    assert dynamics_records(res.dynamics) == expected["dynamics"]
    assert res.diffusion == expected["diffusion"]
    np.testing.assert_array_equal(res.histograms.values, expected["histograms"])
    np.testing.assert_array_equal(res.histograms["n_bins"].values, expected["n_bins"])
    np.testing.assert_allclose(
        np.nanmean(res.trace.values, axis=1), expected["trace_mean"], rtol=1e-12
    )


def test_layout_1_fixture_exports_and_feeds_the_live_table(tmp_path):
    res = RunResults.from_documents(v1_docs())
    path = export_hdf5(res, tmp_path / "v1.h5")
    assert path.stat().st_size > 0
    out = io.StringIO()
    table = LiveXSVSTable(out, progress=False)
    for name, doc in v1_docs():
        table(name, doc)
    text = out.getvalue()
    assert text.count("[xsvs] exposure") == 3
    assert "dynamics over" in text and "success" in text
