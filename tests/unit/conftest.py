"""Unit tests mirror the package: ``tests/unit/<subpackage>/test_<module>.py``.

This folder is on ``sys.path`` (pytest inserts a conftest's folder), so the
shared document builders in ``derived_docs.py`` import as ``derived_docs``.
"""
