"""The local backup of runs: one JSON-lines file per run (private).

A spooling writer (:mod:`._spool`) appends every document of a run to
``<backup dir>/<run uid>.jsonl`` before it is sent to Tiled, and deletes the
file once the run's stop document is stored.  A file left there is a run
Tiled does not hold whole; :mod:`._upload` writes it again.

Format: the first line is a header, ``{"xsvs_backup": {"version": 1,
"catalog": ["raw"], "kind": "raw" | "derived", "server": URI, "host": ...,
"pid": ..., "created": time}}``; every other line is one document,
``{"name": NAME, "doc": DOC}``.  numpy arrays and scalars become
``{"__xsvs_ndarray__": {"descr": DESCR, "shape": [...], "data": BASE64}}``
(``descr`` as numpy's ``.npy`` header writes it, so byte order and
structured types survive; ``"scalar": true`` for a numpy scalar), decoded
back to the same dtype, shape and bytes.  Object arrays are written as
nested lists.  No pickle.  Frames referenced by StreamResource documents
stay in their HDF5 files: the backup holds the documents only.

A file is locked (``fcntl.flock``) by the process writing it for as long as
it may still write or send the run; readers skip a locked file.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from xsvs_bluesky.errors import StorageError

__all__ = [
    "BACKUP_VERSION",
    "BackedUpRun",
    "BackupFile",
    "Journal",
    "backup_files",
    "decode_line",
    "encode_line",
    "run_kind",
]

BACKUP_VERSION = 1
_ARRAY = "__xsvs_ndarray__"
SUFFIX = ".jsonl"


def _release(file: IO[Any], path: Path, delete: bool) -> None:
    """Close a locked backup file, its lock with it (removed first: ``delete``).

    Nothing happens when it is closed already.
    """
    if file.closed:
        return
    try:
        if delete:
            path.unlink(missing_ok=True)
    finally:
        file.close()


class _Encoder:
    """The JSON of one document; array bytes are base64 spliced in afterwards.

    ``json`` would scan every base64 string for characters to escape (as
    long as base64-encoding it, per MB): the document is written with a
    token in their place, unique to the line, and the base64 bytes joined in.
    """

    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.nonce = ""

    def default(self, obj: Any) -> Any:
        """JSON form of what ``json`` cannot write itself (numpy, sets, paths)."""
        if isinstance(obj, np.ndarray | np.generic):
            arr = np.asarray(obj)
            if arr.dtype.hasobject:
                return arr.tolist()
            self.nonce = self.nonce or secrets.token_hex(8)
            token = f"@{self.nonce}:{len(self.blobs)}@"
            self.blobs.append(base64.b64encode(arr.tobytes()))
            return {
                _ARRAY: {
                    "descr": np.lib.format.dtype_to_descr(arr.dtype),
                    "shape": list(arr.shape),
                    "data": token,
                    "scalar": isinstance(obj, np.generic),
                }
            }
        if isinstance(obj, set | frozenset):
            return sorted(obj, key=repr)
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise TypeError(f"a {type(obj).__name__} cannot be written to the backup")

    def line(self, item: Any) -> bytes:
        text = json.dumps(item, default=self.default).encode()
        if not self.blobs:
            return text + b"\n"
        parts = text.split(f'"@{self.nonce}:'.encode())
        out = [parts[0]]
        for part in parts[1:]:
            index, rest = part.split(b'@"', 1)
            out += [b'"', self.blobs[int(index)], b'"', rest]
        out.append(b"\n")
        return b"".join(out)


def _hook(obj: dict[str, Any]) -> Any:
    spec = obj.get(_ARRAY)
    if spec is None or len(obj) != 1:
        return obj
    dtype = np.lib.format.descr_to_dtype(_descr(spec["descr"]))
    raw = base64.b64decode(spec["data"])
    arr = np.frombuffer(raw, dtype=dtype).reshape(spec["shape"]).copy()
    return arr[()] if spec.get("scalar") else arr


def _descr(descr: Any) -> Any:
    """Turn the lists of fields of a descr read back from JSON into tuples."""
    if isinstance(descr, list):
        return [tuple(_descr(part) for part in field) for field in descr]
    return descr


def encode_line(name: str, doc: Any) -> bytes:
    """Return the line of the backup (with its newline) of document ``(name, doc)``."""
    return _Encoder().line({"name": name, "doc": doc})


def decode_line(line: str | bytes) -> tuple[str, dict[str, Any]]:
    """Return the ``(name, doc)`` of one line written by :func:`encode_line`."""
    item = json.loads(line, object_hook=_hook)
    return str(item["name"]), item["doc"]


@dataclass(frozen=True)
class BackedUpRun:
    """A run kept in the local backup because Tiled did not store it whole.

    Attributes
    ----------
    uid : str
        The run's uid.
    path : Path
        Its backup file.
    catalog : tuple of str
        Path of the catalog the run belongs to (e.g. ``("raw",)``).
    server : str
        Address of the server that failed.
    cause : str
        Why: the server's error (``ConnectError: ...``), a timeout, or the
        writer's queue overflowing.
    kind : str
        ``"derived"`` (an analysis: its start names ``original_run_uid``) or
        ``"raw"``.
    """

    uid: str
    path: Path
    catalog: tuple[str, ...]
    server: str
    cause: str
    kind: str = "raw"

    def describe(self) -> str:
        """Return ``"raw run 1a2b3c4d"`` (or ``"derived run ..."``)."""
        return f"{self.kind} run {self.uid[:8]}"


def run_kind(start: Any) -> str:
    """Return ``"derived"`` for the start document of an analysis, else ``"raw"``."""
    return "derived" if "original_run_uid" in start else "raw"


class Journal:
    """The backup file of one run being written, locked by this process.

    Parameters
    ----------
    folder : Path
        The backup folder (created if absent).
    uid : str
        The run's uid (the file is ``<uid>.jsonl``; ``<uid>.<n>.jsonl`` when
        a file of that name is there already).
    catalog : sequence of str
        Path of the run's catalog on the server.
    server : str
        The server's address.
    kind : str
        ``"raw"`` or ``"derived"`` (:func:`run_kind`).

    Raises
    ------
    OSError
        The folder or file cannot be created.
    """

    def __init__(
        self,
        folder: Path,
        uid: str,
        catalog: Sequence[str],
        server: str,
        kind: str = "raw",
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.uid = uid
        self.kind = kind
        self.catalog = tuple(catalog)
        self.server = server
        self.path, self._file = _create(folder, uid)
        fcntl.flock(self._file, fcntl.LOCK_EX)
        header = {
            "version": BACKUP_VERSION,
            "catalog": list(self.catalog),
            "kind": kind,
            "server": server,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created": time.time(),
        }
        self._file.write(json.dumps({"xsvs_backup": header}).encode() + b"\n")
        self._file.flush()
        self.stopped = False

    def write(self, name: str, doc: Any) -> None:
        """Append one document (handed to the OS at once, not synced)."""
        self._file.write(encode_line(name, doc))
        self._file.flush()
        if name == "stop":
            self.stopped = True

    def sync(self) -> None:
        """Make the file survive a crash of the machine (``fsync``)."""
        if not self._file.closed:
            os.fsync(self._file.fileno())

    def close(self, *, delete: bool = False) -> None:
        """Release the file (unlock); ``delete``: the run is stored, remove it."""
        _release(self._file, self.path, delete)

    @property
    def closed(self) -> bool:
        """Whether the file was released."""
        return self._file.closed

    def entry(self, cause: str) -> BackedUpRun:
        """Return the :class:`BackedUpRun` of this file."""
        return BackedUpRun(
            self.uid, self.path, self.catalog, self.server, cause, self.kind
        )


def _create(folder: Path, uid: str) -> tuple[Path, IO[bytes]]:
    for n in range(1000):
        path = folder / (f"{uid}{SUFFIX}" if n == 0 else f"{uid}.{n}{SUFFIX}")
        try:
            return path, open(path, "xb")  # noqa: SIM115
        except FileExistsError:
            continue
    raise StorageError(f"{folder} holds 1000 backups of run {uid}; upload them")


class BackupFile:
    """A backup file opened for reading, locked, or None if another holds it.

    Use :meth:`open`; as a context manager it releases the lock.
    """

    def __init__(self, path: Path, handle: IO[str], header: dict[str, Any]) -> None:
        self.path = path
        self._file = handle
        self.header = header
        #: a last line cut short (the writing process was killed mid-line)
        self.truncated = False

    @classmethod
    def open(cls, path: Path) -> BackupFile | None:
        """Lock and open ``path``; None if it is locked or was removed meanwhile.

        Raises
        ------
        StorageError
            The file is not a backup of ours (no header line).
        """
        try:
            handle = open(path, encoding="utf-8")  # noqa: SIM115
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        if os.fstat(handle.fileno()).st_nlink == 0:  # stored and removed meanwhile
            handle.close()
            return None
        first = handle.readline()
        try:
            header = json.loads(first)["xsvs_backup"]
            if int(header["version"]) > BACKUP_VERSION:
                raise ValueError(f"version {header['version']}")
        except (ValueError, KeyError, TypeError) as err:
            handle.close()
            raise StorageError(
                f"{path}: not a run backup of this version ({err}); move it out "
                "of the backup folder"
            ) from None
        return cls(path, handle, header)

    @property
    def catalog(self) -> tuple[str, ...]:
        """Path of the run's catalog."""
        return tuple(str(p) for p in self.header.get("catalog", ()))

    def documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield the documents, in order, decoded one line at a time.

        A last line that does not parse (cut short) is skipped and noted in
        :attr:`truncated`; a bad line before it raises StorageError.
        """
        self._file.seek(0)
        self._file.readline()
        number = 1
        pending: str | None = None
        for line in self._file:
            number += 1
            if pending is not None:
                raise StorageError(
                    f"{self.path}, line {number - 1}: not a document; the backup "
                    "is damaged"
                )
            try:
                yield decode_line(line)
            except (ValueError, KeyError, TypeError):
                pending = line
        self.truncated = pending is not None

    def close(self, *, delete: bool = False) -> None:
        """Unlock (after removing the file, when ``delete``)."""
        _release(self._file, self.path, delete)

    def __enter__(self) -> BackupFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def backup_files(folder: Path) -> list[Path]:
    """Return the backup files in ``folder``, oldest first ([] if none)."""
    found = []
    try:
        for path in folder.iterdir():
            if path.name.endswith(SUFFIX):
                try:
                    found.append((path.stat().st_mtime, path.name, path))
                except FileNotFoundError:  # stored and removed meanwhile
                    continue
    except FileNotFoundError:
        return []
    return [path for *_, path in sorted(found)]
