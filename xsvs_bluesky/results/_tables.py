"""Tidy tables of derived-run results and their text, CSV and JSON forms.

Private helpers of :mod:`xsvs_bluesky.results`, which re-exports the public
names.  The tables are built from the stacked arrays of the ``results`` and
``dynamics`` streams (one row per event), so the same code serves documents
held in memory and runs read back from Tiled.
"""

from __future__ import annotations

import io
import json
import math
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DYNAMICS_KEYS",
    "RECORD_KEYS",
    "build_dynamics",
    "build_table",
    "decode_flags",
    "dynamics_records",
    "format_dynamics",
    "as_text",
    "pm_text",
    "exposure_lines",
    "format_table",
    "records",
    "table_columns",
    "to_csv",
    "to_json",
]

RECORD_KEYS: tuple[str, ...] = (
    "run_uid",
    "raw_uid",
    "exposure",
    "exposure_time",
    "partition",
    "q",
    "n_pixels",
    "n_frames",
    "kbar",
    "kbar_err",
    "beta",
    "beta_err",
    "M",
    "M_err",
    "estimator",
    "flags",
)
"""Keys of one result record, in order (one record per exposure and q)."""

DYNAMICS_KEYS: tuple[str, ...] = (
    "partition",
    "q",
    "model",
    "gamma",
    "gamma_err",
    "beta0",
    "beta0_err",
    "D",
    "D_err",
)
"""Leading columns of the dynamics table (more may follow, e.g. ``exponent``)."""

_DYNAMICS_EXTRA = ("exponent", "exponent_err", "chi2")


def decode_flags(bits: int, names: Sequence[str]) -> list[str]:
    """Flag names of an integer bit mask (bit ``i`` = ``names[i]``).

    Parameters
    ----------
    bits : int
        Bit mask as stored in the ``flags`` data key of the ``results`` stream.
    names : sequence of str
        Flag names in bit order (the data key's ``flag_names``).

    Returns
    -------
    list of str
        The names of the bits set; an unnamed bit ``i`` gives ``"bit<i>"``.
    """
    value = int(bits)
    out = []
    i = 0
    while value:
        if value & 1:
            out.append(names[i] if i < len(names) else f"bit{i}")
        value >>= 1
        i += 1
    return out


def _column(arrays: Mapping[str, NDArray[Any]], key: str, n_exp: int, n_q: int) -> Any:
    """``arrays[key]`` broadcast to ``(n_exp, n_q)`` (NaN when absent)."""
    if key not in arrays:
        return np.full((n_exp, n_q), np.nan)
    arr = np.asarray(arrays[key])
    if arr.ndim == 1:
        arr = np.repeat(arr[:, None], n_q, axis=1)
    return arr.reshape(n_exp, n_q)


def table_columns(
    run_uid: str,
    raw_uid: str | None,
    arrays: Mapping[str, NDArray[Any]],
    flag_names: Sequence[str],
) -> dict[str, Any]:
    """Return the columns of :func:`build_table` (``{key: values}``, no pandas).

    Same parameters as :func:`build_table`; keys :data:`RECORD_KEYS` in
    order, each an array or a list of one value per row.
    """
    q_all = np.asarray(arrays.get("q", np.empty((0, 0))), dtype=np.float64)
    n_exp = q_all.shape[0] if q_all.ndim == 2 else 0
    n_q = q_all.shape[1] if q_all.ndim == 2 else 0
    exposure = np.asarray(arrays.get("exposure_index", np.arange(n_exp)), np.int64)
    estimator = np.asarray(arrays.get("estimator", [""] * n_exp)).astype(str)
    flags = _column(arrays, "flags", n_exp, n_q)
    rows: dict[str, Any] = {
        "run_uid": [run_uid] * (n_exp * n_q),
        "raw_uid": [raw_uid] * (n_exp * n_q),
        "exposure": np.repeat(exposure, n_q),
        "exposure_time": np.repeat(
            np.asarray(arrays.get("exposure_time", np.full(n_exp, np.nan)), float),
            n_q,
        ),
        "partition": np.tile(np.arange(n_q, dtype=np.int64), n_exp),
        "q": q_all.ravel(),
        "n_pixels": _column(arrays, "n_pixels", n_exp, n_q).astype(np.int64).ravel(),
        "n_frames": np.repeat(
            np.asarray(arrays.get("n_frames", np.zeros(n_exp)), np.int64), n_q
        ),
    }
    for key in ("kbar", "kbar_err", "beta", "beta_err", "M", "M_err"):
        rows[key] = _column(arrays, key, n_exp, n_q).astype(np.float64).ravel()
    rows["estimator"] = list(np.repeat(estimator, n_q))
    rows["flags"] = [
        [] if not np.isfinite(b) else decode_flags(int(b), flag_names)
        for b in flags.astype(np.float64).ravel()
    ]
    return {key: rows[key] for key in RECORD_KEYS}


def build_table(
    run_uid: str,
    raw_uid: str | None,
    arrays: Mapping[str, NDArray[Any]],
    flag_names: Sequence[str],
) -> pd.DataFrame:
    """Build the tidy ``beta(t_e, q)`` table of a ``results`` stream.

    Parameters
    ----------
    run_uid, raw_uid : str
        uids of the derived run and of the raw run it analysed.
    arrays : mapping
        Data of the ``results`` stream, each key stacked over events
        (exposures) on the first axis.
    flag_names : sequence of str
        Names of the flag bits.

    Returns
    -------
    pandas.DataFrame
        One row per exposure and partition, columns :data:`RECORD_KEYS`.
    """
    import pandas as pd

    columns = table_columns(run_uid, raw_uid, arrays, flag_names)
    return pd.DataFrame(columns, columns=list(RECORD_KEYS))


Table = Any
"""A results table: a ``pandas.DataFrame`` or :func:`table_columns`' mapping."""

_Record = namedtuple("_Record", RECORD_KEYS)  # type: ignore[misc]


def _rows(table: Table) -> Iterator[Any]:
    """Yield the rows of ``table`` in :data:`RECORD_KEYS` order, fields by name."""
    if isinstance(table, Mapping):
        for row in zip(*(table[k] for k in RECORD_KEYS), strict=True):
            yield _Record(*row)
        return
    yield from table.loc[:, list(RECORD_KEYS)].itertuples(index=False, name="_Record")


def _n_rows(table: Table) -> int:
    if isinstance(table, Mapping):
        return len(table[RECORD_KEYS[0]])
    return len(table)


def build_dynamics(
    arrays: Mapping[str, NDArray[Any]], flag_names: Sequence[str] = ()
) -> pd.DataFrame | None:
    """Build the dynamics table of a ``dynamics`` stream (None when empty).

    Parameters
    ----------
    arrays : mapping
        Data of the ``dynamics`` stream stacked over events: one event of
        per-partition arrays (the last event wins if there are several).
    flag_names : sequence of str
        Names of the bits of its ``flags`` key.

    Returns
    -------
    pandas.DataFrame or None
        One row per partition: :data:`DYNAMICS_KEYS` (``D``, ``D_err``
        repeated on every row), then ``exponent``, ``exponent_err``,
        ``chi2``, ``dof`` and ``flags`` (list of str), then ``D_status`` and
        ``D_error_scale`` (repeated on every row) when the run stored them.
    """
    import pandas as pd

    gamma = np.asarray(arrays.get("gamma", np.empty((0, 0))), dtype=np.float64)
    if gamma.ndim != 2 or gamma.size == 0:
        return None
    n = gamma.shape[1]

    def last(key: str, fill: Any = math.nan) -> NDArray[Any]:
        if key not in arrays:
            return np.full(n, fill)
        arr = np.asarray(np.asarray(arrays[key])[-1])
        return np.full(n, arr) if arr.ndim == 0 else arr.reshape(n)

    out: dict[str, Any] = {
        "partition": np.arange(n, dtype=np.int64),
        "q": last("q").astype(np.float64),
        "model": [str(m) for m in last("model", "")],
    }
    for key in (*DYNAMICS_KEYS[3:], *_DYNAMICS_EXTRA):
        out[key] = last(key).astype(np.float64)
    out["dof"] = last("dof", 0).astype(np.int64)
    out["flags"] = [decode_flags(int(b), flag_names) for b in last("flags", 0)]
    if "D_status" in arrays:
        out["D_status"] = [str(v) for v in last("D_status", "")]
    if "D_error_scale" in arrays:
        out["D_error_scale"] = last("D_error_scale").astype(np.float64)
    return pd.DataFrame(out)


def _plain(value: Any) -> Any:
    """Convert to a JSON-ready Python value: NaN and infinities -> None."""
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(table: Table) -> list[dict[str, Any]]:
    """Convert a table to JSON-ready records with exactly :data:`RECORD_KEYS`.

    Parameters
    ----------
    table : pandas.DataFrame or mapping
        A results table (e.g. ``RunResults.table``, or its columns
        ``RunResults.table_columns``).

    Returns
    -------
    list of dict
        One dict per row, keys in :data:`RECORD_KEYS` order, plain Python
        values (``NaN`` -> ``None``, ``flags`` a list of str).
    """
    out = []
    for row in _rows(table):
        rec = {key: _plain(value) for key, value in zip(RECORD_KEYS, row, strict=True)}
        rec["flags"] = [str(f) for f in (rec["flags"] or [])]
        out.append(rec)
    return out


def dynamics_records(dynamics: pd.DataFrame) -> list[dict[str, Any]]:
    """Convert a dynamics table to JSON-ready records (``NaN`` -> ``None``)."""
    keys = list(dynamics.columns)
    return [
        {k: _plain(v) for k, v in zip(keys, row, strict=True)}
        for row in dynamics.itertuples(index=False, name=None)
    ]


def to_json(table: Table, *, indent: int | None = 2) -> str:
    """Return the :func:`records` of ``table`` as a JSON array (strict JSON)."""
    return json.dumps(records(table), indent=indent, allow_nan=False)


def to_csv(table: Table) -> str:
    """Return the :func:`records` of ``table`` as CSV text.

    Columns :data:`RECORD_KEYS`; ``flags`` joined with ``;``; missing values
    empty; floats with full precision.
    """
    import pandas as pd

    if isinstance(table, Mapping):
        table = pd.DataFrame(table, columns=list(RECORD_KEYS))
    frame = table.loc[:, list(RECORD_KEYS)].copy()
    frame["flags"] = [";".join(map(str, f)) for f in frame["flags"]]
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def pm_text(value: float, err: float, fmt: str = "{:.4f}") -> str:
    if not math.isfinite(value):
        return "nan"
    text = fmt.format(value)
    return f"{text} +- {fmt.format(err)}" if math.isfinite(err) else text


def as_text(value: float, fmt: str) -> str:
    return fmt.format(value) if math.isfinite(value) else "nan"


def exposure_lines(head: str, table: Any, line: Callable[[Any], str]) -> list[str]:
    """Return the lines of a text table, one exposure block after the other.

    ``head``, a rule, then ``line(row)`` for each row of ``table`` (a
    DataFrame, or an iterable of rows with named fields), with a blank line
    wherever its ``exposure`` column changes.
    """
    lines = [head, "-" * len(head)]
    previous = None
    rows = table.itertuples(index=False) if hasattr(table, "itertuples") else table
    for row in rows:
        if previous is not None and row.exposure != previous:
            lines.append("")
        previous = row.exposure
        lines.append(line(row))
    return lines


def format_table(table: Table) -> str:
    """Readable fixed-width text of a results table, one line per row.

    Columns: exposure index, exposure time (s), q (1/Angstrom), mean count
    ``kbar`` (counts/pixel/frame), ``beta`` with its standard error, frames
    and flags; a blank line separates exposures.
    """
    head = (
        f"{'exp':>4} {'t_e [s]':>10} {'q [1/A]':>10} {'kbar':>9} "
        f"{'beta +- err':>19} {'frames':>7}  flags"
    )
    lines = exposure_lines(
        head,
        _rows(table),
        lambda row: (
            f"{int(row.exposure):>4d} {as_text(row.exposure_time, '{:.3e}'):>10} "
            f"{as_text(row.q, '{:.3e}'):>10} {as_text(row.kbar, '{:.4g}'):>9} "
            f"{pm_text(row.beta, row.beta_err):>19} {int(row.n_frames):>7d}  "
            f"{','.join(row.flags)}".rstrip()
        ),
    )
    if _n_rows(table) == 0:
        lines.append("(no results)")
    return "\n".join(lines)


def format_dynamics(dynamics: pd.DataFrame) -> str:
    """Readable fixed-width text of a dynamics table and the fitted ``D``.

    Columns: partition, q (1/Angstrom), model, ``Gamma`` (1/s) and ``beta0``
    with standard errors; then ``D`` (Angstrom^2/s) from ``Gamma = D q^2``.
    """
    head = (
        f"{'part':>4} {'q [1/A]':>10} {'model':>12} {'Gamma +- err [1/s]':>24} "
        f"{'beta0 +- err':>19}"
    )
    lines = [head, "-" * len(head)]
    for row in dynamics.itertuples(index=False):
        lines.append(
            f"{int(row.partition):>4d} {as_text(row.q, '{:.3e}'):>10} "
            f"{row.model:>12} {pm_text(row.gamma, row.gamma_err, '{:.4g}'):>24} "
            f"{pm_text(row.beta0, row.beta0_err):>19}"
        )
    if len(dynamics):
        d = float(dynamics["D"].iloc[0])
        d_err = float(dynamics["D_err"].iloc[0])
        lines.append("")
        lines.append(f"D = {pm_text(d, d_err, '{:.4g}')} Angstrom^2/s (Gamma = D q^2)")
    return "\n".join(lines)
