"""Shared fixtures for the test suite."""

from __future__ import annotations

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
