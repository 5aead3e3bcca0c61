"""The numerical core must stay free of bluesky, tiled, matplotlib and I/O libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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

CORE = Path(__file__).resolve().parents[2] / "xsvs_bluesky" / "core"
CORE_MODULES = sorted(
    f"xsvs_bluesky.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__"
)


@pytest.mark.parametrize("module", ["xsvs_bluesky.core", *CORE_MODULES])
def test_core_module_imports_no_heavy_dependency(module: str) -> None:
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    offending = sorted(
        name for name in loaded if name.split(".")[0] in FORBIDDEN
    )
    assert offending == [], f"{module} pulls in {offending}"


def test_core_modules_found() -> None:
    # guards against the parametrisation silently testing nothing
    assert "xsvs_bluesky.core.synthetic" in CORE_MODULES
