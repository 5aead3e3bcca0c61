"""The numerical core must stay free of bluesky, tiled, matplotlib and I/O libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = (
    "bluesky",
    "tiled",
    "matplotlib",
    "ophyd",
    "ophyd_async",
    "event_model",
    "bluesky_tiled_plugins",
    "fabio",
    "h5py",
    "pandas",
)

CORE = Path(__file__).resolve().parents[3] / "xsvs_bluesky" / "core"
CORE_MODULES = sorted(
    f"xsvs_bluesky.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__"
)


def test_core_imports_no_heavy_dependency() -> None:
    # One fresh interpreter imports every core module and reports what got loaded.
    code = (
        "import importlib, json, sys\n"
        f"for name in {['xsvs_bluesky.core', *CORE_MODULES]!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    offending = sorted(name for name in loaded if name.split(".")[0] in FORBIDDEN)
    assert offending == []
    assert set(CORE_MODULES) <= loaded


def test_core_modules_found() -> None:
    # guards against the check silently covering nothing
    assert {
        "xsvs_bluesky.core.geometry",
        "xsvs_bluesky.core.histogram",
        "xsvs_bluesky.core.estimators",
        "xsvs_bluesky.core.dynamics",
    } <= set(CORE_MODULES)
