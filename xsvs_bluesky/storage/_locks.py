"""File locks shared by the writers of one catalog, and scan_id allocation."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["allocate_scan_id", "hold_lock", "last_scan_id", "locks_folder"]

logger = logging.getLogger(__name__)


def locks_folder(catalogs: Any, fallback: Path | None = None) -> Path | None:
    """Folder of the lock files that the writers of ``catalogs`` share.

    A data folder: its ``tiled/locks``.  A server named by address: the
    folder of detector files (``catalogs.external_dir``) or ``fallback``,
    the one place every writer of that server on this file system shares.
    None when there is neither.
    """
    if catalogs.data_dir is not None:
        return Path(catalogs.data_dir) / "tiled" / "locks"
    base = catalogs.external_dir if catalogs.external_dir is not None else fallback
    return None if base is None else Path(base) / ".xsvs-locks"


def _holder(handle: Any) -> str:
    """``pid N (command)`` written by the process holding the lock, or ''."""
    try:
        handle.seek(0)
        info = json.loads(handle.read().decode("utf-8") or "{}")
        return f"pid {int(info['pid'])} ({info.get('command', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


@contextmanager
def hold_lock(
    path: Path, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) for the ``with`` block.

    When another process holds it, ``on_wait`` is called once with who holds
    it (``pid N (command)``), then the call blocks until it is free (Ctrl-C
    interrupts the wait).  The holder writes its pid and command line into
    the file.  Released at the end of the block, or when the process dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_holder(handle) or f"another process (it holds {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            command = " ".join(["xsvs-bluesky", *sys.argv[1:]])[:300]
            handle.write(json.dumps({"pid": os.getpid(), "command": command}).encode())
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_scan_id(raw: Any) -> int:
    """Return the scan_id of the last run of ``raw`` (0: none, or not an integer)."""
    try:
        if len(raw):
            last = raw.values()[-1].metadata["start"].get("scan_id")
            if isinstance(last, int):
                return last
    except Exception:  # a scan_id is a convenience, never a reason to fail
        logger.debug("no scan_id found in the raw catalog", exc_info=True)
    return 0


def allocate_scan_id(catalogs: Any, fallback: Path | None = None) -> int:
    """Return a scan_id for a new raw run of ``catalogs.raw``, unique among ours.

    One more than both the last raw run's scan_id and the last one handed
    out to a writer of these catalogs, recorded in ``scan-ids.json`` of
    :func:`locks_folder` under its lock: two writers that start at the same
    time (two ``replay``, two ``demo``) get two scan_ids.  Without a locks
    folder: one more than the last raw run's.
    """
    last = last_scan_id(catalogs.raw)
    folder = locks_folder(catalogs, fallback)
    if folder is None:
        return last + 1
    key = "/".join(getattr(catalogs.raw, "path_parts", ()) or ("raw",))
    record = folder / "scan-ids.json"
    with hold_lock(folder / "scan-ids.lock"):
        try:
            given = json.loads(record.read_text(encoding="utf-8"))
            if not isinstance(given, dict):
                given = {}
        except (OSError, ValueError):
            given = {}
        previous = given.get(key)
        scan_id = max(last, previous if isinstance(previous, int) else 0) + 1
        given[key] = scan_id
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps(given, indent=1) + "\n", encoding="utf-8")
        tmp.replace(record)
    return scan_id
