"""Exceptions raised by xsvs_bluesky.

Every exception derives from :class:`XSVSError`; most also derive from the
built-in they resemble so that callers can catch either.
"""

from __future__ import annotations

__all__ = [
    "XSVSError",
    "InputFileError",
    "GeometryError",
    "FitError",
    "FrameDataError",
]


class XSVSError(Exception):
    """Root of all errors raised by xsvs_bluesky."""


class InputFileError(XSVSError, ValueError):
    """An input file (INI, EDF, mask, flat field) is missing, unreadable or invalid.

    The message names the file, and where relevant the section, key and value,
    and says what would be valid.
    """


class GeometryError(XSVSError, ValueError):
    """Detector geometry, partitions or masks are inconsistent."""


class FitError(XSVSError, RuntimeError):
    """A fit could not be carried out (not enough data, no convergence)."""


class FrameDataError(XSVSError, ValueError):
    """Frame data cannot be histogrammed (negative or absurdly large counts, floats)."""
