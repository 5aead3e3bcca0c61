"""Settings of a re-analysis: those of the latest analysis, and what differs (private).

Helpers of :mod:`xsvs_bluesky.reanalyze`: :func:`latest_analysis` finds the
latest successful derived run of a raw run; :func:`resolve_settings` starts
from its recorded settings (estimator, flat-field mode, the other analysis
options, q partitions) and applies the ones named by the caller;
:func:`setting_changes` says, one line per setting, what the new analysis
does differently and why, and when a better default estimator exists than
the one kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from xsvs_bluesky.errors import OptionError
from xsvs_bluesky.options import (
    AnalysisOptions,
    Estimator,
    FlatFieldMode,
    Limits,
    default_estimator,
)

__all__ = [
    "Baseline",
    "Settings",
    "latest_analysis",
    "resolve_settings",
    "setting_changes",
]

_WHY_DEFAULT = {
    Estimator.MLE_INTENSITY: (
        "each pixel's mean from the flat field and the intensity's shape across "
        "the ring: unbiased when the intensity varies inside a ring"
    ),
    Estimator.MLE: "divided and rounded counts are not photon counts",
}


@dataclass(frozen=True)
class Baseline:
    """The latest successful derived run of a raw run: what it recorded.

    Attributes
    ----------
    uid : str
        uid of the derived run.
    time : float or None
        Its start time, s since 1970.
    xsvs : mapping
        The ``xsvs`` dict of its start document (settings, masks, flat field).
    """

    uid: str
    time: float | None
    xsvs: Mapping[str, Any]

    def describe(self) -> str:
        """Name it: ``derived run 6a0c40c5 (2024-05-31T14:02:11)``."""
        when = ""
        if self.time is not None:
            stamp = datetime.fromtimestamp(self.time).isoformat(timespec="seconds")
            when = f" ({stamp})"
        return f"derived run {self.uid[:8]}{when}"


@dataclass(frozen=True)
class Settings:
    """The settings of a new analysis and which of them the caller named.

    Attributes
    ----------
    options : AnalysisOptions
        Options of the new analysis (main estimator None: the default).
    partitions : dict
        q partition parameters (1/Angstrom): ``q1, q2, qs, dq`` or
        ``centers, dq``.
    named : frozenset of str
        Settings the caller gave: ``"estimator"``, ``"flat_field_mode"``,
        ``"options"`` (a whole :class:`AnalysisOptions`) and the partition
        keys given.
    notes : tuple of str
        Lines said while resolving (e.g. no earlier analysis).
    """

    options: AnalysisOptions
    partitions: dict[str, Any]
    named: frozenset[str]
    notes: tuple[str, ...] = ()


def latest_analysis(processed: Any, raw_uid: str) -> Baseline | None:
    """Return the latest successful derived run of raw run ``raw_uid``, or None.

    Parameters
    ----------
    processed : CatalogOfBlueskyRuns
        The processed catalog.
    raw_uid : str
        Full uid of the raw run.
    """
    from xsvs_bluesky.results import search_runs

    runs = search_runs(processed, original_run_uid=raw_uid, exit_status="success")
    starts = [dict(r.metadata.get("start") or {}) for r in runs]
    starts = [s for s in starts if s.get("original_run_uid") == raw_uid]
    if not starts:
        return None

    def when(start: Mapping[str, Any]) -> float:
        stamp = start.get("time")
        return float(stamp) if isinstance(stamp, int | float) else -math.inf

    start = max(starts, key=when)  # the last one written wins a tie
    stamp = start.get("time")
    return Baseline(
        uid=str(start.get("uid")),
        time=float(stamp) if isinstance(stamp, int | float) else None,
        xsvs=dict(start.get("xsvs") or {}),
    )


def _recorded_partitions(xsvs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the partition parameters a derived run was built from, or None."""
    parts = xsvs.get("partitions")
    if not isinstance(parts, Mapping):
        return None
    if all(parts.get(k) is not None for k in ("q1", "q2", "qs", "dq")):
        return {k: parts[k] for k in ("q1", "q2", "qs", "dq")}
    if parts.get("centers") is not None:
        dq = parts.get("dq", parts.get("half_width"))
        if dq is not None:
            return {"centers": list(parts["centers"]), "dq": dq}
    return None


def resolve_settings(
    baseline: Baseline | None,
    raw_start: Mapping[str, Any],
    *,
    options: AnalysisOptions | None,
    estimator: Estimator | str | None,
    flat_field: FlatFieldMode | str | None,
    partitions: Mapping[str, Any] | None,
    limits: Limits | None,
) -> Settings:
    """Start from the baseline's settings; apply those the caller names.

    ``options`` given: its settings are all named (used as they are).
    Otherwise the baseline's recorded options (estimator, flat-field mode,
    extra estimators, histogram and dynamics settings), or the defaults
    without a baseline.  ``estimator``, ``flat_field`` and ``partitions``
    replace single settings; ``limits`` (never recorded) replace the limits.

    Raises
    ------
    OptionError
        On an unknown estimator or flat-field mode given.
    """
    notes: list[str] = []
    named: set[str] = set()
    if options is not None:
        base = options
        named.add("options")
        if options.estimator is not None:
            named.add("estimator")
    elif baseline is not None:
        try:
            base = AnalysisOptions.from_metadata(baseline.xsvs)
        except OptionError as err:
            notes.append(
                f"the settings of {baseline.describe()} cannot be read ({err}): "
                "starting from the defaults"
            )
            base = AnalysisOptions()
    else:
        base = AnalysisOptions()
    given = AnalysisOptions.merge(
        base, estimator=estimator, flat_field_mode=flat_field, limits=limits
    )
    if estimator is not None:
        named.add("estimator")
    if flat_field is not None:
        named.add("flat_field_mode")
    spec = None if baseline is None else _recorded_partitions(baseline.xsvs)
    if spec is None:
        raw = raw_start.get("xsvs_partitions") or raw_start.get("partitions")
        spec = dict(raw or {})
    new = {k: v for k, v in (partitions or {}).items() if v is not None}
    named.update(new)
    return Settings(given, _merged(spec, new), frozenset(named), tuple(notes))


def _merged(spec: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    if "centers" in new:
        out = {"dq": out.get("dq")}
    elif any(k in new for k in ("q1", "q2", "qs")):
        out.pop("centers", None)
    out.update(new)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _spec_text(spec: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``dq 0.0002, q1 0.003`` (``centers`` as their count and range)."""
    out = []
    for key in keys:
        value = spec.get(key)
        if isinstance(value, Sequence) and not isinstance(value, str):
            text = (
                f"{len(value)} from {float(min(value)):g} to {float(max(value)):g}"
                if len(value)
                else "none"
            )
        elif isinstance(value, float | int):
            text = f"{float(value):g}"
        else:
            text = "none" if value is None else str(value)
        out.append(f"{key} {text}")
    return ", ".join(out)


def _identity(entry: Mapping[str, Any]) -> str:
    """Identify a mask or flat field: its file's SHA-256, else its array's."""
    return str(entry.get("file_sha256") or entry.get("sha256") or entry.get("name"))


def _names(entries: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(str(e.get("name", "?")) for e in entries) or "none"


def setting_changes(
    baseline: Baseline | None,
    settings: Settings,
    *,
    raw_uid: str,
    main: Estimator,
    partitions: Mapping[str, Any],
    masks: Sequence[Mapping[str, Any]],
    flat: Mapping[str, Any] | None,
    flat_named: bool,
) -> list[str]:
    """Say, one line each, how the new analysis differs from the baseline.

    Parameters
    ----------
    baseline : Baseline or None
        The latest successful analysis (None: there is none, one line says so).
    settings : Settings
        What :func:`resolve_settings` made.
    raw_uid : str
        The raw run.
    main : Estimator
        The new analysis's main estimator (resolved).
    partitions : mapping
        Its q partition parameters.
    masks : sequence of mapping
        Identities of its masks (``name``, ``file_sha256``).
    flat : mapping or None
        Identity of its flat field, None when none is loaded.
    flat_named : bool
        Whether the raw run names a flat-field file.

    Returns
    -------
    list of str
        One line per setting that differs, with the reason; one line when
        a better default estimator exists than the one kept; one line when
        ``mle-weighted`` has no flat field to weight with.
    """
    options = settings.options
    mode = options.flat_field_mode
    lines = list(settings.notes)
    given = "given" if "options" not in settings.named else "given (options)"
    if baseline is not None:
        lines.insert(
            0,
            f"starting from the settings of {baseline.describe()}, the latest "
            f"successful analysis of raw run {raw_uid[:8]}",
        )
    if baseline is None:
        lines.append(
            f"raw run {raw_uid[:8]} has no successful analysis to start from: the "
            "raw run's partitions, masks and flat field and the default settings"
        )
    else:
        rec = baseline.xsvs
        was = f"derived run {baseline.uid[:8]}:"  # the first line gives its date
        old_main = rec.get("estimator")
        if old_main is not None and str(old_main) != main.value:
            why = given if "estimator" in settings.named else "the default"
            lines.append(f"estimator: {main.value} ({was} {old_main}): {why}")
        old = None
        if "options" in settings.named:
            try:
                old = AnalysisOptions.from_metadata(rec)
            except OptionError:
                old = None  # said by no line: the caller named every setting
        old_mode = old.flat_field_mode if old else options_mode(rec)
        if old_mode is not None and old_mode is not mode:
            lines.append(
                f"flat-field mode: {mode.value} ({was} {old_mode.value}): {given}"
            )
        if old is not None:
            lines.extend(_option_changes(old, options, main, was, given))
        old_spec = _recorded_partitions(rec)
        if old_spec is not None:
            keys = sorted(set(old_spec) | set(partitions))
            diff = [k for k in keys if not _same(partitions.get(k), old_spec.get(k))]
            if diff:
                why = (
                    given
                    if any(k in settings.named for k in diff)
                    else "the raw run's (the latest analysis recorded none usable)"
                )
                lines.append(
                    f"q partitions: {_spec_text(partitions, diff)} ({was} "
                    f"{_spec_text(old_spec, diff)}): {why}"
                )
        lines.extend(_calibration_changes(rec, masks, flat, flat_named, mode, was))
        if "estimator" not in settings.named and old_main is not None:
            better = default_estimator(flat is not None, mode)
            if better is not main:
                lines.append(
                    f"estimator: kept {main.value} of {was[:-1]}; the default is now "
                    f"{better.value} ({_WHY_DEFAULT.get(better, 'see the docs')}); "
                    f"give estimator={better.value!r} (--estimator {better.value}) "
                    "to use it"
                )
    weights = flat is not None and mode is FlatFieldMode.WEIGHTS
    if main is Estimator.MLE_WEIGHTED and not weights:
        why = (
            f"flat-field mode {mode.value}"
            if flat is not None or mode is not FlatFieldMode.WEIGHTS
            else "no flat field"
        )
        lines.append(
            f"estimator mle-weighted has no flat field to weight with ({why}): it "
            "fits each partition as one group, as mle does"
        )
    return lines


def options_mode(xsvs: Mapping[str, Any]) -> FlatFieldMode | None:
    """Return the flat-field mode a derived run recorded (None if unreadable)."""
    try:
        return AnalysisOptions.from_metadata(xsvs).flat_field_mode
    except OptionError:
        return None


def _option_changes(
    old: AnalysisOptions,
    new: AnalysisOptions,
    main: Estimator,
    was: str,
    given: str,
) -> list[str]:
    """Lines for the other options of a whole options object given."""
    lines = []
    old_md, new_md = old.to_metadata(), new.to_metadata()
    old_md["extra_estimators"] = [e for e in old_md["extra_estimators"] if e != main]
    new_md["extra_estimators"] = [e for e in new_md["extra_estimators"] if e != main]
    for key in sorted(set(old_md) - {"estimator", "flat_field_mode"}):
        if key == "histogram_backend":
            continue  # what "auto" resolved to is recorded; results do not depend
        if not _same(old_md.get(key), new_md.get(key)):
            lines.append(f"{key}: {new_md.get(key)} ({was} {old_md.get(key)}): {given}")
    return lines


def _calibration_changes(
    rec: Mapping[str, Any],
    masks: Sequence[Mapping[str, Any]],
    flat: Mapping[str, Any] | None,
    flat_named: bool,
    mode: FlatFieldMode,
    was: str,
) -> list[str]:
    """Lines for masks and flat field that differ from the recorded ones."""
    lines = []
    old_masks = [m for m in rec.get("masks") or [] if isinstance(m, Mapping)]
    new_ids = {_identity(m) for m in masks}
    old_ids = {_identity(m) for m in old_masks}
    lost = [m for m in old_masks if _identity(m) not in new_ids]
    added = [m for m in masks if _identity(m) not in old_ids]
    if lost:
        lines.append(
            f"masks: {_names(lost)} of {was[:-1]} not used: not reachable (the raw "
            f"run names no such mask file; its masks: {_names(masks)})"
        )
    if added:
        lines.append(
            f"masks: {_names(added)} used, named by the raw run ({was} "
            f"{_names(old_masks)})"
        )
    old_flat = rec.get("flat_field")
    if not isinstance(old_flat, Mapping):
        old_flat = None
    if mode is FlatFieldMode.NONE:
        return lines  # the mode says it (a line when it changed)
    if old_flat is not None and flat is None:
        why = (
            "not reachable (the raw run names no flat-field file)"
            if not flat_named
            else "not loaded"
        )
        lines.append(f"flat field: none ({was} {old_flat.get('name')}): {why}")
    elif old_flat is None and flat is not None:
        lines.append(
            f"flat field: {flat.get('name')} ({was} none): named by the raw run"
        )
    elif old_flat is not None and flat is not None:
        if _identity(old_flat) != _identity(flat):
            lines.append(
                f"flat field: {flat.get('name')} ({was} {old_flat.get('name')}, "
                "other bytes): named by the raw run"
            )
    return lines
