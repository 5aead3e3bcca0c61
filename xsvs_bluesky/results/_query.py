"""Search a processed catalog for derived XSVS runs (private).

Public through :mod:`xsvs_bluesky.results`.  Queries run on the start
documents with :mod:`tiled.queries`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from xsvs_bluesky.errors import OptionError
from xsvs_bluesky.results._streams import ANALYSIS_PLAN_NAME, RunNotFoundError

__all__ = ["find_run", "search_runs"]

TimeLike = float | datetime | str


def _timestamp(value: TimeLike, name: str) -> float:
    """Convert a timestamp, datetime or ISO 8601 string to epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            raise OptionError(
                f"{name} = {value!r} is not a date; give ISO 8601 such as "
                "'2024-05-31' or '2024-05-31T14:00'"
            ) from None
    return float(value)


def _derived(processed: Any) -> Any:
    from tiled.queries import Key

    return processed.search(Key("start.plan_name") == ANALYSIS_PLAN_NAME)


def search_runs(
    processed: Any,
    *,
    sample_name: str | None = None,
    original_run_uid: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    estimator: str | None = None,
    exit_status: str | None = None,
) -> list[Any]:
    """Find the derived XSVS runs of a catalog matching every criterion given.

    Parameters
    ----------
    processed : CatalogOfBlueskyRuns
        The processed catalog (e.g. ``open_catalogs(...).processed``).
    sample_name : str, optional
        Exact ``sample_name`` of the start document.
    original_run_uid : str, optional
        uid of the raw run, or its first characters.
    since, until : float, datetime or str, optional
        Start-time bounds, ``since <= time < until``: seconds since the
        epoch, a datetime (naive = local time) or an ISO 8601 string.
    estimator : str, optional
        Main estimator (``xsvs.estimator``), e.g. ``"mle"``.
    exit_status : str, optional
        ``"success"``, ``"abort"`` or ``"fail"`` of the stop document (runs
        still open have none).  Default: any status, open runs included.

    Returns
    -------
    list
        Run clients, oldest first.

    Raises
    ------
    XSVSError
        If ``since`` or ``until`` is not a date.
    """
    from tiled.queries import Comparison, Key, Like

    found = _derived(processed)
    if sample_name is not None:
        found = found.search(Key("start.sample_name") == sample_name)
    if original_run_uid is not None:
        if len(original_run_uid) >= 36:
            query: Any = Key("start.original_run_uid") == original_run_uid
        else:
            query = Like("start.original_run_uid", f"{original_run_uid}%")
        found = found.search(query)
    if estimator is not None:
        found = found.search(Key("start.xsvs.estimator") == estimator)
    if exit_status is not None:
        found = found.search(Key("stop.exit_status") == exit_status)
    if since is not None:
        found = found.search(Comparison("ge", "start.time", _timestamp(since, "since")))
    if until is not None:
        found = found.search(Comparison("lt", "start.time", _timestamp(until, "until")))
    return list(found.values())


def find_run(
    processed: Any, uid: str | None = None, *, any_status: bool = False
) -> Any:
    """Find one derived run: the latest, or by uid, partial uid or raw-run uid.

    The latest run, a ``scan_id`` and a raw-run uid pick only complete,
    successful derived runs (a run still open, aborted or failed is never
    taken for "the result" by default); a derived run's own uid (full or
    partial) names that run whatever its status.

    Parameters
    ----------
    processed : CatalogOfBlueskyRuns
        The processed catalog.
    uid : str, optional
        Full or partial (>= 5 characters) uid of the derived run, or of the
        raw run it analysed (its latest analysis is returned), or a
        ``scan_id`` (digits, fewer than 5).  None: the latest derived run.
    any_status : bool
        Let the latest, ``scan_id`` and raw-run look-ups pick runs that are
        open, aborted or failed too.

    Returns
    -------
    BlueskyRun client

    Raises
    ------
    RunNotFoundError
        If nothing matches, or a partial uid is ambiguous or too short.
    """
    from tiled.queries import Key, Like

    # plain searches, so that any container client works (the Bluesky
    # catalog's own cat[scan_id] and partial-uid look-ups need its class)
    derived = _derived(processed)
    complete = (
        derived if any_status else derived.search(Key("stop.exit_status") == "success")
    )
    if uid is None:
        try:
            return complete.values().last()
        except IndexError:
            raise RunNotFoundError(
                "the processed catalog holds no complete, successful derived XSVS "
                "run (xsvs-bluesky results --list shows every run and its status); "
                "analyse a run "
                "first (xsvs-bluesky demo, or XSVSCallback with a TiledWriter)"
            ) from None
    uid = uid.strip()
    if uid.isdigit() and len(uid) < 5:
        found = complete.search(Key("start.scan_id") == int(uid))
        if not len(found):
            raise RunNotFoundError(
                f"no complete, successful derived run with scan_id {uid}"
            )
        return found.values().last()
    if len(uid) < 5:
        raise RunNotFoundError(f"uid {uid!r} is too short; give at least 5 characters")
    if len(uid) == 36:
        try:
            return derived[uid]
        except KeyError:
            pass
    matches = list(derived.search(Like("start.uid", f"{uid}%")).values().head(2))
    if len(matches) > 1:
        raise RunNotFoundError(
            f"uid {uid!r}: Partial uid {uid} has multiple matches. Include more "
            "characters to get a unique match."
        )
    if matches:
        return matches[0]
    raw = complete.search(Like("start.original_run_uid", f"{uid}%"))
    if len(raw):
        return raw.values().last()
    raise RunNotFoundError(
        f"no derived run with uid (or raw-run uid) starting {uid!r} in the "
        "processed catalog; list them with 'xsvs-bluesky results --list'"
    )
