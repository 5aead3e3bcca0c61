"""What ``xsvs-bluesky demo`` shows at the end, beside the simulated truth.

The stored results as a table, a diffusion line and a figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = [
    "diffusion_line",
    "format_truth_table",
    "ring_truth",
    "save_truth_figure",
    "truth_rows",
]


def ring_truth(model: Any, q: Any, exposure_time: Any) -> Any:
    """Truth of each (partition centre ``q``, ``t_e``) row: the ring truth.

    ``sum(mu_i^2 beta_i) / sum(mu_i^2)`` over the pixels of the demo
    partition centred on ``q`` (``SpeckleModel.ring_beta``); the partitions
    are rebuilt as the analysis builds them from the start document.
    """
    import numpy as np

    from xsvs_bluesky.core.geometry import Partitions
    from xsvs_bluesky.demo import demo_partitions

    spec = demo_partitions(model)
    parts = Partitions.from_centers(
        model.q_map, spec["centers"], spec["dq"], mask=model.mask
    )
    centers = np.asarray(parts.centers, dtype=np.float64)
    out = np.full(len(q), np.nan)
    for row, (qj, t_e) in enumerate(zip(q, exposure_time, strict=True)):
        j = int(np.argmin(np.abs(centers - qj)))
        if abs(centers[j] - qj) <= 1e-9 * max(abs(qj), 1.0):
            out[row] = model.ring_beta(parts.pixels[j], float(t_e))
    return out


def truth_rows(results: Any, model: Any) -> Any:
    """Rows of the table: what Tiled holds beside the simulated ring truth."""
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
    table["beta_true"] = ring_truth(
        model, table["q"].to_numpy(), table["exposure_time"].to_numpy()
    )
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
    """Return the dynamics with their flags and ``D`` beside the true one, or ''.

    The dynamics table of the stored run (rates whose error is as large as
    the rate shown as "not yet determined", a flags column), then
    :meth:`~xsvs_bluesky.core.dynamics.DiffusionFit.describe` (no ``D``
    when ``Gamma/q^2`` is not constant within errors) and the true ``D``.
    """
    from xsvs_bluesky.live import diffusion_from_record, format_dynamics_flags

    diffusion = diffusion_from_record(results.diffusion)
    if diffusion is None:
        return ""
    lines = [""]
    if results.dynamics is not None and len(results.dynamics):
        lines.append(format_dynamics_flags(results.dynamics, None))
        lines.append("")
    lines.append(
        f"{diffusion.describe()}; status {diffusion.status} "
        f"(true {model.diffusion:.4g} Angstrom^2/s)"
    )
    return "\n".join(lines)


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
