"""What a legacy replay did (private; see :mod:`.replay`).

:class:`ReplayResult` is returned by :meth:`xsvs_bluesky.replay.LegacyReplay.run`
and :func:`xsvs_bluesky.replay.replay_legacy`, and re-exported from
:mod:`xsvs_bluesky.replay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ReplayResult"]


@dataclass(frozen=True, eq=False)
class ReplayResult:
    """What a replay did.

    Attributes
    ----------
    raw_uid : str
        uid of the raw run (the existing one when ``duplicate``).
    derived_uids : tuple of str
        Derived runs of it: the new one, or those found for a duplicate.
    content_hash : str
        SHA-256 of the inputs (hex).
    duplicate : bool
        True when the series had been replayed already: nothing was written.
    completed : bool
        True when a complete raw run of the series had no successful
        analysis: it was analysed again (no new raw run).
    files : tuple of Path
        HDF5 files written, one per exposure.
    n_frames : tuple of int
        Frames written per exposure.
    skipped : tuple of (str, str, str)
        ``(exposure, file, reason)`` of the bad frame files left out.
    results : tuple of ExposureResult
        Final results of the new derived run (empty for a duplicate).
    seconds : float
        Wall time, s.
    analysis_status, analysis_reason : str
        Exit status and reason of the new derived run ("" for a duplicate).
    notes : tuple of str
        One line each: earlier runs of the series found, and what was done
        with them (partial runs removed or superseded, analysis completed).
    backed_up : tuple of BackedUpRun
        Runs the Tiled server did not store (it failed during the replay):
        they are in the local backup, whole, and ``xsvs-bluesky upload``
        writes them.  Empty when everything is in Tiled.
    """

    raw_uid: str
    derived_uids: tuple[str, ...]
    content_hash: str
    duplicate: bool
    completed: bool = False
    files: tuple[Path, ...] = ()
    n_frames: tuple[int, ...] = ()
    skipped: tuple[tuple[str, str, str], ...] = ()
    results: tuple[Any, ...] = ()
    seconds: float = 0.0
    analysis_status: str = ""
    analysis_reason: str = ""
    notes: tuple[str, ...] = ()
    backed_up: tuple[Any, ...] = ()

    @property
    def derived_uid(self) -> str | None:
        """The latest derived run's uid, or None."""
        return self.derived_uids[-1] if self.derived_uids else None
