"""RunResults from in-memory documents; records, CSV, JSON, text; file exports."""

from __future__ import annotations

import io
import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
from derived_docs import N_FRAMES, N_Q, TIMES, beta_true, derived_run, raw_run

from xsvs_bluesky.derived import STREAMS
from xsvs_bluesky.export import export_csv, export_hdf5, export_results
from xsvs_bluesky.results import (
    RECORD_KEYS,
    RunNotFoundError,
    RunResults,
    format_dynamics,
    format_table,
    records,
    to_csv,
    to_json,
)


@pytest.fixture(scope="module")
def docs():
    return derived_run()


@pytest.fixture(scope="module")
def results(docs) -> RunResults:
    return RunResults.from_documents(docs)


def test_table_is_tidy_with_sensible_beta(results, docs):
    table = results.table
    assert tuple(table.columns) == RECORD_KEYS
    assert len(table) == len(TIMES) * N_Q
    start = docs[0][1]
    assert set(table["run_uid"]) == {start["uid"]}
    assert set(table["raw_uid"]) == {start["original_run_uid"]}
    assert list(table["exposure"]) == [i for i in range(len(TIMES)) for _ in range(N_Q)]
    np.testing.assert_allclose(results.exposure_times, TIMES)
    assert set(table["n_frames"]) == {N_FRAMES}
    assert set(table["estimator"]) == {"mle"}
    truth = np.array([beta_true(t) for t in table["exposure_time"]])
    z = (table["beta"] - truth) / table["beta_err"]
    assert np.all(np.abs(z) < 4.5), z
    np.testing.assert_allclose(table["M"], 1 / table["beta"], rtol=1e-6)
    assert all(isinstance(f, list) for f in table["flags"])
    assert results.metadata["estimator"] == "mle"
    assert results.geometry is not None and results.geometry.shape == (64, 64)


def test_arrays_are_labelled_and_consistent(results):
    hist = results.histograms
    assert hist.dims == ("exposure", "partition", "k")
    np.testing.assert_allclose(hist["exposure_time"], TIMES)
    np.testing.assert_allclose(hist["q"], results.q)
    np.testing.assert_allclose(hist.sum("k"), 1.0, rtol=1e-12)  # P(k) sums to 1
    n_pix = results.matrix("n_pixels")
    counts = results.counts.sum("k").values
    np.testing.assert_array_equal(counts, n_pix * N_FRAMES)
    assert results.histograms_std.shape == hist.shape
    assert results.images is not None
    assert results.images.dims == ("exposure", "y", "x")
    assert results.trace.dims == ("exposure", "frame", "partition")
    assert results.trace.shape == (len(TIMES), N_FRAMES, N_Q)
    # the trace averages to kbar, I(q) (no flat field) equals kbar too
    np.testing.assert_allclose(
        results.trace.mean("frame"), results.matrix("kbar"), rtol=1e-10
    )
    np.testing.assert_allclose(results.intensity, results.matrix("kbar"), rtol=1e-10)
    assert results.intensity.dims == ("exposure", "partition")


def test_dynamics_table_and_diffusion(results):
    dyn = results.dynamics
    assert dyn is not None
    assert list(dyn.columns[:9]) == [
        "partition", "q", "model", "gamma", "gamma_err", "beta0", "beta0_err",
        "D", "D_err",
    ]  # fmt: skip
    assert list(dyn["partition"]) == list(range(N_Q))
    assert set(dyn["model"]) == {"exponential"}
    assert np.all(dyn["gamma"] > 0)
    assert dyn["D"].nunique() == 1
    assert results.diffusion["D"] == dyn["D"].iloc[0]
    text = format_dynamics(dyn)
    assert "Angstrom^2/s" in text and len(text.splitlines()) == 2 + N_Q + 2


def test_dynamics_carry_the_status_and_error_scale_of_d(results, docs):
    """``D_status`` and ``D_error_scale`` as the fit made them (analyze's JSON)."""
    from xsvs_bluesky.core.dynamics import DiffusionFit

    diffusion = results.diffusion
    assert diffusion is not None
    fit = DiffusionFit(
        D=diffusion["D"],
        D_err=diffusion["D_err"],
        exponent=diffusion["q_exponent"],
        exponent_err=diffusion["q_exponent_err"],
        chi2=diffusion["D_chi2"],
        dof=diffusion["D_dof"],
        flags=tuple(f for f in diffusion["D_flags"].split(",") if f),
    )
    assert diffusion["D_status"] == fit.status
    assert isinstance(diffusion["D_status"], str)
    assert diffusion["D_error_scale"] >= 1.0
    dyn = results.dynamics
    assert set(dyn["D_status"]) == {fit.status}
    assert set(dyn["D_error_scale"]) == {diffusion["D_error_scale"]}


def test_runs_written_before_d_status_are_read(docs):
    """A layout-2 run without ``D_status``/``D_error_scale`` still reads."""
    drop = ("D_status", "D_error_scale")
    old = []
    for name, doc in docs:
        doc = dict(doc)
        if name == "descriptor" and doc["name"] == "dynamics":
            doc["data_keys"] = {
                k: v for k, v in doc["data_keys"].items() if k not in drop
            }
        if name == "event_page" and "D_status" in doc["data"]:
            doc["data"] = {k: v for k, v in doc["data"].items() if k not in drop}
        old.append((name, doc))
    res = RunResults.from_documents(old)
    dyn = res.dynamics
    assert dyn is not None and len(dyn) == N_Q
    assert "D_status" not in dyn and "D_error_scale" not in dyn
    new = RunResults.from_documents(docs).diffusion
    assert res.diffusion is not None and new is not None
    assert "D_status" not in res.diffusion and res.diffusion["D"] == new["D"]


def test_records_json_and_csv(results):
    recs = records(results.table)
    assert all(tuple(r) == RECORD_KEYS for r in recs)
    assert recs[5]["beta"] == results.table["beta"].iloc[5]
    assert isinstance(recs[0]["exposure"], int) and isinstance(recs[0]["q"], float)
    assert json.loads(to_json(results.table)) == recs
    back = pd.read_csv(io.StringIO(to_csv(results.table)), float_precision="round_trip")
    assert tuple(back.columns) == RECORD_KEYS
    np.testing.assert_array_equal(back["beta"], results.table["beta"])
    np.testing.assert_array_equal(back["n_pixels"], results.table["n_pixels"])


def test_nan_becomes_null_and_flags_are_strings(results):
    table = results.table.copy()
    table.loc[0, "beta"] = math.nan
    table.at[1, "flags"] = ["boundary", "low-statistics"]
    recs = json.loads(to_json(table))
    assert recs[0]["beta"] is None
    assert recs[1]["flags"] == ["boundary", "low-statistics"]
    assert "boundary;low-statistics" in to_csv(table).splitlines()[2]
    assert " nan " in format_table(table).splitlines()[2] + " "


def test_format_table_one_line_per_row(results):
    lines = format_table(results.table).splitlines()
    rows = [line for line in lines[2:] if line.strip()]
    assert len(rows) == len(TIMES) * N_Q
    first = results.table.iloc[0]
    assert f"{first.beta:.4f} +- {first.beta_err:.4f}" in rows[0]
    assert rows[0].split()[:3] == ["0", "1.000e-03", "4.000e-04"]


def test_from_documents_selects_the_derived_run(docs):
    with pytest.raises(RunNotFoundError):
        RunResults.from_documents(raw_run(n_frames=1))
    uid = docs[0][1]["uid"]
    mixed = raw_run(n_frames=1) + list(docs)
    assert RunResults.from_documents(mixed, uid=uid[:8]).uid == uid
    with pytest.raises(RunNotFoundError, match="nope"):
        RunResults.from_documents(docs, uid="nope")


def test_hdf5_export_round_trip(results, tmp_path):
    path = export_hdf5(results, tmp_path / "run.h5")
    with h5py.File(path, "r") as f:
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry"
        assert entry["beta"].attrs["signal"] == "beta"
        np.testing.assert_array_equal(entry["beta/beta"], results.matrix("beta"))
        np.testing.assert_array_equal(
            entry["beta/beta_errors"], results.matrix("beta_err")
        )
        np.testing.assert_array_equal(entry["beta/exposure_time"], TIMES)
        np.testing.assert_array_equal(
            entry["histograms/probability"], results.histograms.values
        )
        np.testing.assert_array_equal(
            entry["histograms/probability_std"], results.histograms_std.values
        )
        np.testing.assert_array_equal(entry["trace/trace"], results.trace.values)
        np.testing.assert_array_equal(entry["images/mean_image"], results.images.values)
        np.testing.assert_array_equal(
            entry["intensity/intensity"], results.intensity.values
        )
        np.testing.assert_array_equal(
            entry["dynamics/gamma"], results.dynamics["gamma"]
        )
        assert entry["dynamics/D"][()] == results.diffusion["D"]
        assert entry["run_uid"][()].decode() == results.uid
        assert json.loads(entry["metadata/xsvs"][()])["estimator"] == "mle"
        assert set(entry["streams"]) == {s.name for s in STREAMS}
        np.testing.assert_array_equal(
            entry["streams/results/beta_moments"],
            results.streams["results"]["beta_moments"],
        )
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def with_datetime_key(docs):
    """Add a datetime64 key (which HDF5 cannot store) to the progress stream."""
    desc = next(d for n, d in docs if n == "descriptor" and d["name"] == "progress")
    key = {"source": "t", "dtype": "string", "shape": [], "dtype_numpy": "<M8[D]"}
    out = []
    for name, doc in docs:
        if doc is desc:
            doc = {**doc, "data_keys": {**doc["data_keys"], "when": key}}
        elif name == "event_page" and doc["descriptor"] == desc["uid"]:
            when = ["2024-01-01"] * len(doc["seq_num"])
            doc = {**doc, "data": {**doc["data"], "when": when}}
        out.append((name, doc))
    return out


def test_failed_export_leaves_the_old_file_and_no_temporary(results, docs, tmp_path):
    target = export_results(results, "hdf5", tmp_path / "run.h5")
    before = target.read_bytes()
    broken = RunResults.from_documents(with_datetime_key(docs))
    assert broken.streams["progress"]["when"].dtype.kind == "M"
    with pytest.raises(TypeError):
        export_hdf5(broken, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def test_csv_export_round_trip(results, tmp_path):
    path = export_csv(results, tmp_path / "out" / "run.csv")
    back = pd.read_csv(path, float_precision="round_trip")
    np.testing.assert_array_equal(back["beta_err"], results.table["beta_err"])
    assert list(back["run_uid"].unique()) == [results.uid]


def _chunked(values: list, kind=None):
    """Two chunks, the second a slice with an offset (as Arrow files hold)."""
    import pyarrow as pa

    first = pa.array(values[:1], kind)
    second = pa.concat_arrays([first, pa.array(values[1:], kind)])[1:]
    return pa.chunked_array([first, second])


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([1, 2, 3], "int64"),
        ([1, None, 3], "int64"),
        ([0.5, None, 2.0], "float64"),
        ([1.5, 2.5, 3.5], "float32"),
        (["a", None, "c"], None),
        ([True, False, True], None),
    ],
)
def test_arrow_columns_convert_as_pandas_would(values, kind):
    import pyarrow as pa

    from xsvs_bluesky.results._streams import _arrow_numpy

    column = _chunked(values, None if kind is None else pa.type_for_alias(kind))
    got = _arrow_numpy(column)
    expected = pa.table({"c": column}).to_pandas()["c"].to_numpy()
    assert got.dtype == expected.dtype
    assert pd.Series(got).equals(pd.Series(expected))


def test_results_text_and_json_need_no_pandas(results, tmp_path):
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.ipc

    table = pa.table({"seq_num": pa.array([2, 1], pa.int64())})
    with pyarrow.ipc.new_file(str(tmp_path / "t.arrow"), table.schema) as writer:
        writer.write_table(table)
    code = f"""
import sys
import numpy as np
import pyarrow as pa
import pyarrow.ipc
from xsvs_bluesky.results import format_table, table_columns, to_json
from xsvs_bluesky.results._streams import _arrow_numpy
read = pyarrow.ipc.open_file({str(tmp_path / "t.arrow")!r}).read_all()
assert list(_arrow_numpy(read.column("seq_num"))) == [2, 1]
arrays = {{"q": np.ones((1, 2)), "beta": np.ones((1, 2)), "n_pixels": np.ones((1, 2))}}
columns = table_columns("u", None, arrays, ())
format_table(columns)
to_json(columns)
print("pandas" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "False", done.stderr
    # the columns hold the DataFrame's rows: same text, same records
    assert format_table(results.table_columns) == format_table(results.table)
    assert to_json(results.table_columns) == to_json(results.table)
    assert to_csv(results.table_columns) == to_csv(results.table)
