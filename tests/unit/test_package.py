"""The package's public surface: light import, lazy heavy names, version."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import xsvs_bluesky


def test_import_is_light() -> None:
    code = (
        "import json, sys, xsvs_bluesky\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"bluesky", "tiled", "matplotlib", "event_model", "numba"}


@pytest.mark.parametrize("name", sorted(xsvs_bluesky.__all__))
def test_public_names_resolve(name: str) -> None:
    assert getattr(xsvs_bluesky, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = xsvs_bluesky.no_such_name


def test_errors_are_also_builtin_errors() -> None:
    assert issubclass(xsvs_bluesky.InputFileError, ValueError)
    assert issubclass(xsvs_bluesky.FitError, RuntimeError)
    assert issubclass(xsvs_bluesky.InputFileError, xsvs_bluesky.XSVSError)


def test_the_package_is_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("xsvs_bluesky").joinpath("py.typed").is_file()
