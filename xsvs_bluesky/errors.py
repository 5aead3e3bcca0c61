"""Exceptions raised by xsvs_bluesky.

Every error a user can cause (a bad input file, option value, run name,
server address...) derives from :class:`XSVSError` and also from the
built-in it resembles (``ValueError``, ``LookupError``/``KeyError``,
``OSError``, ``RuntimeError``), so callers can catch either.  The command
line turns an :class:`XSVSError` into one line on stderr and exit code 2.
Violations of internal invariants (programming errors) stay plain built-ins
and show a traceback.

This module imports nothing, so every layer of the package may raise these.
"""

from __future__ import annotations

__all__ = [
    "XSVSError",
    "DocumentError",
    "EstimatorError",
    "FitError",
    "FolderBusyError",
    "FrameDataError",
    "GeometryError",
    "InputFileError",
    "LimitError",
    "NoDataError",
    "NotFoundError",
    "OptionError",
    "OversizedFileError",
    "PickleRefusedError",
    "RunError",
    "RunNotFoundError",
    "RunNotStoredError",
    "ServerUnavailableError",
    "StorageError",
    "WireFormatError",
]


class XSVSError(Exception):
    """Root of all errors raised by xsvs_bluesky."""


class InputFileError(XSVSError, ValueError):
    """An input file (INI, EDF, mask, flat field) is missing, unreadable or invalid.

    The message names the file, and where relevant the section, key and value,
    and says what would be valid.
    """


class OptionError(XSVSError, ValueError):
    """An option or argument has a value that is not allowed.

    An unknown name (flat-field mode, compression, dynamics model), a number
    out of range, arrays of mismatched shapes.  The message names the option
    and the bad value and says what would be valid.
    """


class EstimatorError(OptionError):
    """An estimator got an unknown name, invalid input or lacks an input.

    The message names the estimator or argument and says what would be valid
    (the known names, the expected shape, or how to provide the input).
    """


class GeometryError(XSVSError, ValueError):
    """Detector geometry, partitions or masks are inconsistent."""


class FrameDataError(XSVSError, ValueError):
    """Frame data cannot be histogrammed (negative or absurdly large counts, floats)."""


class LimitError(XSVSError, ValueError):
    """An input asks for more than a resource limit allows, checked before allocating.

    Too many q partitions, a detector or frame too large, a compressed file
    that inflates beyond the frame-size limit.  The message names the input,
    the size it asks for, the limit and the option that raises it
    (:class:`xsvs_bluesky.options.Limits`).
    """


class OversizedFileError(LimitError, InputFileError):
    """An input file (a gzip frame, an EDF header) exceeds the frame-size limit.

    Both a :class:`LimitError` and an :class:`InputFileError`, so a series
    replayed with bad frames skipped skips such a file as a damaged one.
    """


class NoDataError(XSVSError, ValueError):
    """A result was asked for before any frame was given."""


class DocumentError(XSVSError, ValueError):
    """Bluesky documents the analysis cannot use.

    A stream resource that is not a local HDF5 file, a data key whose shape
    is not a frame shape, inline frames of the wrong shape.
    """


class RunError(XSVSError, ValueError):
    """A stored run cannot be used as asked.

    A derived run given where a raw run is needed, a raw run that did not
    finish or lacks its geometry, a derived run without a dynamics stream.
    """


class NotFoundError(XSVSError, KeyError):
    """A named item (exposure, stream key) does not exist.

    A ``KeyError`` whose message reads as a sentence (``str`` is the message,
    not its ``repr`` as for a plain ``KeyError``).
    """

    def __str__(self) -> str:
        """Return the message itself."""
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class RunNotFoundError(NotFoundError):
    """No run matches the uid, uid prefix, scan_id or query given."""


class StorageError(XSVSError, OSError):
    """Storage cannot be used.

    The Tiled server cannot be reached or started, a catalog key names
    something that is not a catalog of runs, an output file or folder cannot
    be written.
    """


class FolderBusyError(StorageError):
    """The data folder is already served by another process (or server)."""


class FitError(XSVSError, RuntimeError):
    """A fit could not be carried out (not enough data, no convergence)."""


class WireFormatError(XSVSError, ValueError):
    """A message on a document bus that is not a bluesky document in JSON or msgpack."""


class PickleRefusedError(WireFormatError):
    """A publisher speaks pickle: refused (unpickling runs arbitrary code)."""


class RunNotStoredError(StorageError):
    """A derived run could not be stored: the listener stops (nothing acked)."""


class ServerUnavailableError(StorageError):
    """The Tiled server did not answer a writer within its retry time.

    Raised by the HTTP transport of the spooling writers
    (:mod:`xsvs_bluesky.storage`) instead of trying again: the runs being
    written go to the local backup and are written later (``xsvs-bluesky
    upload``).  Not an ``httpx`` error, so the Tiled client does not retry
    it.  The message names the server and the first failure.

    Parameters
    ----------
    uri : str
        The server's address.
    cause : str
        Its first failure, one line (``ConnectError: ...``).
    """

    def __init__(self, uri: str, cause: str) -> None:
        super().__init__(f"the Tiled server at {uri} does not answer ({cause})")
        self.uri = uri
        self.cause = cause
