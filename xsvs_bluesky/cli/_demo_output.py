"""What ``xsvs-bluesky demo`` shows at the end, beside the simulated truth.

The stored results as a table, a diffusion line and a figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["diffusion_line", "format_truth_table", "save_truth_figure", "truth_rows"]


def truth_rows(results: Any, model: Any) -> Any:
    """Rows of the table: what Tiled holds beside the simulated truth."""
    import numpy as np

    table = results.table.loc[
        :,
        [
            "exposure",
            "exposure_time",
            "partition",
            "q",
            "n_frames",
            "kbar",
            "beta",
            "beta_err",
            "estimator",
            "flags",
        ],
    ].copy()
    truth = model.beta_true(table["q"].to_numpy(), table["exposure_time"].to_numpy())
    table["beta_true"] = np.asarray(truth, dtype=np.float64)
    err = table["beta_err"].to_numpy(dtype=np.float64)
    with np.errstate(all="ignore"):
        z = (table["beta"].to_numpy(dtype=np.float64) - table["beta_true"]) / err
    table["z"] = np.where(err > 0, z, np.nan)
    return table.reset_index(drop=True)


def format_truth_table(table: Any) -> str:
    """Return the beta table beside the truth, exposure by exposure, with z.

    The last column lists the estimator's flags of a row (empty when none).
    """
    from xsvs_bluesky.results import exposure_lines

    head = (
        f"{'exp':>3} {'t_e [s]':>9} {'q [1/A]':>9} {'kbar':>7} "
        f"{'beta +- err':>17} {'beta_true':>9} {'z':>6}  flags"
    )
    lines = exposure_lines(
        head,
        table,
        lambda row: (
            f"{row.exposure:>3d} {row.exposure_time:>9.2e} {row.q:>9.2e} "
            f"{row.kbar:>7.3f} {row.beta:>8.4f} +- {row.beta_err:<6.4f} "
            f"{row.beta_true:>9.4f} {row.z:>6.2f}  {','.join(row.flags)}"
        ).rstrip(),
    )
    z = table["z"].to_numpy(dtype=float)
    z = z[[math.isfinite(v) for v in z]]
    if len(table):
        lines.append("")
        lines.append(
            f"estimator {table['estimator'].iloc[0]}; z = (beta - beta_true) / err: "
            f"{int((abs(z) < 1).sum())} of {z.size} within 1, "
            f"{int((abs(z) < 2).sum())} within 2 (about 68 % and 95 % expected)"
        )
    return "\n".join(lines)


def diffusion_line(results: Any, model: Any) -> str:
    """Return the fitted ``D`` (Gamma = D q^2) beside the true one, or ''."""
    fit = results.diffusion or {}
    d, err = float(fit.get("D", math.nan)), float(fit.get("D_err", math.nan))
    if not math.isfinite(d):
        return ""
    return (
        f"\nD = {d:.4g} +- {err:.2g} Angstrom^2/s from Gamma = D q^2 "
        f"(true {model.diffusion:.4g})"
    )


def save_truth_figure(path: Path, results: Any, model: Any) -> None:
    """Save the summary figure of the stored run, the truth as dashed lines.

    The truth is drawn above the fits (black, dashed) and the fits lighter,
    so both show where they coincide; the legend names the three.
    """
    import numpy as np
    from matplotlib.lines import Line2D

    from xsvs_bluesky.plots import BETA_SHIFT, plot_summary, save_figure

    fig = plot_summary(results)
    right = fig.axes[1]
    for line in right.lines:
        if line.get_gid() == "dynamics":
            line.set_alpha(0.6)
            line.set_linewidth(2.0)
    t = results.exposure_times
    grid = np.geomspace(t.min() / 1.5, t.max() * 1.5, 200)
    for j, q in enumerate(results.q):
        right.plot(
            grid,
            model.beta_true(q, grid) + j * BETA_SHIFT,
            color="k",
            ls=(0, (3, 2)),
            lw=1.1,
            zorder=4,
            gid="truth",
        )
    handles, labels = right.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.4", lw=2.0, alpha=0.6),
        Line2D([], [], color="k", ls=(0, (3, 2)), lw=1.1),
    ]
    labels += ["fit", "truth"]
    right.legend(
        handles,
        labels,
        title=r"$q$ [$\mathrm{\AA}^{-1}$]",
        fontsize="medium",
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    fig.suptitle(
        "simulated XSVS series: stored results (points), fits (solid), truth (dashed)",
        fontsize="large",
    )
    save_figure(fig, path)
