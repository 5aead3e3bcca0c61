"""A self-contained HTML report of a derived XSVS run.

One HTML file, figures embedded as base64 PNG, no external resources:
metadata, the pyxsvs summary figure, ``P(k)`` with negative-binomial fits
per exposure for every q, the averaged image with the partitions and beam
centre, ``I(q)``, the per-frame traces, the fit parameters, the dynamics
(``beta(t_e)`` with the fitted curves, ``Gamma`` against ``q^2`` with the
``D`` line) when the run has them, and the results table.  The file is
written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xsvs_bluesky._version import __version__
from xsvs_bluesky.export import write_atomic
from xsvs_bluesky.options import AnalysisOptions, OptionError
from xsvs_bluesky.results import as_text, pm_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from xsvs_bluesky.results import RunResults

__all__ = ["build_report", "default_report_name", "write_report"]

logger = logging.getLogger(__name__)

_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1300px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em;
  border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
img { max-width: 100%; } .note { color: #666; font-size: 0.9em; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _img(fig: Figure, alt: str) -> str:
    from xsvs_bluesky.plots import figure_png

    data = base64.b64encode(figure_png(fig, dpi=90)).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _iso(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float):
        return ""
    return datetime.fromtimestamp(float(timestamp), tz=UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _metadata_rows(res: RunResults) -> list[tuple[str, str]]:
    start, stop, md = res.start, res.stop or {}, res.metadata
    rows = [
        ("derived run uid", res.uid),
        ("raw run uid", res.raw_uid or ""),
        ("sample", start.get("sample_name", "")),
        ("scan_id", start.get("scan_id", "")),
        ("started", _iso(start.get("time"))),
        ("exit status", f"{stop.get('exit_status', 'open')} {stop.get('reason', '')}"),
        ("estimator", md.get("estimator", "")),
        ("extra estimators", ", ".join(md.get("extra_estimators", []))),
        ("xsvs_bluesky version", md.get("package_version", "")),
        ("exposures", f"{res.exposure_times.size}"),
    ]
    geo = md.get("geometry") or {}
    if geo:
        rows.append(
            (
                "geometry",
                f"wavelength {geo.get('wavelength')} Angstrom, distance "
                f"{geo.get('distance')} mm, pixel {geo.get('pixel_size')} mm, centre "
                f"({geo.get('center_x')}, {geo.get('center_y')}) px, shape "
                f"{geo.get('shape')}",
            )
        )
    parts = md.get("partitions") or {}
    half = as_text(float(parts.get("half_width", math.nan)), "{:.3g}")
    if res.q.size:
        rows.append(
            (
                "q partitions",
                f"{res.q.size} from {res.q.min():.4g} to {res.q.max():.4g} 1/Angstrom, "
                f"half-width {half}",
            )
        )
    for mask in md.get("masks") or []:
        rows.append(
            ("mask", f"{mask.get('name')} sha256 {str(mask.get('sha256'))[:16]}")
        )
    flat = md.get("flat_field")
    if flat:
        rows.append(
            (
                "flat field",
                f"{flat.get('name')} ({_flat_mode(md)}), sha256 "
                f"{str(flat.get('sha256'))[:16]}",
            )
        )
    if md.get("dynamics_model"):
        rows.append(("dynamics model", md["dynamics_model"]))
    if res.diffusion:
        d, e = res.diffusion.get("D", math.nan), res.diffusion.get("D_err", math.nan)
        rows.append(("D (Gamma = D q^2)", f"{pm_text(d, e, '{:.4g}')} Angstrom^2/s"))
    return [(k, str(v)) for k, v in rows]


def _flat_mode(xsvs: Mapping[str, Any]) -> str:
    """Return the flat-field mode in the current names, also of v1 runs."""
    try:
        return AnalysisOptions.from_metadata(xsvs).flat_field_mode.value
    except OptionError:
        return str((xsvs.get("flat_field") or {}).get("mode"))


def _html_table(head: list[str], rows: list[list[str]], left: int = 0) -> str:
    cls = [' class="l"' if i < left else "" for i in range(len(head))]
    out = ["<table><tr>"]
    out += [f"<th{c}>{_esc(h)}</th>" for c, h in zip(cls, head, strict=True)]
    out.append("</tr>")
    for row in rows:
        cells = [f"<td{c}>{_esc(v)}</td>" for c, v in zip(cls, row, strict=True)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _results_table(res: RunResults) -> str:
    head = [
        "exposure",
        "t_e [s]",
        "q [1/A]",
        "pixels",
        "frames",
        "kbar",
        "beta +- err",
        "M +- err",
        "flags",
    ]
    rows = [
        [
            str(r.exposure),
            as_text(r.exposure_time, "{:.4g}"),
            as_text(r.q, "{:.4g}"),
            str(r.n_pixels),
            str(r.n_frames),
            pm_text(r.kbar, r.kbar_err, "{:.4g}"),
            pm_text(r.beta, r.beta_err),
            pm_text(r.M, r.M_err, "{:.4g}"),
            ", ".join(r.flags),
        ]
        for r in res.table.itertuples(index=False)
    ]
    return _html_table(head, rows)


def _dynamics_table(res: RunResults) -> str:
    dyn = res.dynamics
    assert dyn is not None
    head = [
        "partition",
        "q [1/A]",
        "model",
        "Gamma +- err [1/s]",
        "beta0 +- err",
        "reduced chi2",
        "flags",
    ]
    rows = []
    for r in dyn.itertuples(index=False):
        dof = getattr(r, "dof", 0)
        chi2 = getattr(r, "chi2", math.nan)
        red = chi2 / dof if dof else math.nan
        rows.append(
            [
                str(r.partition),
                as_text(r.q, "{:.4g}"),
                str(r.model),
                pm_text(r.gamma, r.gamma_err, "{:.4g}"),
                pm_text(r.beta0, r.beta0_err),
                as_text(red, "{:.3g}"),
                ", ".join(getattr(r, "flags", []) or []),
            ]
        )
    return _html_table(head, rows)


def _figure(section: list[str], make: Callable[[], Figure], alt: str) -> None:
    """Append a figure, or a note when it cannot be drawn (logged)."""
    try:
        section.append(f"<p>{_img(make(), alt)}</p>")
    except Exception as err:
        logger.exception("report: figure %r failed", alt)
        section.append(f'<p class="note">{_esc(alt)}: not drawn ({_esc(err)})</p>')


def build_report(results: RunResults, *, title: str | None = None) -> str:
    """Build the HTML text of the report of one derived run.

    Parameters
    ----------
    results : RunResults
        The run (:func:`xsvs_bluesky.results.load_results`).
    title : str, optional
        Page title; default ``XSVS analysis <uid8>``.

    Returns
    -------
    str
        A complete HTML document with embedded PNG figures.
    """
    from xsvs_bluesky import plots

    res = results
    title = title or f"XSVS analysis {res.uid[:8]}"
    body = [f"<h1>{_esc(title)}</h1>", "<h2>Metadata</h2>"]
    body.append(_html_table(["", ""], [list(r) for r in _metadata_rows(res)], left=2))
    has_data = res.exposure_times.size > 0 and res.q.size > 0
    if not has_data:
        body.append('<p class="note">This run holds no results.</p>')
    else:
        body.append("<h2>Summary (pyxsvs figure)</h2>")
        _figure(body, lambda: plots.plot_summary(res, 0), "summary")
        body.append(
            '<p class="note">Left: P(k) against k/&lt;k&gt; at the first q with the '
            "negative-binomial fits, one colour per exposure. Right: beta = 1/M "
            "against the exposure time, curve j shifted up by 0.1 j.</p>"
        )
        body.append("<h2>Photon-count histograms, every q</h2>")
        _figure(body, lambda: plots.plot_histogram_grid(res), "histograms")
        if res.images is not None:
            i = int(res.exposure_times.size - 1)
            body.append("<h2>Averaged image</h2>")
            _figure(
                body,
                lambda: plots.plot_image(
                    res.images.values[i],  # type: ignore[union-attr]
                    res.geometry,
                    q=res.q,
                    half_width=res.q_half_width,
                    title=f"exposure {i}, t_e = {res.exposure_times[i]:.4g} s",
                ),
                "averaged image",
            )
        body.append("<h2>I(q)</h2>")
        _figure(body, lambda: plots.plot_intensity(res), "intensity")
        body.append("<h2>Per-frame trace</h2>")
        _figure(body, lambda: plots.plot_trace(res), "trace")
        body.append("<h2>Fit parameters</h2>")
        _figure(body, lambda: plots.plot_fit_parameters(res), "fit parameters")
        if res.dynamics is not None:
            body.append("<h2>Dynamics</h2>")
            _figure(body, lambda: plots.plot_beta(res), "beta with dynamics fits")
            _figure(body, lambda: plots.plot_gamma_q2(res), "Gamma against q^2")
            body.append(_dynamics_table(res))
        body.append("<h2>Results</h2>")
        body.append(_results_table(res))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    body.append(
        f'<p class="note">Made by xsvs_bluesky {_esc(__version__)} on {stamp}. '
        f"Start metadata:</p><pre>{_esc(json.dumps(res.metadata, indent=1))}</pre>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def default_report_name(results: RunResults) -> str:
    """``xsvs-report-<uid8>.html``."""
    return f"xsvs-report-{results.uid[:8]}.html"


def write_report(
    results: RunResults, out: str | os.PathLike[str] | None = None
) -> Path:
    """Write the HTML report atomically.

    Parameters
    ----------
    results : RunResults
        The run.
    out : path, optional
        A folder (the file is :func:`default_report_name` in it) or a file
        path ending in ``.html``; default the working folder.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    target = Path.cwd() if out is None else Path(out)
    if target.suffix.lower() not in (".html", ".htm"):
        target = target / default_report_name(results)
    return write_atomic(target, build_report(results))
