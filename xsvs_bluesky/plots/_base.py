"""Building blocks of the XSVS figures: styles, the two seed panels, PNG output.

Private; public through :mod:`xsvs_bluesky.plots`.  Imports matplotlib, so
import it only when drawing.  Figures are :class:`matplotlib.figure.Figure`
objects built without pyplot: headless-safe, no window, no ``plt.show``.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from xsvs_bluesky.core.dynamics import visibility_kernel
from xsvs_bluesky.core.estimators import nbinom_pmf

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = [
    "BETA_SHIFT",
    "INV_A",
    "MARKERS",
    "draw_beta",
    "draw_histograms",
    "figure_png",
    "new_figure",
    "save_figure",
    "style",
    "te_label",
]

BETA_SHIFT = 0.1
"""Vertical shift of the ``beta(t_e)`` curve of q index ``j``: ``j * BETA_SHIFT``."""

MARKERS = ("o", "v", "^", "<", ">", "D", "s", "p", "h", "*", "P", "X")
INV_A = r"$\mathrm{\AA}^{-1}$"
_X_MAX = 20.0  # largest k/<k> drawn, as in the pyxsvs figure


def new_figure(
    fig: Figure | None = None, figsize: tuple[float, float] = (6, 4.5)
) -> Figure:
    """Return ``fig`` cleared, or a new headless figure with constrained layout."""
    if fig is None:
        return Figure(figsize=figsize, layout="constrained")
    fig.clear()
    return fig


def style(index: int) -> dict[str, Any]:
    return {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)]}


def te_label(t_e: float) -> str:
    return f"{t_e * 1e3:.2f} ms" if math.isfinite(t_e) else "t_e unknown"


def draw_histograms(
    ax: Axes,
    probability: ArrayLike,
    kbar: ArrayLike,
    M: ArrayLike,
    exposure_times: ArrayLike,
    *,
    n_bins: ArrayLike | None = None,
    q: float | None = None,
    legend: bool = True,
) -> None:
    """Draw ``P(k)`` against ``k/<k>`` with negative-binomial curves, per exposure.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw (log y).
    probability : array_like, shape (n_exp, K)
        ``P(k)`` of each exposure at one q.
    kbar, M : array_like, shape (n_exp,)
        Mean count and number of modes of each exposure (the fit).
    exposure_times : array_like, shape (n_exp,)
        Exposure times, s (legend).
    n_bins : array_like, optional
        Valid bins of each exposure (default all).
    q : float, optional
        The partition centre, 1/Angstrom (title).
    legend : bool, optional
        Add the legend of exposure times (right of the axes).

    Notes
    -----
    Data lines carry ``gid="data"``, fitted curves ``gid="fit"``.
    """
    prob = np.atleast_2d(np.asarray(probability, dtype=np.float64))
    kbar_a = np.asarray(kbar, dtype=np.float64).reshape(-1)
    m_a = np.asarray(M, dtype=np.float64).reshape(-1)
    t_a = np.asarray(exposure_times, dtype=np.float64).reshape(-1)
    bins = np.full(len(prob), prob.shape[1]) if n_bins is None else np.asarray(n_bins)
    smallest, largest = 1.0, 0.0
    x_max = 1.0
    for i, row in enumerate(prob):
        if not (np.isfinite(kbar_a[i]) and kbar_a[i] > 0):
            continue
        k = np.arange(min(int(bins[i]), row.size))
        p = row[: k.size]
        keep = p > 0
        x = k[keep] / kbar_a[i]
        mark = style(i)
        ax.plot(x, p[keep], ls="none", ms=4, label=te_label(t_a[i]), gid="data", **mark)
        if keep.any():
            smallest = min(smallest, float(p[keep].min()))
            largest = max(largest, float(p[keep].max()))
            x_max = max(x_max, float(x.max()))
        if np.isfinite(m_a[i]) or m_a[i] == np.inf:
            grid = np.linspace(0.0, _X_MAX, 400)
            with np.errstate(all="ignore"):
                curve = nbinom_pmf(grid * kbar_a[i], kbar_a[i], m_a[i])
            ax.plot(grid, curve, color=mark["color"], lw=1.0, gid="fit")
    ax.set_yscale("log")
    ax.set_xlim(-0.5, min(_X_MAX, x_max + 0.5))
    # from the last bin with counts (the smallest P) to above the largest
    top = min(3.0, largest * 2.0) if largest > 0 else 3.0
    ax.set_ylim(max(smallest * 0.5, 1e-7), top)
    ax.set_xlabel(r"$k/\langle k\rangle$")
    ax.set_ylabel(r"$P(k)$")
    if q is not None:
        ax.set_title(f"$q$ = {q:.3g} {INV_A}")
    if legend and ax.lines:
        ax.legend(
            title=r"$t_e$",
            fontsize="medium",  # readable at 100 dpi
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
        )


def draw_beta(
    ax: Axes,
    exposure_times: ArrayLike,
    beta: ArrayLike,
    beta_err: ArrayLike | None,
    q: ArrayLike,
    *,
    shift: float = BETA_SHIFT,
    dynamics: pd.DataFrame | None = None,
) -> None:
    """Draw ``beta`` against ``t_e`` per q, curve ``j`` shifted up by ``j * shift``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw (log x when every exposure time is positive).
    exposure_times : array_like, shape (n_exp,)
        Exposure times, s.
    beta, beta_err : array_like, shape (n_exp, n_q)
        Contrast and standard error (``beta_err`` may be None).
    q : array_like, shape (n_q,)
        Partition centres, 1/Angstrom (legend).
    shift : float
        Vertical offset between consecutive q (0 for none).
    dynamics : pandas.DataFrame, optional
        Dynamics table (``RunResults.dynamics``): the fitted
        ``beta0 * k(Gamma t_e)`` is drawn per q, with the same shift.

    Notes
    -----
    One errorbar container per q; fitted curves carry ``gid="dynamics"``,
    dotted with ``gid="dynamics-flagged"`` when their fit has flags.
    """
    t = np.asarray(exposure_times, dtype=np.float64).reshape(-1)
    b = np.asarray(beta, dtype=np.float64).reshape(t.size, -1)
    e = None if beta_err is None else np.asarray(beta_err, float).reshape(b.shape)
    qs = np.asarray(q, dtype=np.float64).reshape(-1)
    positive = t.size > 0 and bool(np.all(np.isfinite(t) & (t > 0)))
    x = t if positive else np.arange(t.size, dtype=np.float64)
    for j in range(b.shape[1]):
        mark = style(j)
        ax.errorbar(
            x,
            b[:, j] + j * shift,
            yerr=None if e is None else e[:, j],
            ls="none" if dynamics is not None else "-",
            ms=5,
            capsize=2,
            lw=1.0,
            label=f"{qs[j]:.3g}",
            **mark,
        )
    if dynamics is not None and positive:
        grid = np.geomspace(t.min() / 1.5, t.max() * 1.5, 200)
        for row in dynamics.itertuples(index=False):
            j = int(row.partition)
            if not (math.isfinite(row.gamma) and math.isfinite(row.beta0)):
                continue
            exponent = getattr(row, "exponent", 1.0)
            exponent = exponent if math.isfinite(exponent) and exponent > 0 else 1.0
            curve = row.beta0 * visibility_kernel(
                grid, max(row.gamma, 0.0), exponent=exponent
            )
            flagged = bool(getattr(row, "flags", ()))  # a fit not to be trusted
            ax.plot(
                grid,
                curve + j * shift,
                color=style(j)["color"],
                lw=1.0,
                ls=":" if flagged else "-",
                gid="dynamics-flagged" if flagged else "dynamics",
            )
    if positive:
        ax.set_xscale("log")
        ax.set_xlabel(r"$t_e$ [s]")
    else:
        ax.set_xlabel("exposure index")
    label = r"$\beta = 1/M$"
    ax.set_ylabel(label + (f" (+ {shift:g} x q index)" if shift else ""))
    if b.shape[1]:
        ax.legend(
            title=f"$q$ [{INV_A}]",
            fontsize="medium",  # readable at 100 dpi
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
        )


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Return the figure as PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write the figure as PNG atomically (a temporary file, then a rename).

    Returns
    -------
    pathlib.Path
        The resolved path written.
    """
    from xsvs_bluesky.export import write_atomic

    return write_atomic(path, figure_png(fig, dpi=dpi))
