"""Text of a dynamics fit with its flags: what every dynamics table prints.

Used by the live table, ``analyze --dynamics`` and the demo, so the three
say the same thing the same way: a flags column per partition, "not yet
determined" for a rate whose error is as large as the rate, and the line of
:meth:`~xsvs_bluesky.core.dynamics.DiffusionFit.describe` for ``D`` (which
refuses to present ``D`` when ``Gamma/q^2`` is not constant within errors,
and states the error inflation of a poor fit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from xsvs_bluesky.core.dynamics import (
    DiffusionFit,
    not_yet_determined,
)
from xsvs_bluesky.results import as_text, pm_text

__all__ = ["NOT_YET_DETERMINED", "diffusion_from_record", "format_dynamics_flags"]

NOT_YET_DETERMINED = "not yet determined"
"""What a table shows instead of a rate (or ``D``) whose error is >= the value."""

_INFLATE_REDUCED_CHI2 = 2.0  # core's rule: poor-fit with chi2/dof > 2 is inflated


def diffusion_from_record(record: Mapping[str, Any] | None) -> DiffusionFit | None:
    """Rebuild a :class:`DiffusionFit` from the ``dynamics`` stream's keys.

    Parameters
    ----------
    record : mapping or None
        ``D``, ``D_err``, ``q_exponent``, ``q_exponent_err``, ``D_chi2``,
        ``D_dof``, ``D_flags`` (comma-separated) and ``D_error_scale``, as
        the derived run's ``dynamics`` stream (and ``RunResults.diffusion``)
        hold them.

    Returns
    -------
    DiffusionFit or None
        None without a record or ``D``.  Runs written before the stream
        stored ``D_error_scale``: it is rebuilt from the flags,
        ``sqrt(chi2/dof)`` for a ``poor-fit`` with ``chi2/dof > 2`` (the
        rule that inflated it), else 1.
    """
    if not record or "D" not in record:
        return None

    def num(key: str) -> float:
        value = record.get(key)
        try:
            return math.nan if value is None else float(value)
        except (TypeError, ValueError):
            return math.nan

    raw = record.get("D_flags") or ""
    flags = tuple(f for f in str(raw).split(",") if f)
    chi2, dof_f = num("D_chi2"), num("D_dof")
    dof = int(dof_f) if math.isfinite(dof_f) else 0
    scale = 1.0
    stored = num("D_error_scale")
    if math.isfinite(stored):
        scale = stored
    elif "poor-fit" in flags and dof > 0 and chi2 / dof > _INFLATE_REDUCED_CHI2:
        scale = math.sqrt(chi2 / dof)
    return DiffusionFit(
        D=num("D"),
        D_err=num("D_err"),
        exponent=num("q_exponent"),
        exponent_err=num("q_exponent_err"),
        chi2=chi2,
        dof=dof,
        flags=flags,
        error_scale=scale,
    )


def _flags_text(flags: Any) -> str:
    if isinstance(flags, str):
        flags = [f for f in flags.replace(";", ",").split(",") if f]
    names = [str(f) for f in (flags or ())]
    return ",".join(names) if names else "-"


def format_dynamics_flags(
    table: Any, diffusion: DiffusionFit | None, *, indent: str = ""
) -> str:
    """Readable text of a dynamics table with its flags, then ``D``.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per partition with ``partition``, ``q`` (1/Angstrom),
        ``model``, ``gamma``, ``gamma_err`` (1/s), ``beta0``, ``beta0_err``
        and ``flags`` (list of str), as :func:`xsvs_bluesky.results.build_dynamics`
        and :func:`xsvs_bluesky.offline.dynamics_table` make it.
    diffusion : DiffusionFit or None
        The ``Gamma = D q^2`` fit; None for no ``D`` line.
    indent : str
        Prefix of every line.

    Returns
    -------
    str
        Columns part, q, model, ``Gamma +- err`` (or "not yet determined"
        when the error is as large as the rate), ``beta0 +- err`` and the
        fit's flags; a blank line; :meth:`DiffusionFit.describe` and the D
        fit's own flags.
    """
    head = (
        f"{'part':>4} {'q [1/A]':>10} {'model':>12} {'Gamma +- err [1/s]':>24} "
        f"{'beta0 +- err':>19}  flags"
    )
    lines = [head, "-" * len(head)]
    for row in table.itertuples(index=False):
        gamma, gamma_err = float(row.gamma), float(row.gamma_err)
        if math.isfinite(gamma) and not_yet_determined(gamma, gamma_err):
            rate = NOT_YET_DETERMINED
        else:
            rate = pm_text(gamma, gamma_err, "{:.4g}")
        lines.append(
            f"{int(row.partition):>4d} {as_text(float(row.q), '{:.3e}'):>10} "
            f"{row.model:>12} {rate:>24} "
            f"{pm_text(float(row.beta0), float(row.beta0_err)):>19}  "
            f"{_flags_text(row.flags)}"
        )
    if diffusion is not None:
        lines.append("")
        text = diffusion.describe()
        if diffusion.status in ("diffusive", "poor-fit"):
            text = text.replace(" A^2/s", " Angstrom^2/s (Gamma = D q^2)", 1)
        lines.append(f"{text}; status {diffusion.status}")
        if diffusion.flags:
            lines.append(f"D fit flags: {','.join(diffusion.flags)}")
    return "\n".join(indent + line if line else line for line in lines)
