"""The command line as a whole: subcommands, help, version, exit codes."""

from __future__ import annotations

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
    "listen",
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
