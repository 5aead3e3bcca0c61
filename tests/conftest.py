"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = (REPO / ".." / "shared" / "data" / "pyxsvs-example").resolve()


@pytest.fixture(scope="session")
def example_dir() -> Path:
    """The real ESRF MAXIPIX example series, or skip when it is absent."""
    if not (EXAMPLE_DIR / "analysis" / "xsvs" / "xsvs_input.txt").is_file():
        pytest.skip(f"example data not found at {EXAMPLE_DIR}")
    return EXAMPLE_DIR


@pytest.fixture(scope="session", autouse=True)
def _ipython_dir_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """IPython (imported by matplotlib backends, the profile tests) stays in tmp."""
    old = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    yield
    if old is None:
        os.environ.pop("IPYTHONDIR", None)
    else:
        os.environ["IPYTHONDIR"] = old


@pytest.fixture(scope="session", autouse=True)
def _no_background_servers() -> Iterator[None]:
    """Commands serve their data folders in-process: no server outlives a test.

    The tests of the background server itself clear the variable.
    """
    old = os.environ.get("XSVS_BLUESKY_IN_PROCESS")
    os.environ["XSVS_BLUESKY_IN_PROCESS"] = "1"
    yield
    if old is None:
        os.environ.pop("XSVS_BLUESKY_IN_PROCESS", None)
    else:
        os.environ["XSVS_BLUESKY_IN_PROCESS"] = old
