"""``--help``, ``--version`` and argument errors load no heavy package.

Each case runs in a fresh interpreter (``sys.modules`` of the test process
already holds everything), like tiled's own light-import test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("numba", "bluesky", "tiled", "ophyd", "ophyd_async", "matplotlib")

_PROBE = """
import json, sys
from xsvs_bluesky.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(%r))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.__stderr__)
"""


def _probe(*argv: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE % (HEAVY,), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("--version",),
        ("no-such-command",),
        ("demo", "--help"),
        ("results", "--help"),
        ("replay", "--help"),
        ("reanalyze", "--help"),
        ("analyze", "--help"),
        ("export", "--help"),
        ("report", "--help"),
        ("serve", "--help"),
        ("serve", "--port", "http"),
        ("results", "--no-such-option"),
        ("demo", "--frames", "0"),
        ("replay", "--compression", "zip", "x.ini"),
    ],
    ids=" ".join,
)
def test_cli_parsing_imports_nothing_heavy(argv: tuple[str, ...]) -> None:
    outcome = _probe(*argv)
    assert outcome["code"] in (0, 2)
    assert outcome["heavy"] == []
