"""Look-ups of replayed runs in the Tiled catalogs (private; see :mod:`.replay`).

- :func:`find_replays`: successful raw runs with a given content hash (the
  duplicate check before a replay);
- :func:`derived_runs`: the derived runs of a raw run;
- :func:`next_scan_id`: the scan_id of the next raw run.

:func:`find_replays` and :func:`derived_runs` are re-exported from
:mod:`xsvs_bluesky.replay`.
"""

from __future__ import annotations

import logging
from typing import Any

from xsvs_bluesky.replay._docs import REPLAY_KEY

__all__ = ["derived_runs", "find_replays", "next_scan_id"]

logger = logging.getLogger(__name__)


def find_replays(raw_catalog: Any, content_hash: str) -> list[str]:
    """Uids of the successful raw runs of ``raw_catalog`` with this content hash.

    Runs stopped with ``exit_status`` other than ``"success"`` (failed or
    interrupted replays) do not count.
    """
    from tiled.queries import Key

    found = raw_catalog.search(Key(f"{REPLAY_KEY}.content_hash") == content_hash)
    found = found.search(Key("stop.exit_status") == "success")
    return [str(uid) for uid in found.keys()]


def derived_runs(processed: Any, raw_uid: str) -> tuple[str, ...]:
    """Uids of the derived runs of raw run ``raw_uid`` in ``processed``."""
    from tiled.queries import Key

    found = processed.search(Key("original_run_uid") == raw_uid)
    return tuple(str(k) for k in found.keys())


def next_scan_id(raw: Any) -> int:
    """One more than the scan_id of the last run of ``raw`` (1 when none)."""
    try:
        if len(raw):
            last = raw.values()[-1].metadata["start"].get("scan_id")
            if isinstance(last, int):
                return last + 1
    except Exception:  # a scan_id is a convenience, never a reason to fail
        logger.debug("no scan_id found in the raw catalog", exc_info=True)
    return 1
