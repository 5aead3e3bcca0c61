"""``replay`` and ``reanalyze`` on a small synthetic legacy series and a real Tiled.

The series (``legacy_series.write_series``, into a temporary folder): 3
exposures of 40 gzipped EDF frames, 32 x 40 px, Poisson-gamma speckle of
known contrast beta = 0.25, EDF headers with a frame counter restarting
every 10 frames (sample spots) and epoch times, a mask with one bad column,
and one truncated frame file.
One replay (``--skip-bad-frames``) into module-scoped catalogs is shared by
most tests: every analysis writes ~100 Tiled nodes, so each costs seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from fabio.edfimage import EdfImage
from helpers import fresh_catalogs
from legacy_series import (
    BAD_COLUMN,
    BETA,
    INI_KEYS,
    KBAR,
    SHAPE,
    SPOT,
    T0,
    TIMES,
    write_series,
)
from tiled.queries import Key

from xsvs_bluesky.cli import main
from xsvs_bluesky.core.synthetic import speckle_frames
from xsvs_bluesky.errors import InputFileError, XSVSError
from xsvs_bluesky.legacy import read_frame
from xsvs_bluesky.reanalyze import fetch_documents, reanalyze, rebuild_documents
from xsvs_bluesky.replay import LegacyReplay, find_replays, stream_names
from xsvs_bluesky.results import load_results
from xsvs_bluesky.storage import open_catalogs

pytestmark = pytest.mark.tiled


def cli_options(cats) -> list[str]:
    return [
        "--tiled-uri",
        cats.uri,
        "--api-key",
        cats.api_key,
        "--backup-dir",
        str(cats.backup_dir),
        "--raw-catalog",
        cats.raw.item["id"],
        "--processed-catalog",
        cats.processed.item["id"],
    ]


def run_cli(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


BAD = "img_0054.edf.gz"  # 14th frame of Exp_2


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    ini = write_series(tmp_path_factory.mktemp("legacy"))
    bad = ini.parent / "data" / BAD
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated copy
    return ini


@pytest.fixture(scope="module")
def shared(tiled_server, series):
    """One replay of the series (16 frames per datum) into module catalogs."""
    with pytest.raises(InputFileError, match=BAD):
        LegacyReplay(series)  # checked before any run exists
    with fresh_catalogs(tiled_server) as cats:
        job = LegacyReplay(series, frames_per_datum=16, skip_bad=True)
        yield cats, job, job.run(cats)


def good_files(series: Path) -> list[Path]:
    files = sorted((series.parent / "data").glob("img_*.edf.gz"))
    return [f for f in files if f.name != BAD]


def test_raw_run_layout_mirrors_the_simulated_maxipix(shared, series):
    cats, job, result = shared
    assert not result.duplicate and result.n_frames == (40, 39, 40)
    run = cats.raw[result.raw_uid]
    assert list(run) == stream_names(3) == ["exposure_0", "exposure_1", "exposure_2"]
    start, stop = run.metadata["start"], run.metadata["stop"]
    assert start["plan_name"] == "xsvs_series" and start["sample_name"] == "latex_"
    assert start["detectors"] == ["maxipix"] and start["xsvs_acquisition"] == "fly"
    assert start["xsvs_exposure_times"] == TIMES
    assert start["xsvs_frames_per_exposure"] == [40, 39, 40]
    assert start["xsvs_geometry"]["center_x"] == 20.5
    assert start["xsvs_geometry"]["shape"] == list(SHAPE)
    assert start["xsvs_partitions"] == {
        "q1": 6e-4,
        "q2": 1.6e-3,
        "qs": 5e-4,
        "dq": 2.5e-4,
    }
    (mask,) = start["xsvs_masks"]
    assert (
        mask["sha256"]
        == hashlib.sha256((series.parent / "mask.edf").read_bytes()).hexdigest()
    )
    assert start["xsvs_flat_field"] is None
    assert start["xsvs_legacy"]["ini_text"] == series.read_text()
    assert start["xsvs_replay"]["content_hash"] == job.content_hash
    assert start["xsvs_replay"]["skip_bad_frames"] is True
    headers = start["xsvs_edf_headers"]
    assert [h["spots"]["frames"] for h in headers] == [[SPOT] * 4, [10, 9, 10, 10]] + [
        [SPOT] * 4
    ]
    assert headers[1]["start_timestamp"] == pytest.approx(T0 + 100)
    assert headers[2]["end_timestamp"] == pytest.approx(T0 + 200 + 3.9)
    assert headers[0]["frame_period"] == pytest.approx(0.1, rel=1e-6)
    assert headers[0]["count_time"] == TIMES[0]
    assert stop["exit_status"] == "success" and BAD in stop["reason"]
    assert stop["num_events"] == dict(zip(stream_names(3), [40, 39, 40], strict=True))
    assert [(e, Path(f).name) for e, f, _ in result.skipped] == [("Exp_2", BAD)]
    for name, t_e in zip(stream_names(3), TIMES, strict=True):
        desc = run[name].metadata
        config = desc["configuration"]["maxipix"]["data"]
        assert config["maxipix-acquire_time"] == t_e
        assert config["maxipix-acquire_period"] == pytest.approx(0.1, rel=1e-6)
        key = desc["data_keys"]["maxipix"]
        assert key["dtype_numpy"] == "<u2" and key["shape"] == [1, *SHAPE]
        assert key["external"] == "STREAM:"


def test_frames_read_back_through_tiled_equal_the_edf_frames(shared, series):
    cats, job, result = shared
    run = cats.raw[result.raw_uid]
    files = good_files(series)
    bounds = [0, 40, 79, 119]
    for e, name in enumerate(stream_names(3)):
        stored = run[name]["maxipix"].read()
        n = bounds[e + 1] - bounds[e]
        assert stored.dtype == np.uint16 and stored.shape == (n, 1, *SHAPE)
        expected = np.stack([read_frame(f) for f in files[bounds[e] : bounds[e + 1]]])
        np.testing.assert_array_equal(stored[:, 0], expected)
    with h5py.File(result.files[0], "r") as f:
        data = f["/entry/data/data"]
        assert data.chunks == (1, *SHAPE) and "32001" in data._filters  # Blosc
        names = f["/entry/instrument/NDAttributes/source_file"][:3]
        assert [n.decode() for n in names] == [p.name for p in files[:3]]


def test_derived_run_is_linked_and_recovers_the_known_contrast(shared):
    cats, _, result = shared
    found = cats.processed.search(Key("original_run_uid") == result.raw_uid)
    assert list(found) == list(result.derived_uids) and len(found) == 1
    derived = found.values().first()
    assert derived.metadata["stop"]["exit_status"] == "success"
    assert derived.metadata["start"]["xsvs"]["masks"][0]["name"] == "mask.edf"
    res = load_results(derived)
    np.testing.assert_allclose(res.exposure_times, TIMES)
    assert list(res.n_frames) == [40, 39, 40]
    beta, err = res.matrix("beta"), res.matrix("beta_err")
    assert np.all(np.abs(beta - BETA) < 4.5 * err), (beta, err)
    # the bad column is masked: kbar stays near KBAR although it holds 11810
    assert np.all(np.abs(res.matrix("kbar") - KBAR) < 0.1)


def test_documents_rebuilt_without_the_exporter_match_the_exported_ones(shared):
    cats, _, result = shared
    run = cats.raw[result.raw_uid]
    exported, rebuilt = fetch_documents(run), rebuild_documents(run)

    def frames(docs):
        resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
        return sorted(
            (
                resources[d["stream_resource"]]["uri"],
                d["indices"]["start"],
                d["indices"]["stop"],
            )
            for n, d in docs
            if n == "stream_datum"
        )

    assert frames(exported) == frames(rebuilt) and len(frames(rebuilt)) == 3
    descriptors = [d for n, d in rebuilt if n == "descriptor"]
    assert [d["name"] for d in descriptors] == stream_names(3)
    assert rebuilt[0][1]["uid"] == rebuilt[-1][1]["run_start"] == result.raw_uid


@pytest.mark.slow  # writes one more derived run (~140 Tiled requests)
def test_second_replay_is_detected_and_force_makes_a_new_run(shared, series):
    cats, _, result = shared
    out_dir = Path(cats.external_dir) / "cli"
    code, out, err = run_cli(
        "replay",
        series,
        *cli_options(cats),
        "--output-dir",
        out_dir,
        "--skip-bad-frames",
    )
    assert code == 0, err
    assert out.count("\n") == 1 and f"raw run {result.raw_uid}" in out
    assert "nothing written" in out
    # no run folder: only the lock of the series (--tiled-uri: in the output folder)
    assert [p.name for p in out_dir.iterdir()] == [".xsvs-locks"]
    assert find_replays(cats.raw, result.content_hash) == [result.raw_uid]
    code, out, err = run_cli(
        "replay",
        series,
        *cli_options(cats),
        "--output-dir",
        out_dir,
        "--force",
        "--skip-bad-frames",
        "--format",
        "json",
        "--no-progress",
    )
    assert code == 0, err
    records = json.loads(out)
    new_raw = records[0]["raw_uid"]
    assert new_raw != result.raw_uid and len(records) == 3 * 3
    assert sorted(find_replays(cats.raw, result.content_hash)) == sorted(
        [result.raw_uid, new_raw]
    )
    assert len(list((out_dir / new_raw).glob("exposure_*.h5"))) == 3


@pytest.mark.slow  # writes one more derived run (~140 Tiled requests)
def test_reanalyze_makes_a_new_derived_run_of_the_same_raw_run(shared):
    cats, _, result = shared
    code, out, err = run_cli(
        "reanalyze",
        result.raw_uid[:8],
        *cli_options(cats),
        "--estimator",
        "moments",
        "--dq",
        "0.0002",
        "--frames",
        "tiled",
        "--format",
        "json",
        "--no-progress",
    )
    assert code == 0, err
    records = json.loads(out)
    assert {r["estimator"] for r in records} == {"moments"}
    assert {r["raw_uid"] for r in records} == {result.raw_uid}
    assert [r["n_frames"] for r in records[::3]] == [40, 39, 40]
    derived_uid = records[0]["run_uid"]
    start = cats.processed[derived_uid].metadata["start"]
    assert start["original_run_uid"] == result.raw_uid
    assert start["xsvs"]["estimator"] == "moments"
    assert start["xsvs"]["partitions"]["half_width"] == pytest.approx(2e-4)
    assert start["xsvs"]["partitions"]["q1"] == pytest.approx(6e-4)  # kept
    beta = np.array([r["beta"] for r in records])
    beta_err = np.array([r["beta_err"] for r in records])
    assert np.all(np.abs(beta - BETA) < 4.5 * beta_err)
    linked = cats.processed.search(Key("original_run_uid") == result.raw_uid)
    assert {derived_uid, *result.derived_uids} <= set(linked)


def test_replays_of_lists_every_run_with_its_analyses_in_two_searches(shared):
    import httpx

    from xsvs_bluesky.replay._catalog import replays_of

    cats, job, result = shared
    if len(find_replays(cats.raw, job.content_hash)) < 2:  # run alone
        job.run(cats, force=True)
    sent: list[str] = []
    send = httpx.Client.send

    def counting(client, request, **kwargs):
        sent.append(request.url.path)
        return send(client, request, **kwargs)

    httpx.Client.send = counting  # type: ignore[method-assign,assignment]
    try:
        runs = replays_of(cats, job.content_hash)
    finally:
        httpx.Client.send = send  # type: ignore[method-assign]
    assert len(sent) == 2, sent  # the raw runs, then all their derived runs
    assert len(runs) >= 2 and runs[0].uid == result.raw_uid
    for run in runs:  # the same as one search per raw run
        found = cats.processed.search(Key("start.original_run_uid") == run.uid)
        expected = {
            (str(k), (v.metadata.get("stop") or {}).get("exit_status"))
            for k, v in found.items()
        }
        assert set(run.derived) == expected and expected
        assert run.complete and run.analysed


def test_reanalyze_refuses_unknown_or_derived_runs(shared):
    cats, _, result = shared
    code, out, err = run_cli("reanalyze", "fffff", *cli_options(cats))
    assert code == 2 and out == "" and "no raw run 'fffff'" in err
    with pytest.raises(XSVSError, match="bogus"):
        reanalyze(cats, result.raw_uid, estimator="bogus")


def bad_inputs(root: Path) -> list[tuple[str, Path, str]]:
    """(case, INI, expected message part) of inputs that must fail up front."""
    cases: list[tuple[str, Path, str]] = []
    for case in ("missing-frame", "missing-mask", "bad-q", "bad-ini"):
        ini = write_series(root / case, n_frames=4)
        if case == "missing-frame":
            (ini.parent / "data" / "img_0006.edf.gz").unlink()
            cases.append((case, ini, "img_0006.edf.gz"))
        elif case == "missing-mask":
            (ini.parent / "mask.edf").unlink()
            cases.append((case, ini, "mask"))
        elif case == "bad-q":
            ini.write_text(ini.read_text().replace("q2 = 0.0016", "q2 = 0.0003"))
            cases.append((case, ini, "q"))
        else:
            ini.write_text(ini.read_text().replace("sddist = 2140\n", ""))
            cases.append((case, ini, "sddist"))
    return cases


def test_bad_inputs_leave_nothing_written(tiled_server, tmp_path):
    with fresh_catalogs(tiled_server) as cats:
        out_dir = tmp_path / "h5"
        for case, ini, needle in bad_inputs(tmp_path):
            code, out, err = run_cli(
                "replay", ini, *cli_options(cats), "--output-dir", out_dir
            )
            assert code == 2, (case, out, err)
            assert out == "" and len(err.strip().splitlines()) == 1, (case, err)
            assert needle in err, (case, err)
        assert len(cats.raw) == 0 and len(cats.processed) == 0
        assert not out_dir.exists()


def test_output_dir_the_data_folders_server_cannot_read_is_refused(tmp_path):
    """The embedded server reads only <data-dir>/external: an --output-dir
    elsewhere is refused in one line before any file or run is written (its
    frames could not be read back through Tiled)."""
    ini = write_series(tmp_path / "series", n_frames=2)
    data, outside = tmp_path / "xsvs-data", tmp_path / "elsewhere"
    code, out, err = run_cli(
        "replay", ini, "--data-dir", data, "--output-dir", outside, "--no-progress"
    )
    assert code == 2 and out == "", err
    (line,) = [ln for ln in err.splitlines() if "error" in ln]
    assert f"the output folder {outside} is outside the folders" in line
    assert f"give a folder under {data.resolve() / 'external'}" in line
    assert not outside.exists()
    with open_catalogs(data_dir=data) as cats:
        assert len(cats.raw) == 0 and len(cats.processed) == 0
    # under <data-dir>/external it is served, and the frames read back
    inside = data / "external" / "mine"
    code, out, err = run_cli(
        "replay", ini, "--data-dir", data, "--output-dir", inside, "--no-progress"
    )
    assert code == 0, err
    with open_catalogs(data_dir=data) as cats:
        (uid,) = list(cats.raw)
        assert cats.raw[uid]["exposure_0"]["maxipix"].read().shape == (2, 1, *SHAPE)
    assert (inside / uid / "exposure_0.h5").is_file()


def test_each_warning_is_printed_once(tmp_path):
    """A mask of the opposite polarity leaves a partition empty: replay checks
    the inputs, then analyses (and refits after every exposure), and each
    warning, or repeated log warning, is printed once."""
    import subprocess
    import sys

    import xsvs_bluesky

    ini = write_series(tmp_path / "series", n_frames=4)
    mask = np.ones(SHAPE, np.int8)
    mask[:, :8] = 0  # marks the good pixels: 80 % "bad"
    EdfImage(data=mask).write(str(ini.parent / "mask.edf"))
    source = str(Path(xsvs_bluesky.__file__).parents[1])
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "xsvs_bluesky.cli", "replay", str(ini)]
        + ["--data-dir", str(tmp_path / "xsvs-data"), "--no-progress"],
        env=dict(os.environ, PYTHONPATH=path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    warned = [ln for ln in lines if "warning" in ln.lower()]
    assert len(warned) == len(set(warned)), done.stderr
    assert sum("opposite polarity" in ln for ln in lines) == 1, done.stderr
    assert sum("q partitions hold no pixel" in ln for ln in lines) == 1


def test_failure_mid_replay_marks_the_run_failed_and_keeps_its_files(
    tiled_server, tmp_path
):
    """The raw run is in Tiled: its frames stay until the run is removed.

    The next replay reports the failed run, removes it from Tiled, then its
    files, and replays the series anew.
    """
    ini = write_series(tmp_path / "series", n_frames=20)
    seen = []

    def broken(name, doc):
        seen.append(name)
        if name == "stream_datum":  # the first block of frames is written
            raise OSError("disk full")

    with fresh_catalogs(tiled_server) as cats:
        job = LegacyReplay(ini, frames_per_datum=10)
        with pytest.raises(OSError, match="disk full"):
            job.run(cats, output_dir=tmp_path / "h5", extra_targets=[broken])
        (uid,) = list(cats.raw)
        start, stop = cats.raw[uid].metadata["start"], cats.raw[uid].metadata["stop"]
        assert stop["exit_status"] == "fail" and "disk full" in stop["reason"]
        run_dir = tmp_path / "h5" / uid
        assert start["xsvs_replay"]["run_dir"] == str(run_dir.resolve())
        assert [p.name for p in run_dir.iterdir()] == ["exposure_0.h5"]  # kept
        assert seen == [
            "start",
            "descriptor",
            "stream_resource",
            "stream_datum",
            "stop",
        ]
        assert find_replays(cats.raw, job.content_hash) == []
        code, out, err = run_cli(
            "replay", ini, *cli_options(cats), "--output-dir", tmp_path / "h5"
        )
        assert code == 0, err
        assert f"found partial raw run {uid} ('fail'; frames kept in {run_dir}" in err
        assert "removed it and its files" in err
        assert not run_dir.exists() and uid not in cats.raw
        (new,) = find_replays(cats.raw, job.content_hash)
        assert list(cats.raw) == [new]
        assert len(list((tmp_path / "h5" / new).glob("exposure_*.h5"))) == 3


def test_stream_names_are_those_of_the_simulated_plan():
    from xsvs_bluesky.sim import stream_names as sim_names

    for n in (1, 3, 10, 11, 120):
        assert stream_names(n) == sim_names(n)


def test_whole_but_unusual_gzip_files_pass_the_checks(tmp_path):
    import gzip

    ini = write_series(tmp_path / "series", n_frames=4)
    path = ini.parent / "data" / "img_0002.edf.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw) + b"\0" * 16)  # zero padding: readable
    job = LegacyReplay(ini)
    assert job.scan.skipped_records() == []
    assert job.scan.n_files == 12 and job.shape == SHAPE
    path.write_bytes(gzip.compress(raw)[:-9])  # truncated
    with pytest.raises(InputFileError, match=r"\[Exp_1\] 1 of 4 .*img_0002"):
        LegacyReplay(ini)


XPCS_BETA, XPCS_KBAR, XPCS_FRAMES = 0.3, 0.5, 125
XPCS_FACTORS = [1, 3, 10]  # bin start 0, bin stop 1, bin step 3


def write_xpcs_series(root: Path) -> Path:
    """An XPCS-mode INI: one [Exp_bins] series of independent speckle frames."""
    data = root / "data"
    data.mkdir(parents=True)
    mask = np.zeros(SHAPE, np.int8)
    mask[:, BAD_COLUMN] = 1
    EdfImage(data=mask).write(str(root / "mask.edf"))
    frames = speckle_frames(XPCS_FRAMES, SHAPE, XPCS_KBAR, XPCS_BETA, rng=77)
    frames[:, :, BAD_COLUMN] = 11810
    for i, frame in enumerate(frames):
        header = {"acq_frame_nb": str(i), "time_of_day": f"{T0 + 1e-3 * i:.6f}"}
        EdfImage(data=frame, header=header).write(str(data / f"x_{i + 1:04d}.edf"))
    lines = ["[Main]", "mode = XPCS", "data dir = data/", "mask = mask.edf"]
    lines += [f"{k} = {v}" for k, v in INI_KEYS.items()]
    lines += [
        "",
        "[Exp_bins]",
        "data prefix = x_",
        "data suffix = .edf",
        "first data file = 1",
        f"last data file = {XPCS_FRAMES}",
        "exp time = 0.001",
        "bin start = 0",
        "bin stop = 1",
        "bin step = 3",
    ]
    ini = root / "xpcs_input.txt"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def test_xpcs_mode_series_replays_to_the_analyze_results(tiled_server, tmp_path):
    """One raw stream of the frames as acquired, binned by the analysis.

    The derived run (as replay prints it and as ``results`` reads it back
    from Tiled) equals ``analyze``'s table of the same INI file record by
    record; 16 frames per datum, so bins straddle the datums.
    """
    import math

    ini = write_xpcs_series(tmp_path / "xpcs")
    with fresh_catalogs(tiled_server) as cats:
        where = cli_options(cats)
        code, out, err = run_cli(
            "replay",
            ini,
            *where,
            "--output-dir",
            Path(cats.external_dir) / "xpcs",  # the server may read it
            "--format",
            "json",
            "--no-progress",
        )
        assert code == 0, err
        assert "125 frames of 1 series, analysed as 3 exposures replayed" in err
        replayed = json.loads(out)
        raw_uid, run_uid = replayed[0]["raw_uid"], replayed[0]["run_uid"]
        code, out, err = run_cli("results", run_uid, *where, "--format", "json")
        assert code == 0, err
        stored = json.loads(out)
        raw = cats.raw[raw_uid]
        start = raw.metadata["start"]
        assert list(raw) == ["exposure_0"]  # the frames once, as acquired
        assert start["xsvs_binning"] == {"exposure_0": XPCS_FACTORS}
        assert start["xsvs_exposure_times"] == [1e-3]
        assert start["xsvs_frames_per_exposure"] == [XPCS_FRAMES]
        assert start["xsvs_legacy"]["mode"] == "XPCS"
        frames = raw["exposure_0"]["maxipix"].read()
        assert frames.shape == (XPCS_FRAMES, 1, *SHAPE) and frames.dtype == np.uint16
        derived = cats.processed[run_uid].metadata["start"]["xsvs"]
        assert derived["binning"] == {"exposure_0": XPCS_FACTORS}
        # a re-analysis bins the same way (the factors are in the raw run)
        again = reanalyze(cats, raw_uid)
        assert again.baseline_uid == run_uid and len(again.changes) == 1
        assert [r.n_frames for r in again.results] == [125, 41, 12]
        beta = np.concatenate([r.beta for r in again.results])
        np.testing.assert_allclose(beta, [r["beta"] for r in stored], rtol=1e-9)
    code, out, err = run_cli("analyze", ini, "--format", "json", "--no-progress")
    assert code == 0, err
    offline = json.loads(out)
    n_q = len(offline) // len(XPCS_FACTORS)
    assert [r["n_frames"] for r in offline[::n_q]] == [125, 41, 12]
    for got, what in ((replayed, "replay"), (stored, "results")):
        assert len(got) == len(offline), what
        for a, b in zip(got, offline, strict=True):
            assert a.keys() == b.keys(), what
            for key in a.keys() - {"run_uid", "raw_uid"}:
                x, y = a[key], b[key]
                if isinstance(x, float) and isinstance(y, float):
                    assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-300), (
                        what,
                        key,
                        x,
                        y,
                    )
                else:
                    assert x == y, (what, key, x, y)
    # independent frames: the sum of n has the contrast beta / n
    for rec in stored:
        n = round(rec["exposure_time"] / 1e-3)
        assert n in XPCS_FACTORS
        assert abs(rec["beta"] - XPCS_BETA / n) < 4.5 * rec["beta_err"], rec
