"""``xsvs_bluesky.live`` imports each public name on first use.

``results --dynamics`` and ``analyze --dynamics`` need only the dynamics text;
it must not load the document routers (event-model) or the session.  Each
case runs in a fresh interpreter: this process has loaded everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xsvs_bluesky.live as live

PACKAGE_PATH = str(Path(live.__file__).parents[2])  # the package under test
HEAVY = ("bluesky", "event_model", "tiled", "ophyd", "ophyd_async", "matplotlib")

_PROBE = """
import json, sys
%s
print(json.dumps({
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(%r)),
    "live": sorted(m for m in sys.modules if m.startswith("xsvs_bluesky.live.")),
}))
"""


def _loaded(statement: str) -> dict[str, list[str]]:
    path = [PACKAGE_PATH, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE % (statement, HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "statement",
    [
        "import xsvs_bluesky.live._dynamics_text",
        "from xsvs_bluesky.live import format_dynamics_flags, diffusion_from_record",
    ],
)
def test_the_dynamics_text_loads_nothing_else_of_live(statement: str) -> None:
    assert _loaded(statement) == {
        "heavy": [],
        "live": ["xsvs_bluesky.live._dynamics_text"],
    }


def test_the_session_is_imported_when_asked_for() -> None:
    loaded = _loaded("from xsvs_bluesky.live import LiveSession")
    assert "xsvs_bluesky.live._session" in loaded["live"]
    assert "xsvs_bluesky.live._feedback" not in loaded["live"]


@pytest.mark.parametrize("name", live.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(live, name)
    assert value is not None and name in dir(live)
    assert getattr(value, "__module__", live.__name__).startswith(live.__name__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = live.no_such_name
