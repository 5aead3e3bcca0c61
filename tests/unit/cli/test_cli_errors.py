"""Bad input to every subcommand: exit code 2, one error line, no traceback.

Each case runs ``xsvs_bluesky.cli.main`` in-process; two run the console
entry point in a fresh interpreter.  Where argparse rejects the arguments it
prints its usage (possibly wrapped over several lines) before the error line;
everything else is exactly one line on stderr and nothing on stdout.  None of
these cases needs a Tiled server: a server that is not there, a folder
without Tiled data or a refused connection is the error under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import xsvs_bluesky
from xsvs_bluesky.cli import SUBCOMMANDS, main

#: a [Main] section with one bad value (sddist) and one exposure
BAD_VALUE_INI = """\
[Main]
data dir = data/
mask = mask.edf
wavelength = 1.53
cenx = 20.5
ceny = 16.5
pix = 0.055
sddist = 2.1e3mm
q1 = 0.0006
q2 = 0.0016
qs = 0.0005
dq = 0.00025

[Exp_1]
data prefix = img_
data suffix = .edf.gz
first data file = 1
last data file = 3
exp time = 0.001
"""

#: placeholders in the cases, made in tmp_path by the ``paths`` fixture
INI = "{ini}"  # the INI above (bad sddist)
MISSING = "{missing}"  # no such file
FOLDER = "{folder}"  # an existing folder
NODATA = "{nodata}"  # a folder that holds no Tiled data
A_FILE = "{file}"  # a plain file where a folder is expected

#: (command, arguments, text the error line must contain)
CASES: list[tuple[str, list[str], str]] = [
    # -- analyze
    ("analyze", [INI, "--bogus"], "unrecognized arguments: --bogus"),
    ("analyze", [INI, "--estimator", "magic"], "estimator 'magic' is unknown"),
    ("analyze", [INI, "--flat-field", "nope"], "flat-field mode 'nope' is unknown"),
    ("analyze", [INI, "--format", "xml"], "invalid choice: 'xml'"),
    ("analyze", [INI, "--threads", "-1"], "--threads: -1 must be >= 0"),
    ("analyze", [INI, "--frames-per-exposure", "0"], "0 must be >= 1"),
    ("analyze", [INI, "--center-frames", "-3"], "-3 must be >= 1"),
    (
        "analyze",
        [INI, "--dynamics-model", "cubic"],
        "dynamics model 'cubic' is unknown",
    ),
    ("analyze", [], "the following arguments are required: INI"),
    ("analyze", [MISSING], "INI file not found"),
    ("analyze", [FOLDER], "is a folder, not an INI file"),
    ("analyze", [INI], "[Main] sddist = '2.1e3mm': not a number"),
    # -- replay: the INI is read before any server starts
    ("replay", [INI, "--compression", "zip"], "invalid choice: 'zip'"),
    ("replay", [INI, "--threads", "-2"], "--threads: -2 must be >= 0"),
    ("replay", [MISSING, "--data-dir", NODATA], "INI file not found"),
    ("replay", [FOLDER, "--data-dir", NODATA], "is a folder, not an INI file"),
    ("replay", [INI, "--data-dir", NODATA], "sddist = '2.1e3mm'"),
    ("replay", [INI, "--data-dir", "x", "--tiled-uri", "y"], "not allowed with"),
    # -- reanalyze
    ("reanalyze", [], "the following arguments are required: RAW_UID"),
    ("reanalyze", ["abcdef", "--q1", "-1"], "--q1: -1.0 must be > 0"),
    ("reanalyze", ["abcdef", "--dq", "0"], "--dq: 0.0 must be > 0"),
    ("reanalyze", ["abcdef", "--qs", "fast"], "'fast' is not a number"),
    ("reanalyze", ["abcdef", "--frames", "disk"], "invalid choice: 'disk'"),
    ("reanalyze", ["abcdef", "--flat-field", "bogus"], "flat-field mode 'bogus'"),
    ("reanalyze", ["abcdef", "--data-dir", NODATA], "holds no Tiled data"),
    ("reanalyze", ["abcdef", "--data-dir", A_FILE], "holds no Tiled data"),
    ("reanalyze", ["abcdef", "--tiled-uri", "notaurl"], "cannot connect"),
    # -- results
    ("results", ["--format", "xml"], "invalid choice: 'xml'"),
    ("results", ["--data-dir", NODATA], "holds no Tiled data"),
    ("results", ["3f2a9c", "--data-dir", NODATA], "holds no Tiled data"),
    ("serve", ["--port", "99999"], "99999 is not a port"),
    ("serve", ["--port", "x"], "'x' is not a port number"),
    ("results", ["--list", "--tiled-uri", "ftp://host"], "unsupported protocol"),
    ("results", ["--tiled-uri", "http://[::1"], "cannot connect"),
    ("results", ["a", "b"], "unrecognized arguments: b"),
    # -- export
    ("export", ["--data-dir", NODATA], "the following arguments are required: --to"),
    ("export", ["--to", "pdf"], "invalid choice: 'pdf'"),
    ("export", ["--to", "csv", "--data-dir", NODATA], "holds no Tiled data"),
    ("export", ["--to", "hdf5", "--tiled-uri", "notaurl"], "cannot connect"),
    # -- report
    ("report", ["--data-dir", NODATA], "holds no Tiled data"),
    ("report", ["--tiled-uri", "ftp://host"], "unsupported protocol"),
    ("report", ["--bogus"], "unrecognized arguments: --bogus"),
    # -- demo: rejected before the RunEngine or a server starts
    ("demo", ["--frames", "0"], "--frames: 0 must be >= 1"),
    ("demo", ["--frames", "-5"], "--frames: -5 must be >= 1"),
    ("demo", ["--seed", "-1"], "--seed: -1 must be >= 0"),
    ("demo", ["--seed", "x"], "'x' is not an integer"),
    ("demo", ["--estimator", "magic"], "invalid choice: 'magic'"),
    ("demo", ["--data-dir", A_FILE], "is a file, not a folder"),
    ("demo", ["--external-dir", A_FILE], "is a file, not a folder"),
    ("serve", ["--port", "http"], "--port"),
    ("serve", ["--port", "-5"], "--port"),
    ("serve", ["--data-dir", A_FILE], "is a file, not a folder"),
    ("serve", ["--bogus"], "unrecognized arguments: --bogus"),
    ("listen", [], "one of the arguments --zmq --nats is required"),
    ("listen", ["--zmq", "nohostport"], "0MQ address 'nohostport'"),
    ("listen", ["--zmq", "localhost:99999"], "0MQ address 'localhost:99999'"),
    ("listen", ["--nats", "nats://x"], "--nats needs --subject"),
    ("listen", ["--zmq", "localhost:5578", "--path-map", "x"], "path map 'x'"),
    ("listen", ["--zmq", "localhost:5578", "--dask", "local:x"], "give local:N"),
    # -- upload
    ("upload", ["--data-dir", NODATA], "holds no Tiled data"),
    ("upload", ["--tiled-uri", "notaurl"], "cannot connect"),
    ("upload", ["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The files and folders the placeholders name; the working folder is tmp."""
    monkeypatch.chdir(tmp_path)  # the default ./xsvs-data lands here, if made
    ini = tmp_path / "input.txt"
    ini.write_text(BAD_VALUE_INI)
    (tmp_path / "folder").mkdir()
    (tmp_path / "nodata").mkdir()
    (tmp_path / "plain.txt").write_text("not a folder\n")
    return {
        "ini": str(ini),
        "missing": str(tmp_path / "absent.txt"),
        "folder": str(tmp_path / "folder"),
        "nodata": str(tmp_path / "nodata"),
        "file": str(tmp_path / "plain.txt"),
    }


def run_main(argv: list[str]) -> int:
    """``main(argv)``'s exit code, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def assert_one_error_line(
    code: int, out: str, err: str, command: str, needle: str
) -> None:
    """Exit 2, empty stdout, no traceback; one error line, after the usage."""
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    *usage, last = err.rstrip("\n").splitlines()
    if usage:  # argparse: "usage: xsvs-bluesky ..." wrapped, then the error
        assert usage[0].startswith("usage: xsvs-bluesky"), err
        assert all(line.startswith(" ") for line in usage[1:]), err
    assert last.startswith(("xsvs-bluesky: error: ", f"xsvs-bluesky {command}: ")), err
    assert "error: " in last
    assert needle in last, (needle, last)


def test_every_subcommand_has_bad_input_cases() -> None:
    assert {command for command, _, _ in CASES} == set(SUBCOMMANDS)


@pytest.mark.parametrize(
    ("command", "arguments", "needle"),
    CASES,
    ids=[f"{c}-{'_'.join(a) or 'none'}" for c, a, _ in CASES],
)
def test_bad_input_is_one_line_and_exit_2(
    command: str,
    arguments: list[str],
    needle: str,
    paths: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [command, *(a.format(**paths) for a in arguments)]
    code = run_main(argv)
    out, err = capsys.readouterr()
    assert_one_error_line(code, out, err, command, needle)


def test_folder_as_ini_names_the_ini_inside(paths: dict[str, str], capsys) -> None:
    nested = Path(paths["folder"]) / "analysis" / "xsvs"
    nested.mkdir(parents=True)
    (nested / "xsvs_input.txt").write_text(BAD_VALUE_INI)
    code = run_main(["analyze", paths["folder"]])
    out, err = capsys.readouterr()
    assert_one_error_line(code, out, err, "analyze", "is a folder, not an INI file")
    assert "analysis/xsvs/xsvs_input.txt" in err


def run_console(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m xsvs_bluesky.cli ARGV`` in a fresh interpreter.

    The interpreter imports the package under test (this tree), whatever the
    working folder.
    """
    source = str(Path(xsvs_bluesky.__file__).parents[1])
    path = os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-m", "xsvs_bluesky.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path, **env},
    )


def test_console_folder_as_ini(paths: dict[str, str], tmp_path: Path) -> None:
    proc = run_console("analyze", paths["folder"], cwd=tmp_path)
    assert_one_error_line(
        proc.returncode, proc.stdout, proc.stderr, "analyze", "is a folder"
    )


def test_console_refused_connection(tmp_path: Path) -> None:
    """Nothing listens on port 1: one line naming the address (one attempt)."""
    proc = run_console(
        "results",
        "--tiled-uri",
        "http://127.0.0.1:1",
        cwd=tmp_path,
        TILED_RETRY_ATTEMPTS="1",
    )
    assert_one_error_line(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        "results",
        "cannot connect to the Tiled server 'http://127.0.0.1:1'",
    )


# -- the messages of issue 15, on real files (replay checks before any server)


def test_replay_of_a_damaged_frame_names_the_cli_option(
    paths: dict[str, str], tmp_path: Path, capsys
) -> None:
    from test_cli_analyze import PREFIX, SUFFIX, corrupt, small_series

    ini = small_series(tmp_path / "series")
    damaged = tmp_path / "series" / "data" / f"{PREFIX}0002{SUFFIX}"
    corrupt(damaged)
    code = run_main(["replay", str(ini), "--data-dir", paths["nodata"]])
    out, err = capsys.readouterr()
    assert_one_error_line(code, out, err, "replay", "--skip-bad-frames")
    assert damaged.name in err and "skip_bad" not in err
    assert not (Path(paths["nodata"]) / "tiled").exists()  # checked first


def test_replay_of_a_first_frame_of_the_wrong_shape_blames_the_frame(
    paths: dict[str, str], tmp_path: Path, capsys
) -> None:
    import numpy as np
    from test_cli_analyze import PREFIX, SUFFIX, small_series, write_edf

    ini = small_series(tmp_path / "series")
    first = tmp_path / "series" / "data" / f"{PREFIX}0001{SUFFIX}"
    write_edf(first, np.zeros((10, 12), np.uint16))
    code = run_main(["replay", str(ini), "--data-dir", paths["nodata"]])
    out, err = capsys.readouterr()
    needle = f"the first frame file {first} has shape (10, 12)"
    assert_one_error_line(code, out, err, "replay", needle)
    assert "mask.edf: mask shape" not in err  # not the mask's fault
