"""The error classes: one root, each also a built-in, all in ``errors.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xsvs_bluesky
from xsvs_bluesky import errors
from xsvs_bluesky.export import write_atomic

PACKAGE = Path(xsvs_bluesky.__file__).parent
BUILTIN = (ValueError, LookupError, OSError, RuntimeError)


@pytest.mark.parametrize("name", [n for n in errors.__all__ if n != "XSVSError"])
def test_every_error_is_an_xsvs_error_and_a_builtin(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.XSVSError)
    assert issubclass(cls, BUILTIN), cls.__mro__
    assert getattr(xsvs_bluesky, name) is cls  # public at the top too


def test_every_public_error_class_is_defined_in_errors_py() -> None:
    """No exception class elsewhere in the package (private helpers aside)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert found == []


def test_old_import_paths_name_the_same_classes() -> None:
    from xsvs_bluesky.core.estimators import EstimatorError
    from xsvs_bluesky.results import RunNotFoundError

    assert EstimatorError is errors.EstimatorError
    assert RunNotFoundError is errors.RunNotFoundError
    assert issubclass(EstimatorError, ValueError)
    assert issubclass(RunNotFoundError, LookupError)


def test_not_found_reads_as_a_sentence() -> None:
    err = errors.RunNotFoundError("no derived run with scan_id 7")
    assert isinstance(err, KeyError)
    assert str(err) == "no derived run with scan_id 7"  # a KeyError would quote it
    assert str(KeyError("x")) == "'x'"


def test_storage_error_is_an_os_error_with_its_message() -> None:
    err = errors.StorageError("cannot write /x: denied")
    assert isinstance(err, OSError)
    assert str(err) == "cannot write /x: denied"


def test_unwritable_target_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "plain"
    blocker.write_text("a file, not a folder")
    with pytest.raises(errors.StorageError, match="cannot write"):
        write_atomic(blocker / "report.html", "<html></html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
