"""Tidy tables of offline results, in the layout of ``xsvs-bluesky results`` (private).

The beta table has exactly the columns of a derived run's results table
(:data:`xsvs_bluesky.results._tables.RECORD_KEYS`), with ``run_uid`` and
``raw_uid`` None since nothing was stored; the dynamics table has the
columns of its dynamics table, then what says whether the numbers stand:
``determined`` (False where the rate's error is as large as the rate, shown
as "not yet determined"), ``D_status`` and ``D_error_scale``
(:class:`~xsvs_bluesky.core.dynamics.DiffusionFit`), ``D_flags``.  Text,
CSV and JSON come from the same formatters the ``results`` command uses;
the dynamics text from :func:`xsvs_bluesky.live.format_dynamics_flags`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xsvs_bluesky.analysis import ExposureResult
from xsvs_bluesky.core.dynamics import DiffusionFit, DynamicsFit
from xsvs_bluesky.results import DYNAMICS_KEYS, RECORD_KEYS

if TYPE_CHECKING:  # pandas is imported where a DataFrame is made (~0.3 s)
    import pandas as pd

__all__ = ["beta_columns", "beta_table", "dynamics_table"]


def beta_columns(results: Sequence[ExposureResult]) -> dict[str, list[Any]]:
    """Return the columns of :func:`beta_table` (``RECORD_KEYS``), without pandas.

    For a command that only prints the table (``format_table`` and
    ``to_json`` take columns): pandas' import is ~0.3 s.
    """
    rows: list[dict[str, Any]] = []
    for index, res in enumerate(results):
        for j, est in enumerate(res.estimates):
            rows.append(
                {
                    "run_uid": None,
                    "raw_uid": None,
                    "exposure": index,
                    "exposure_time": float(res.exposure_time),
                    "partition": j,
                    "q": float(res.q[j]),
                    "n_pixels": int(res.n_pixels[j]),
                    "n_frames": int(res.n_frames),
                    "kbar": float(est.kbar),
                    "kbar_err": float(est.kbar_err),
                    "beta": float(est.beta),
                    "beta_err": float(est.beta_err),
                    "M": float(est.M),
                    "M_err": float(est.M_err),
                    "estimator": est.estimator,
                    "flags": [str(f) for f in est.flags],
                }
            )
    return {key: [row[key] for row in rows] for key in RECORD_KEYS}


def beta_table(results: Sequence[ExposureResult]) -> pd.DataFrame:
    """One row per exposure and q partition, columns ``RECORD_KEYS``.

    Parameters
    ----------
    results : sequence of ExposureResult
        One per exposure, in order; ``exposure`` is the position in it.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    return pd.DataFrame(beta_columns(results), columns=list(RECORD_KEYS))


def dynamics_table(
    fits: Sequence[DynamicsFit], diffusion: DiffusionFit
) -> pd.DataFrame:
    """One row per partition: ``Gamma`` (1/s), ``beta0``, then ``D`` (A^2/s).

    ``D`` and ``D_err`` (from ``Gamma = D q^2`` over all partitions) repeat
    on every row, as in the ``results`` command's dynamics table; then
    ``exponent``, ``exponent_err``, ``chi2``, ``dof`` and ``flags`` (of the
    partition's fit); ``determined`` (:attr:`DynamicsFit.determined`);
    ``D_status`` (:attr:`DiffusionFit.status`: ``"diffusive"``,
    ``"poor-fit"``, ``"non-diffusive"``, ``"not yet determined"`` or
    ``"no-data"``), ``D_error_scale`` (the factor already applied to
    ``D_err``) and ``D_flags`` (list of str), repeated on every row.
    """
    rows = [
        {
            "partition": int(f.partition),
            "q": float(f.q),
            "model": f.model,
            "gamma": float(f.gamma),
            "gamma_err": float(f.gamma_err),
            "beta0": float(f.beta0),
            "beta0_err": float(f.beta0_err),
            "D": float(diffusion.D),
            "D_err": float(diffusion.D_err),
            "exponent": float(f.exponent),
            "exponent_err": float(f.exponent_err),
            "chi2": float(f.chi2),
            "dof": int(f.dof),
            "flags": [str(x) for x in f.flags],
            "determined": bool(f.determined),
            "D_status": diffusion.status,
            "D_error_scale": float(diffusion.error_scale),
            "D_flags": [str(x) for x in diffusion.flags],
        }
        for f in fits
    ]
    columns = [
        *DYNAMICS_KEYS,
        *("exponent", "exponent_err", "chi2", "dof", "flags"),
        *("determined", "D_status", "D_error_scale", "D_flags"),
    ]
    import pandas as pd

    table = pd.DataFrame(rows, columns=columns)
    table["q"] = table["q"].astype(np.float64)
    return table
