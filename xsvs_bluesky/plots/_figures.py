"""The implementation of :mod:`xsvs_bluesky.plots` (private; see its docstring)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.errors import OptionError, RunError
from xsvs_bluesky.plots._base import (
    BETA_SHIFT,
    INV_A,
    draw_beta,
    draw_histograms,
    figure_png,
    new_figure,
    save_figure,
    style,
    te_label,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from xsvs_bluesky.core.geometry import Partitions
    from xsvs_bluesky.results import RunResults

__all__ = [
    "BETA_SHIFT",
    "draw_beta",
    "draw_histograms",
    "figure_png",
    "new_figure",
    "plot_beta",
    "plot_fit_parameters",
    "plot_gamma_q2",
    "plot_histogram_grid",
    "plot_image",
    "plot_intensity",
    "plot_summary",
    "plot_trace",
    "save_figure",
]


def plot_summary(
    results: RunResults, q_index: int = 0, fig: Figure | None = None
) -> Figure:
    """Draw the pyxsvs tutorial figure: ``P(k)`` at one q, ``beta(t_e)`` per q.

    Parameters
    ----------
    results : RunResults
        A derived run (:func:`xsvs_bluesky.results.load_results`).
    q_index : int
        Partition of the left panel.
    fig : matplotlib.figure.Figure, optional
        Figure to draw into (cleared); default a new headless one.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: ``P(k)`` vs ``k/<k>`` with negative-binomial fits per
        exposure (log y) and ``beta`` vs ``t_e`` per q shifted by
        ``0.1 x`` index, with the dynamics fits when the run has them.

    Raises
    ------
    XSVSError
        If ``q_index`` is out of range.
    """
    n_q = results.q.size
    if not -n_q <= q_index < n_q:
        raise OptionError(f"q_index = {q_index} is out of range; give 0 .. {n_q - 1}")
    fig = new_figure(fig, (12, 4.5))
    left, right = fig.subplots(1, 2)
    _histograms_at(left, results, q_index)
    draw_beta(
        right,
        results.exposure_times,
        results.matrix("beta"),
        results.matrix("beta_err"),
        results.q,
        dynamics=results.dynamics,
    )
    return fig


def plot_beta(
    results: RunResults,
    fig: Figure | None = None,
    *,
    shift: float = BETA_SHIFT,
    dynamics: bool = True,
) -> Figure:
    """Draw ``beta`` against ``t_e`` per q, with the dynamics fits when present.

    Parameters
    ----------
    results : RunResults
        The run.
    fig : Figure, optional
        Figure to draw into (cleared).
    shift : float
        Curve ``j`` is shifted up by ``j * shift`` (0: none).
    dynamics : bool
        Draw the fitted ``beta0 k(Gamma t_e)`` of the run's dynamics stream.
    """
    fig = new_figure(fig, (7.5, 5.0))
    draw_beta(
        fig.subplots(),
        results.exposure_times,
        results.matrix("beta"),
        results.matrix("beta_err"),
        results.q,
        shift=shift,
        dynamics=results.dynamics if dynamics else None,
    )
    return fig


def _histograms_at(ax: Axes, results: RunResults, j: int, legend: bool = True) -> None:
    draw_histograms(
        ax,
        results.histograms.values[:, j, :],
        results.matrix("kbar")[:, j],
        results.matrix("M")[:, j],
        results.exposure_times,
        n_bins=results.histograms["n_bins"].values,
        q=float(results.q[j]),
        legend=legend,
    )


def plot_histogram_grid(
    results: RunResults, fig: Figure | None = None, ncols: int = 3
) -> Figure:
    """``P(k)`` with negative-binomial fits per exposure, one panel per q."""
    n_q = max(results.q.size, 1)
    ncols = min(ncols, n_q)
    nrows = math.ceil(n_q / ncols)
    fig = new_figure(fig, (5.2 * ncols, 3.6 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for j in range(results.q.size):
        # one legend, right of the first row
        _histograms_at(axes[j], results, j, legend=j == ncols - 1)
    for ax in axes[results.q.size :]:
        ax.set_visible(False)
    return fig


def _beam_pixel(geometry: Geometry) -> tuple[float, float]:
    """Beam centre as 0-based (column, row) pixel coordinates."""
    shift = 1.0 if geometry.one_based else 0.0
    return geometry.center_x - shift, geometry.center_y - shift


def plot_image(
    image: ArrayLike,
    geometry: Geometry | None = None,
    *,
    q: ArrayLike | None = None,
    half_width: float | None = None,
    partitions: Partitions | None = None,
    center: tuple[float, float] | None = None,
    title: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Draw an averaged image (log scale) with the q partitions and beam centre.

    Parameters
    ----------
    image : array_like, shape (rows, cols)
        Counts per pixel and frame; pixels <= 0 or NaN are shown blank.
    geometry : Geometry, optional
        With ``q`` and ``half_width`` (1/Angstrom) the partition rings
        ``q +- half_width`` are drawn from its q map; its beam centre is
        marked.
    q, half_width : optional
        Partition centres and half-width, 1/Angstrom.
    partitions : Partitions, optional
        Alternative to ``geometry``/``q``: draw the boundaries of its label
        image.
    center : (float, float), optional
        Beam centre as 0-based (column, row) px; default from ``geometry``.
    title : str, optional
        Axes title.
    fig : Figure, optional
        Figure to draw into (cleared).

    Returns
    -------
    matplotlib.figure.Figure
    """
    img = np.asarray(image, dtype=np.float64)
    fig = new_figure(fig, (6.4, 5.4))
    ax = fig.subplots()
    shown = np.where(np.isfinite(img) & (img > 0), img, np.nan)
    positive = shown[np.isfinite(shown)]
    if positive.size:
        low, high = np.percentile(positive, [1, 99.9])
        norm = LogNorm(vmin=max(low, 1e-6), vmax=max(high, low * 10))
    else:
        norm = None
    art = ax.imshow(
        shown, origin="upper", cmap="viridis", norm=norm, interpolation="nearest"
    )
    fig.colorbar(art, ax=ax, label="counts/pixel/frame")
    if geometry is not None and q is not None and half_width is not None:
        centres = np.asarray(q, dtype=np.float64).ravel()
        edges = sorted(
            {float(c) + s * float(half_width) for c in centres for s in (-1, 1)}
        )
        ax.contour(geometry.q_map(), levels=edges, colors="w", linewidths=0.6)
    elif partitions is not None:
        labels = partitions.label_image()
        ax.contour(
            labels, levels=np.arange(-0.5, len(partitions)), colors="w", linewidths=0.6
        )
    if center is None and geometry is not None:
        center = _beam_pixel(geometry)
    if center is not None:
        ax.plot(
            [center[0]],
            [center[1]],
            "r+",
            ms=14,
            mew=1.5,
            gid="center",
            label="beam centre",
        )
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_xlabel("column [px]")
    ax.set_ylabel("row [px]")
    if title:
        ax.set_title(title)
    return fig


def plot_intensity(results: RunResults, fig: Figure | None = None) -> Figure:
    """``I(q)`` (partition mean of the averaged image) per exposure, log-log."""
    fig = new_figure(fig, (6.4, 4.5))
    ax = fig.subplots()
    q = results.q
    for i, t_e in enumerate(results.exposure_times):
        ax.errorbar(
            q,
            results.intensity.values[i],
            yerr=results.intensity_err.values[i],
            ms=4,
            capsize=2,
            lw=1.0,
            label=te_label(t_e),
            **style(i),
        )
    if q.size and np.all(q > 0):
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"$q$ [{INV_A}]")
    ax.set_ylabel(r"$I(q)$ [counts/pixel/frame]")
    if results.exposure_times.size:
        ax.legend(title=r"$t_e$", fontsize="small", frameon=False)
    return fig


def plot_trace(
    results: RunResults, fig: Figure | None = None, ncols: int = 4
) -> Figure:
    """Mean count per pixel of every frame, one panel per exposure, one line per q."""
    n_exp = max(results.exposure_times.size, 1)
    ncols = min(ncols, n_exp)
    nrows = math.ceil(n_exp / ncols)
    fig = new_figure(fig, (3.6 * ncols, 2.8 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    trace = results.trace.values
    for i, t_e in enumerate(results.exposure_times):
        ax = axes[i]
        n = int(results.n_frames[i])
        for j, q in enumerate(results.q):
            ax.plot(
                np.arange(n),
                trace[i, :n, j],
                lw=0.7,
                color=f"C{j % 10}",
                label=f"{q:.3g}",
            )
        ax.set_title(f"exposure {i}: {te_label(t_e)}", fontsize="medium")
        ax.set_xlabel("frame")
        ax.set_ylabel(r"$\langle k\rangle$ per frame")
    if results.exposure_times.size and results.q.size:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            title=f"$q$ [{INV_A}]",
            fontsize="small",
            frameon=False,
            loc="outside right upper",
        )
    for ax in axes[results.exposure_times.size :]:
        ax.set_visible(False)
    return fig


def plot_fit_parameters(results: RunResults, fig: Figure | None = None) -> Figure:
    """Fitted ``kbar`` (log-log) and ``beta`` (unshifted) against ``t_e``, per q."""
    fig = new_figure(fig, (12, 4.5))
    left, right = fig.subplots(1, 2)
    t = results.exposure_times
    kbar, kbar_err = results.matrix("kbar"), results.matrix("kbar_err")
    for j, q in enumerate(results.q):
        left.errorbar(
            t,
            kbar[:, j],
            yerr=kbar_err[:, j],
            ms=4,
            capsize=2,
            lw=1.0,
            label=f"{q:.3g}",
            **style(j),
        )
    if t.size and np.all(np.isfinite(t) & (t > 0)):
        left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(r"$t_e$ [s]")
    left.set_ylabel(r"$\langle k\rangle$ [counts/pixel/frame]")
    draw_beta(
        right,
        t,
        results.matrix("beta"),
        results.matrix("beta_err"),
        results.q,
        shift=0.0,
    )
    return fig


def plot_gamma_q2(results: RunResults, fig: Figure | None = None) -> Figure:
    """Relaxation rate ``Gamma`` against ``q^2`` with the line ``Gamma = D q^2``.

    Raises
    ------
    XSVSError
        If the run has no dynamics fit.
    """
    dyn = results.dynamics
    if dyn is None:
        raise RunError(f"run {results.uid} has no dynamics stream; nothing to plot")
    fig = new_figure(fig, (6.4, 4.5))
    ax = fig.subplots()
    q2 = dyn["q"].to_numpy(dtype=float) ** 2
    ax.errorbar(
        q2,
        dyn["gamma"].to_numpy(float),
        yerr=dyn["gamma_err"].to_numpy(float),
        ls="none",
        marker="o",
        ms=5,
        capsize=2,
        color="C0",
        label=r"$\Gamma(q)$ fits",
    )
    flagged = np.array([bool(f) for f in dyn["flags"]]) if "flags" in dyn else None
    if flagged is not None and flagged.any():  # fits not to be trusted: marked
        ax.plot(
            q2[flagged],
            dyn["gamma"].to_numpy(float)[flagged],
            ls="none",
            marker="o",
            ms=10,
            mfc="none",
            mec="C3",
            gid="flagged",
            label="flagged fit",
        )
    d = float(dyn["D"].iloc[0]) if len(dyn) else math.nan
    d_err = float(dyn["D_err"].iloc[0]) if len(dyn) else math.nan
    if math.isfinite(d) and q2.size:
        grid = np.linspace(0.0, float(np.nanmax(q2)) * 1.05, 50)
        ax.plot(
            grid,
            d * grid,
            color="C3",
            lw=1.2,
            gid="diffusion",
            label=rf"$D q^2$, $D$ = {d:.3g} $\pm$ {d_err:.2g} $\mathrm{{\AA}}^2$/s",
        )
    ax.set_xlim(left=0)
    ax.set_xlabel(r"$q^2$ [$\mathrm{\AA}^{-2}$]")
    ax.set_ylabel(r"$\Gamma$ [1/s]")
    ax.legend(fontsize="small", frameon=False)
    flags = str((results.diffusion or {}).get("D_flags") or "")
    if flags:
        ax.set_title(f"D fit flags: {flags.replace(',', ', ')}", fontsize="small")
    return fig
