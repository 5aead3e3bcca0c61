"""Look-ups of replayed runs in the Tiled catalogs (private; see :mod:`.replay`).

- :func:`find_replays`: successful raw runs with a given content hash;
- :func:`replays_of`: every raw run with that hash, complete or not, with
  the state of its analysis (what a new replay of the series checks first);
- :func:`remove_partial_run`: remove a partial raw run and its derived runs
  from Tiled, then its HDF5 files;
- :func:`derived_runs`: the derived runs of a raw run.

:func:`find_replays` and :func:`derived_runs` are re-exported from
:mod:`xsvs_bluesky.replay`.

The queries name the metadata keys whole (``start.``/``stop.``): the
Bluesky catalog client adds ``start.`` to a bare key, a plain container
client (the light catalogs a ``replay`` opens) does not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsvs_bluesky.replay._docs import REPLAY_KEY

__all__ = [
    "ReplayedRun",
    "derived_runs",
    "find_replays",
    "remove_partial_run",
    "remove_run_files",
    "replays_of",
]

logger = logging.getLogger(__name__)


def find_replays(raw_catalog: Any, content_hash: str) -> list[str]:
    """Uids of the successful raw runs of ``raw_catalog`` with this content hash.

    Runs stopped with ``exit_status`` other than ``"success"`` (failed or
    interrupted replays) do not count.
    """
    from tiled.queries import Key

    found = raw_catalog.search(Key(f"start.{REPLAY_KEY}.content_hash") == content_hash)
    found = found.search(Key("stop.exit_status") == "success")
    return [str(uid) for uid in found.keys()]


@dataclass(frozen=True)
class ReplayedRun:
    """A raw run of a replayed series, as stored in Tiled.

    Attributes
    ----------
    uid : str
    status : str or None
        Its stop document's ``exit_status``; None when it has no stop.
    run_dir : Path or None
        Folder of its HDF5 files (``xsvs_replay["run_dir"]``), when recorded.
    derived : tuple of (str, str or None)
        ``(uid, exit_status)`` of its derived runs.
    """

    uid: str
    status: str | None
    run_dir: Path | None
    derived: tuple[tuple[str, str | None], ...]

    @property
    def complete(self) -> bool:
        """Stopped with ``exit_status="success"``."""
        return self.status == "success"

    @property
    def analysed(self) -> bool:
        """A derived run of it stopped with ``exit_status="success"``."""
        return any(status == "success" for _, status in self.derived)

    def describe(self) -> str:
        """One line: uid, status and where its frames are kept."""
        status = "no stop document" if self.status is None else repr(self.status)
        where = "frames folder not recorded"
        if self.run_dir is not None:
            where = f"frames kept in {self.run_dir}"
        return f"raw run {self.uid} ({status}; {where})"


_UIDS_PER_QUERY = 100


def replays_of(catalogs: Any, content_hash: str) -> list[ReplayedRun]:
    """Every raw run with this content hash, in catalog order.

    Runs named in another run's ``xsvs_replay["supersedes"]`` are left out.
    Two searches whatever the number of runs found (up to 100): the raw
    runs, then the derived runs of all of them at once.
    """
    from tiled.queries import In, Key

    found = catalogs.raw.search(Key(f"start.{REPLAY_KEY}.content_hash") == content_hash)
    raw = [(str(uid), node.metadata) for uid, node in found.items()]
    derived: dict[str, list[tuple[str, str | None]]] = {uid: [] for uid, _ in raw}
    uids = [uid for uid, _ in raw]
    for first in range(0, len(uids), _UIDS_PER_QUERY):  # the query is in the URL
        query = In("start.original_run_uid", uids[first : first + _UIDS_PER_QUERY])
        for uid, node in catalogs.processed.search(query).items():
            md = node.metadata
            original = str((md.get("start") or {}).get("original_run_uid"))
            status = (md.get("stop") or {}).get("exit_status")
            derived.setdefault(original, []).append((str(uid), status))
    runs, superseded = [], set()
    for uid, md in raw:
        record = md.get("start", {}).get(REPLAY_KEY, {})
        superseded.update(record.get("supersedes", ()))
        stop = md.get("stop") or {}
        run_dir = record.get("run_dir")
        runs.append(
            ReplayedRun(
                uid=uid,
                status=stop.get("exit_status"),
                run_dir=Path(run_dir) if run_dir else None,
                derived=tuple(derived[uid]),
            )
        )
    return [r for r in runs if r.uid not in superseded]


def remove_run_files(run_dir: Path, uid: str) -> None:
    """Delete the HDF5 files of raw run ``uid`` in ``run_dir``, then the folder.

    Only ``*.h5`` files directly in a folder named by the uid are deleted
    (a folder recorded in metadata is never trusted further); the folder
    goes only when it is then empty.
    """
    if run_dir.name != uid or not run_dir.is_dir():
        return
    for path in run_dir.glob("*.h5"):
        path.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        logger.warning("%s is not empty: left in place", run_dir)


def remove_partial_run(catalogs: Any, run: ReplayedRun) -> None:
    """Remove a partial raw run: its derived runs, the run, then its files.

    Raises
    ------
    Exception
        Whatever Tiled raises; the files are then kept.
    """
    for uid, _ in run.derived:
        catalogs.processed[uid].delete(recursive=True, external_only=False)
    catalogs.raw[run.uid].delete(recursive=True, external_only=False)
    if run.uid in catalogs.raw:
        raise RuntimeError(f"raw run {run.uid} is still in the catalog")
    if run.run_dir is not None:
        remove_run_files(run.run_dir, run.uid)


def derived_runs(processed: Any, raw_uid: str) -> tuple[str, ...]:
    """Uids of the derived runs of raw run ``raw_uid`` in ``processed``."""
    from tiled.queries import Key

    found = processed.search(Key("start.original_run_uid") == raw_uid)
    return tuple(str(k) for k in found.keys())
