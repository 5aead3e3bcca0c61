"""Write the runs of the local backup into Tiled (private).

:func:`upload_backup` writes one backup file (see :mod:`._backup`) into the
catalog it names: it removes the run of that uid from the catalog first
(whatever the server holds of it: a partial run, or the whole run when
only the answer to its stop was lost), writes every document through a
fresh :func:`~xsvs_bluesky.storage.make_tiled_writer`, reads the run back
(its stop document, its streams and their rows) and only then deletes the
file.  A backup without a stop document (its writing process was killed)
gets one: ``exit_status="fail"``, the reason saying so.  The uid is kept,
so the derived runs that name a raw run still find it; the HDF5 files the
run references are never touched (Tiled deletes only the data it wrote).
See ``docs/explanation/decisions/0008-local-backup-of-runs.md``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsvs_bluesky.errors import StorageError
from xsvs_bluesky.storage._backup import BackupFile, backup_files, run_kind
from xsvs_bluesky.storage._health import describe_error

__all__ = ["UploadReport", "UploadedRun", "upload_backup", "upload_backups"]

logger = logging.getLogger(__name__)

#: Events or StreamDatum rows written per request when a backup is uploaded
UPLOAD_BATCH_SIZE = 50


@dataclass(frozen=True)
class UploadedRun:
    """A run written from the backup.

    Attributes
    ----------
    uid : str
    path : Path
        The backup file (deleted now).
    catalog : tuple of str
        Path of its catalog.
    replaced : bool
        The server held a run of that uid (partial, or whole without its
        answer reaching the writer): it was removed first.
    stop_added : bool
        The backup had no stop document: one with ``exit_status="fail"`` was
        written.
    documents : int
        Documents written.
    kind : str
        ``"raw"`` or ``"derived"``.
    """

    uid: str
    path: Path
    catalog: tuple[str, ...]
    replaced: bool
    stop_added: bool
    documents: int
    kind: str = "raw"

    def describe(self) -> str:
        """Return one line: which run, from where, what was done."""
        text = f"wrote {self.kind} run {self.uid} from {self.path}"
        if self.replaced:
            text += " (the partial run the server held was removed first)"
        if self.stop_added:
            text += " (no stop document in the backup: marked 'fail')"
        return text


@dataclass
class UploadReport:
    """What :func:`upload_backups` did with a backup folder.

    Attributes
    ----------
    uploaded : list of UploadedRun
    busy : list of Path
        Backups locked by a process still writing them (left alone).
    failed : list of (Path, str)
        Backups that could not be written, with the cause (they stay).
    """

    folder: Path
    uploaded: list[UploadedRun] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """Whether backups are left (failed or busy)."""
        return bool(self.failed or self.busy)


class _Counts:
    """Rows per stream of a run, counted from its documents."""

    def __init__(self) -> None:
        self.streams: dict[str, str] = {}  # descriptor uid -> stream name
        self.events: dict[str, int] = {}  # stream -> rows of Events
        self.external: dict[str, set[str]] = {}  # stream -> data keys
        self._resources: dict[str, str] = {}  # stream resource uid -> data key

    def add(self, name: str, doc: Mapping[str, Any]) -> None:
        if name == "descriptor":
            stream = str(doc["name"])
            self.streams[doc["uid"]] = stream
            self.events.setdefault(stream, 0)
            keys = doc.get("data_keys", {})
            # keys of StreamDatum documents count once a datum names them: a
            # run cut off between a stream's resource and its first datum
            # has no frames (and no node) for it
            self.external.setdefault(stream, set()).update(
                k
                for k, v in keys.items()
                if v.get("external") and not str(v["external"]).startswith("STREAM:")
            )
            return
        if name == "stream_resource":
            self._resources[str(doc["uid"])] = str(doc.get("data_key", ""))
            return
        if name == "stream_datum":
            named = self.streams.get(doc.get("descriptor", ""))
            key = self._resources.get(str(doc.get("stream_resource", "")))
            if named is not None and key:
                self.external.setdefault(named, set()).add(key)
            return
        found = self.streams.get(doc.get("descriptor", ""))
        if found is None:
            return
        if name == "event":
            self.events[found] += 1
        elif name == "event_page":
            self.events[found] += len(doc.get("seq_num", ()))


def _remove(container: Any, uid: str) -> bool:
    """Remove run ``uid`` from ``container`` (Tiled's data of it, not files)."""
    try:
        node = container[uid]
    except KeyError:
        return False
    node.delete(recursive=True, external_only=False)
    return True


def _verify(container: Any, uid: str, stop: Mapping[str, Any], counts: _Counts) -> None:
    """Read the run back: its stop, its streams, their rows and data keys."""
    run = container[uid]
    stored = (run.metadata.get("stop") or {}).get("uid")
    if stored != stop.get("uid"):
        raise StorageError(f"run {uid} was written without its stop document")
    for stream, rows in counts.events.items():
        node = run[stream]
        node = getattr(node, "base", node)  # a composite's own nodes
        if rows:
            table = node["internal"].read()
            if len(table) != rows:
                raise StorageError(
                    f"run {uid}, stream {stream!r}: {len(table)} rows stored of {rows}"
                )
        for key in counts.external.get(stream, ()):
            if key not in node:
                raise StorageError(f"run {uid}, stream {stream!r}: no {key!r}")


def upload_backup(
    path: Path, root: Any, *, batch_size: int = UPLOAD_BATCH_SIZE
) -> UploadedRun | None:
    """Write the run of one backup file into Tiled, then delete the file.

    Parameters
    ----------
    path : Path
        The backup file.
    root : tiled client container
        The server's root node; the run goes to the catalog the backup names
        under it (created if absent).
    batch_size : int
        Events or StreamDatum rows per write of the raw run.

    Returns
    -------
    UploadedRun or None
        None when another process holds the file (still writing the run).

    Raises
    ------
    StorageError
        The file is damaged, or the run read back is not what was written
        (the file is kept).
    Exception
        Whatever the Tiled client raises (the file is kept).
    """
    from xsvs_bluesky.storage.server import ensure_run_catalog
    from xsvs_bluesky.storage.writer import make_tiled_writer

    backup = BackupFile.open(path)
    if backup is None:
        return None
    with backup:
        docs = backup.documents()
        first = next(docs, None)
        if first is None or first[0] != "start":
            raise StorageError(f"{path}: no start document; the backup is damaged")
        uid = str(first[1]["uid"])
        container = ensure_run_catalog(root, "/".join(backup.catalog))
        replaced = _remove(container, uid)
        writer = make_tiled_writer(container, batch_size=batch_size)
        counts = _Counts()
        stop: Mapping[str, Any] | None = None
        writer(*first)
        n = 1
        for name, doc in docs:
            if name == "stop":
                stop = doc
            counts.add(name, doc)
            writer(name, doc)
            n += 1
        stop_added = stop is None
        if stop is None:
            stop = {
                "uid": str(uuid.uuid4()),
                "time": time.time(),
                "run_start": uid,
                "exit_status": "fail",
                "reason": (
                    "the process writing this run ended before its stop "
                    f"document; written from the backup {path.name}"
                ),
                "num_events": dict(counts.events),
            }
            writer("stop", stop)
            n += 1
        _verify(container, uid, stop, counts)
        backup.close(delete=True)
    logger.info("run %s written from the backup %s", uid, path)
    kind = run_kind(first[1])
    return UploadedRun(uid, path, backup.catalog, replaced, stop_added, n, kind)


def upload_backups(root: Any, folder: Path) -> UploadReport:
    """Write every backup of ``folder`` into Tiled (see :func:`upload_backup`).

    Files locked by a process still writing them are left alone.  After a
    failure that is the server's (no answer, HTTP 5xx) the rest are not
    tried.

    Returns
    -------
    UploadReport
    """
    import httpx

    from xsvs_bluesky.errors import ServerUnavailableError

    report = UploadReport(folder)
    for path in backup_files(folder):
        try:
            done = upload_backup(path, root)
        except StorageError as err:
            report.failed.append((path, str(err)))
            if isinstance(err, ServerUnavailableError):
                break
            continue
        except (httpx.TransportError, httpx.HTTPStatusError) as err:
            report.failed.append((path, describe_error(err)))
            status = getattr(getattr(err, "response", None), "status_code", 500)
            if status >= 500:
                break
            continue
        if done is None:
            report.busy.append(path)
        else:
            report.uploaded.append(done)
    return report
