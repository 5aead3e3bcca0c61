"""The command line as a whole: subcommands, help, version, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xsvs_bluesky import __version__
from xsvs_bluesky.cli import SUBCOMMANDS, main

EXPECTED = {
    "demo",
    "analyze",
    "results",
    "export",
    "report",
    "replay",
    "reanalyze",
    "serve",
    "listen",
    "upload",
}


def test_every_documented_subcommand_is_registered() -> None:
    assert set(SUBCOMMANDS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_subcommand_help_teaches(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: xsvs-bluesky {name}")
    assert len(out.splitlines()) > 5


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"xsvs-bluesky {__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["analyze", "replay", "reanalyze"])
def test_option_values_are_checked_by_the_options_vocabulary(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "x", "--flat-field", "divide"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"usage: xsvs-bluesky {command}")
    assert err[-1].endswith(
        "argument --flat-field: flat-field mode 'divide' is unknown; give one of "
        "weights, divide-round, record-only, none"
    )
    with pytest.raises(SystemExit) as exc:
        main([command, "x", "--estimator", "mle2"])
    assert exc.value.code == 2
    assert "estimator 'mle2' is unknown" in capsys.readouterr().err


def test_old_flat_field_name_is_accepted_and_mapped() -> None:
    from xsvs_bluesky.cli import build_parser
    from xsvs_bluesky.cli._common import analysis_options
    from xsvs_bluesky.options import FlatFieldMode

    args = build_parser().parse_args(["analyze", "x.ini", "--flat-field", "weighted"])
    opts = analysis_options(args, dynamics=args.dynamics)
    assert opts.flat_field_mode is FlatFieldMode.WEIGHTS
    assert opts.dynamics_model is None  # analyze without --dynamics fits none
    args = build_parser().parse_args(["replay", "x.ini", "--flat-field", "record-only"])
    assert analysis_options(args).flat_field_mode is FlatFieldMode.RECORD_ONLY


_WITHOUT = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None  # import raises ModuleNotFoundError\n"
    "from xsvs_bluesky.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.mark.parametrize(
    ("missing", "args", "extra"),
    [
        (
            "tiled,bluesky_tiled_plugins",
            ["results", "--tiled-uri", "http://x"],
            "tiled",
        ),
        ("ophyd_async,ophyd", ["demo", "--frames", "2", "--data-dir", "{tmp}"], "sim"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    missing: str, args: list[str], extra: str, tmp_path
) -> None:
    """Without an extra's packages, a command says what to install: exit 2."""
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT, missing]
        + [a.format(tmp=tmp_path) for a in args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"install 'xsvs-bluesky[{extra}]'" in lines[0]
    assert lines[0].startswith(f"xsvs-bluesky {args[0]}: error:")
