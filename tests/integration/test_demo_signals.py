"""Ctrl-C and SIGTERM at several moments of ``xsvs-bluesky demo``: no data lost.

Each test runs ``python -m xsvs_bluesky.cli demo`` in a subprocess against
the session's Tiled server (``--tiled-uri``, fresh catalogs), with the test
hook ``XSVS_TEST_SIGNAL`` (``xsvs_bluesky.storage._guard``) making the
process signal itself when a given document reaches the raw or derived
run's writer.  Afterwards, read back through Tiled: the raw run is complete
(``success``) or marked ``abort`` with the interruption as its reason, every
frame it announced is readable through Tiled and equal to its HDF5 file,
the files exist, and its derived run has a stop document (``abort`` naming
the interruption, or ``success``).  The process says so in one line and
exits 130 (SIGINT) or 143 (SIGTERM), without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import h5py
import hdf5plugin  # noqa: F401  (the demo's blosc-lz4 frames)
import numpy as np
import pytest
from tiled.queries import Key

import xsvs_bluesky
from xsvs_bluesky.results import load_results

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

FRAMES = 40  # per exposure: 8 exposures, a scan of ~2 s
REASONS = {130: "interrupted (SIGINT, Ctrl-C)", 143: "interrupted (signal SIGTERM)"}
WORDS = {130: "interrupted", 143: "terminated (SIGTERM)"}


def demo_subprocess(catalogs, hook: str) -> subprocess.CompletedProcess[str]:
    """Run ``xsvs-bluesky demo`` on ``catalogs`` with the test hook ``hook``."""
    path = [str(Path(xsvs_bluesky.__file__).parents[1]), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, XSVS_TEST_SIGNAL=hook, TILED_API_KEY=catalogs.api_key)
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    raw, processed = (
        c.uri.rstrip("/").rsplit("/", 1)[-1] for c in (catalogs.raw, catalogs.processed)
    )
    args = [
        "demo", "--tiled-uri", catalogs.uri,
        "--raw-catalog", raw, "--processed-catalog", processed,
        "--external-dir", str(catalogs.external_dir),
        "--backup-dir", str(catalogs.backup_dir),
        "--frames", str(FRAMES), "--no-progress",
        "--figure", str(catalogs.backup_dir.parent / "unused.png"),
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "xsvs_bluesky.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def announced_frames(run) -> dict[str, tuple[Path, int]]:
    """Per stream with StreamDatum: its HDF5 file and the frames announced."""
    streams: dict[str, str] = {}
    files: dict[str, Path] = {}
    found: dict[str, tuple[Path, int]] = {}
    for name, doc in run.documents():
        if name == "descriptor":
            streams[doc["uid"]] = doc["name"]
        elif name == "stream_resource":
            files[doc["uid"]] = Path(urlparse(doc["uri"]).path)
        elif name == "stream_datum":
            stream = streams[doc["descriptor"]]
            _, before = found.get(stream, (None, 0))
            stop = max(before, int(doc["indices"]["stop"]))
            found[stream] = (files[doc["stream_resource"]], stop)
    return found


def check_raw_frames(run) -> int:
    """Every frame announced reads back through Tiled equal to its file's."""
    announced = announced_frames(run)
    assert announced, "no frames announced"
    for stream, (path, n) in announced.items():
        assert path.is_file(), f"{path} of stream {stream} was deleted"
        frames = np.asarray(run[stream]["maxipix"].read())
        assert frames.shape[0] == n, (stream, frames.shape, n)
        with h5py.File(path, "r") as h5:
            on_disk = np.asarray(h5["/entry/data/data"][:n])
        np.testing.assert_array_equal(frames.reshape(on_disk.shape), on_disk)
        assert on_disk.sum() > 0  # speckle, not an empty buffer
    return sum(n for _, n in announced.values())


# hook, exit code, raw run's status; the derived run's is "abort" unless said
POINTS = [
    # early: the first frames of the first exposure are announced
    pytest.param("raw.stream_datum:1:SIGINT", 130, "abort", {"abort"}, id="early"),
    # mid-scan: the fourth of eight exposures starts
    pytest.param("raw.descriptor:4:SIGTERM", 143, "abort", {"abort"}, id="mid"),
    # the scan is over (its stop reaches the raw writer), the analysis may
    # not be: it stops where it is (abort) or had finished (success)
    pytest.param(
        "raw.stop:1:SIGTERM", 143, "success", {"abort", "success"}, id="scan-end"
    ),
    # the derived run's writer is storing its stop: the runs are complete
    pytest.param(
        "derived.stop:1:SIGINT:0.05", 130, "success", {"success"}, id="derived-stop"
    ),
]


@pytest.mark.parametrize(("hook", "code", "raw_status", "derived_status"), POINTS)
def test_a_signal_stops_the_demo_and_keeps_both_runs(
    catalogs, hook, code, raw_status, derived_status
):
    done = demo_subprocess(catalogs, hook)
    assert done.returncode == code, done.stderr
    err = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, err
    assert "WARNING" not in done.stderr, err
    # stdout: no table, nor the RunEngine's "Aborting: ..." line
    assert done.stdout == ""
    # one line says it all (the other is the "acquiring ..." at the start)
    assert len(err) == 2 and err[0].startswith("xsvs-bluesky demo: acquiring"), err
    line = err[-1]
    assert line.startswith(f"xsvs-bluesky demo: {WORDS[code]}; raw run "), line

    (uid,) = list(catalogs.raw)
    run = catalogs.raw[uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == raw_status, stop
    assert f"raw run {uid} stopped {raw_status!r} after" in line
    if raw_status == "abort":
        assert stop["reason"] == REASONS[code]
    frames = check_raw_frames(run)
    assert f"after {frames} frames" in line
    assert frames < 8 * FRAMES if raw_status == "abort" else frames == 8 * FRAMES
    assert f"its HDF5 files are kept in {catalogs.external_dir}" in line

    (derived_uid,) = list(catalogs.processed.search(Key("original_run_uid") == uid))
    derived = catalogs.processed[derived_uid]
    dstop = derived.metadata["stop"]
    assert dstop["exit_status"] in derived_status, dstop
    assert f"derived run {derived_uid} {dstop['exit_status']!r}" in line
    if dstop["exit_status"] == "abort":
        assert dstop["reason"] == REASONS[code]
    results = load_results(derived)
    assert (results.table["n_frames"] <= FRAMES).all()
    if derived_status == {"success"}:
        assert len(results.table) == 8 * 6
        assert set(results.table["n_frames"]) == {FRAMES}
    # stored: nothing left in the backup
    assert line.endswith(f"at {catalogs.uri}")
    assert list(catalogs.backup_dir.glob("*.jsonl")) == []
