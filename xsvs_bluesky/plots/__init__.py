"""Matplotlib figures of XSVS results.

Import this module only when drawing (it imports matplotlib).  Every
function builds a :class:`matplotlib.figure.Figure` directly, without
pyplot, so it works headless (PNG through Agg) and never opens a window or
calls ``plt.show``; pass ``fig=`` to draw into a figure of your own (e.g.
``plt.figure()`` in IPython), which is cleared first.

The two panels of :func:`plot_summary` follow the pyxsvs tutorial figure:
``P(k)`` against ``k/<k>`` with the negative-binomial fits at one q per
exposure (log y), and ``beta = 1/M`` against ``t_e`` per q (log x), each q
shifted up by ``0.1 x`` its index.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

from xsvs_bluesky.plots._figures import (
    BETA_SHIFT,
    draw_beta,
    draw_histograms,
    figure_png,
    new_figure,
    plot_beta,
    plot_fit_parameters,
    plot_gamma_q2,
    plot_histogram_grid,
    plot_image,
    plot_intensity,
    plot_summary,
    plot_trace,
    save_figure,
)

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
