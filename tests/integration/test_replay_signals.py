"""Ctrl-C and SIGTERM at several moments of ``xsvs-bluesky replay``: no data lost.

Each test runs ``python -m xsvs_bluesky.cli replay`` in a subprocess against
the session's Tiled server, with the test hook ``XSVS_TEST_SIGNAL`` (see
``xsvs_bluesky.storage._guard``) making the process signal itself when a
given document reaches the raw or derived run's Tiled writer.  Afterwards
the raw run must be complete (``success``) with its frames readable through
Tiled, or marked ``abort`` with its HDF5 files kept: never a success whose
files are gone.  A second replay of the series must then report what it
found and end with a complete raw run, a successful derived run and the
EDF frames readable back through Tiled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from legacy_series import TIMES, write_series
from test_replay import cli_options, fresh_catalogs, run_cli
from tiled.queries import Key

import xsvs_bluesky
from xsvs_bluesky.legacy import read_frame
from xsvs_bluesky.replay import LegacyReplay, find_replays, stream_names

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

N_FRAMES = 4  # per exposure; one StreamDatum per exposure


def cli_subprocess(hook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m xsvs_bluesky.cli ARGS`` with the test hook ``hook``."""
    # the package under test, wherever the current folder is
    path = [str(Path(xsvs_bluesky.__file__).parents[1]), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, XSVS_TEST_SIGNAL=hook)
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    return subprocess.run(
        [sys.executable, "-m", "xsvs_bluesky.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_frames_read_back(cats, uid: str, ini: Path) -> None:
    """The frames of raw run ``uid`` through Tiled equal the EDF frames."""
    run = cats.raw[uid]
    files = sorted((ini.parent / "data").glob("img_*.edf.gz"))
    for e, name in enumerate(stream_names(len(TIMES))):
        stored = run[name]["maxipix"].read()
        chunk = files[e * N_FRAMES : (e + 1) * N_FRAMES]
        expected = np.stack([read_frame(f) for f in chunk])
        np.testing.assert_array_equal(stored[:, 0], expected)


def derived_states(cats, raw_uid: str) -> list[str | None]:
    found = cats.processed.search(Key("original_run_uid") == raw_uid)
    return [(v.metadata.get("stop") or {}).get("exit_status") for v in found.values()]


# hook, exit code, raw run status afterwards, its derived run stored whole
POINTS = [
    # early: the frames of the second exposure are being announced
    ("raw.stream_datum:2:SIGINT", 130, "abort", False),
    ("raw.stream_datum:2:SIGTERM", 143, "abort", False),
    # late: replay stores the analysis first, then gives the raw writer its
    # stop; a signal while the derived run is written (at its results
    # stream, inside its writer's stop) or right after it leaves the raw run
    # without its stop: marked abort, frames kept, replaced by the next replay
    ("derived.descriptor:3:SIGTERM", 143, "abort", False),
    ("derived.stop:1:SIGINT:0.05", 130, "abort", False),
    ("derived.stop:1:SIGTERM", 143, "abort", False),
    # last: everything is stored when the signal comes
    ("raw.stop:1:SIGINT", 130, "success", True),
]


@pytest.mark.parametrize(("hook", "code", "raw_status", "analysed"), POINTS)
def test_signal_keeps_the_frames_and_the_next_replay_completes_the_series(
    tiled_server, tmp_path, hook, code, raw_status, analysed
):
    ini = write_series(tmp_path / "series", n_frames=N_FRAMES)
    with fresh_catalogs(tiled_server) as cats:
        out_dir = Path(cats.external_dir) / "h5"  # the server may read it
        done = cli_subprocess(
            hook, "replay", str(ini), *cli_options(cats), "--output-dir", str(out_dir)
        )
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        (uid,) = list(cats.raw)
        stop = cats.raw[uid].metadata.get("stop") or {}
        assert stop.get("exit_status") == raw_status, (stop, done.stderr)
        run_dir = out_dir / uid
        files = sorted(p.name for p in run_dir.glob("*.h5"))
        assert files, f"the frames of raw run {uid} were deleted: {done.stderr}"
        assert f"HDF5 files are kept in {run_dir.resolve()}" in done.stderr
        if raw_status == "success":
            assert files == [f"{s}.h5" for s in stream_names(len(TIMES))]
            assert_frames_read_back(cats, uid, ini)
            assert ("success" in derived_states(cats, uid)) is analysed
        else:
            assert find_replays(cats.raw, LegacyReplay(ini).content_hash) == []
            # an analysis stored whole before the raw run's stop may say
            # success; the raw run does not, so no replay takes it as done
            assert set(derived_states(cats, uid)) <= {"abort", "success", None}

        code2, out, err = run_cli(
            "replay", ini, *cli_options(cats), "--output-dir", out_dir, "--no-progress"
        )
        assert code2 == 0, err
        if analysed:
            assert "already replayed" in out and list(cats.raw) == [uid], err
            return
        if raw_status == "success":
            assert f"raw run {uid} holds this series complete" in err
            assert list(cats.raw) == [uid] and run_dir.is_dir()
            final = uid
        else:
            assert f"found partial raw run {uid} ('abort'" in err, err
            assert uid not in cats.raw and not run_dir.exists()
            (final,) = list(cats.raw)
        assert cats.raw[final].metadata["stop"]["exit_status"] == "success"
        assert "success" in derived_states(cats, final)
        assert f"raw run      {final}" in out
        assert_frames_read_back(cats, final, ini)

        code3, out, err = run_cli("replay", ini, *cli_options(cats))
        assert code3 == 0 and "already replayed" in out, (out, err)


def test_interrupted_reanalysis_marks_its_derived_run_abort(tiled_server, tmp_path):
    ini = write_series(tmp_path / "series", n_frames=N_FRAMES)
    with fresh_catalogs(tiled_server) as cats:
        first = LegacyReplay(ini).run(cats)
        done = cli_subprocess(
            "derived.descriptor:3:SIGINT",
            "reanalyze",
            first.raw_uid,
            *cli_options(cats),
            "--estimator",
            "moments",
        )
        assert done.returncode == 130, done.stderr
        assert "the raw run is unchanged" in done.stderr
        states = derived_states(cats, first.raw_uid)
        assert sorted(states, key=str) == ["abort", "success"]
        assert cats.raw[first.raw_uid].metadata["stop"]["exit_status"] == "success"
        assert all(path.is_file() for path in first.files)
        assert_frames_read_back(cats, first.raw_uid, ini)
