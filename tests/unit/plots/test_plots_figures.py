"""Figures of xsvs_bluesky.plots drawn from a real derived run (synthetic frames)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from derived_docs import GEO, N_FRAMES, N_Q, TIMES, derived_run, without_stream
from matplotlib.container import ErrorbarContainer
from matplotlib.image import imread

from xsvs_bluesky import plots
from xsvs_bluesky.core.dynamics import exponential_kernel
from xsvs_bluesky.core.estimators import nbinom_pmf
from xsvs_bluesky.errors import XSVSError
from xsvs_bluesky.results import RunResults


@pytest.fixture(scope="module")
def docs():
    return derived_run()


@pytest.fixture(scope="module")
def results(docs) -> RunResults:
    return RunResults.from_documents(docs)


def by_gid(ax, gid):
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def data_line(container):
    """The data line of an error-bar container."""
    assert isinstance(container, ErrorbarContainer)
    return container.lines[0]


def test_summary_left_panel_has_data_and_nb_fit_per_exposure(results):
    fig = plots.plot_summary(results, q_index=1)
    left, right = fig.axes
    data, fits = by_gid(left, "data"), by_gid(left, "fit")
    assert len(data) == len(fits) == len(TIMES)
    assert left.get_yscale() == "log" and right.get_xscale() == "log"
    kbar, m = results.matrix("kbar")[:, 1], results.matrix("M")[:, 1]
    prob = results.histograms.values[:, 1, :]
    for i, (points, curve) in enumerate(zip(data, fits, strict=True)):
        x, y = points.get_xdata(), points.get_ydata()
        k = np.rint(x * kbar[i]).astype(int)
        np.testing.assert_allclose(y, prob[i, k])  # P(k) at k/<k>
        assert np.all(y > 0) and k[0] == 0
        xc, yc = curve.get_xdata(), curve.get_ydata()
        np.testing.assert_allclose(yc, nbinom_pmf(xc * kbar[i], kbar[i], m[i]))
    legend_box = left.get_legend()
    assert legend_box is not None
    legend = [t.get_text() for t in legend_box.get_texts()]
    assert legend == ["1.00 ms", "2.00 ms", "4.00 ms"]
    assert "0.0008" in left.get_title()


def test_beta_panel_shifts_each_q_by_a_tenth_of_its_index(results):
    fig = plots.plot_summary(results)
    right = fig.axes[1]
    assert len(right.containers) == N_Q
    beta = results.matrix("beta")
    for j, container in enumerate(right.containers):
        line = data_line(container)
        np.testing.assert_allclose(line.get_xdata(), TIMES)
        np.testing.assert_allclose(line.get_ydata(), beta[:, j] + 0.1 * j)


def test_dynamics_curves_are_beta0_times_the_kernel_shifted(results):
    assert results.dynamics is not None
    fig = plots.plot_beta(results)
    (ax,) = fig.axes
    curves = by_gid(ax, "dynamics")
    assert len(curves) == N_Q
    for j, curve in enumerate(curves):
        row = results.dynamics.iloc[j]
        t = curve.get_xdata()
        expected = row.beta0 * exponential_kernel(row.gamma * t) + 0.1 * j
        np.testing.assert_allclose(curve.get_ydata(), expected, rtol=1e-10)
    unshifted = plots.plot_beta(results, shift=0.0, dynamics=False).axes[0]
    assert not by_gid(unshifted, "dynamics")
    np.testing.assert_allclose(
        data_line(unshifted.containers[3]).get_ydata(), results.matrix("beta")[:, 3]
    )


def test_histogram_grid_has_one_panel_per_q(results):
    fig = plots.plot_histogram_grid(results, ncols=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == N_Q
    assert all(len(by_gid(ax, "fit")) == len(TIMES) for ax in visible)


def test_saved_png_is_a_readable_non_blank_image(results, tmp_path):
    path = plots.save_figure(plots.plot_summary(results), tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 900
    assert image[..., :3].std() > 0.05  # something is drawn
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]  # no temp file left


def test_image_shows_rings_and_the_beam_centre(results):
    image = results.images.values[-1]
    fig = plots.plot_image(image, GEO, q=results.q, half_width=results.q_half_width)
    ax = fig.axes[0]
    (centre,) = by_gid(ax, "center")
    # one-based centre 32.5 px -> 0-based pixel coordinate 31.5
    assert centre.get_xdata()[0] == pytest.approx(31.5)
    assert centre.get_ydata()[0] == pytest.approx(31.5)
    (contours,) = [c for c in ax.get_children() if hasattr(c, "levels")]
    edges = sorted({q + s * results.q_half_width for q in results.q for s in (-1, 1)})
    np.testing.assert_allclose(contours.levels, edges)
    shown = ax.get_images()[0].get_array()
    assert shown is not None and shown.shape == GEO.shape


def test_intensity_trace_and_fit_parameter_figures(results):
    inten = plots.plot_intensity(results).axes[0]
    assert len(inten.containers) == len(TIMES)
    np.testing.assert_allclose(
        data_line(inten.containers[2]).get_ydata(), results.intensity.values[2]
    )
    trace = [ax for ax in plots.plot_trace(results).axes if ax.get_visible()]
    assert len(trace) == len(TIMES)
    assert all(len(ax.get_lines()) == N_Q for ax in trace)
    assert all(np.size(line.get_xdata()) == N_FRAMES for line in trace[0].get_lines())
    kbar_ax, beta_ax = plots.plot_fit_parameters(results).axes
    np.testing.assert_allclose(
        data_line(kbar_ax.containers[0]).get_ydata(), results.matrix("kbar")[:, 0]
    )
    assert len(beta_ax.containers) == N_Q


def test_gamma_against_q2_with_the_diffusion_line(results):
    ax = plots.plot_gamma_q2(results).axes[0]
    np.testing.assert_allclose(
        data_line(ax.containers[0]).get_xdata(), results.dynamics["q"] ** 2
    )
    (line,) = by_gid(ax, "diffusion")
    x, y = line.get_xdata(), line.get_ydata()
    np.testing.assert_allclose(y[1:] / x[1:], results.diffusion["D"])


def test_bad_q_index_and_missing_dynamics_are_clear_errors(results, docs):
    with pytest.raises(XSVSError, match="q_index = 9"):
        plots.plot_summary(results, q_index=9)
    no_dyn = RunResults.from_documents(without_stream(docs, "dynamics"))
    assert no_dyn.dynamics is None
    assert not by_gid(plots.plot_summary(no_dyn).axes[1], "dynamics")
    with pytest.raises(XSVSError, match="no dynamics"):
        plots.plot_gamma_q2(no_dyn)


def test_only_plotting_modules_import_matplotlib():
    code = (
        "import sys\n"
        "import xsvs_bluesky, xsvs_bluesky.results, xsvs_bluesky.live\n"
        "import xsvs_bluesky.report, xsvs_bluesky.export\n"
        "import xsvs_bluesky.cli.results, xsvs_bluesky.cli.export\n"
        "import xsvs_bluesky.cli.report\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
        "import xsvs_bluesky.plots\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_flagged_dynamics_fits_are_marked(results, monkeypatch):
    dyn = results.dynamics.copy()
    flags: list[list[str]] = [[] for _ in range(len(dyn))]
    flags[1] = ["poor-fit"]  # one partition's fit not to be trusted
    dyn["flags"] = flags
    monkeypatch.setattr(type(results), "dynamics", property(lambda self: dyn))
    ax = plots.plot_gamma_q2(results).axes[0]
    (marked,) = by_gid(ax, "flagged")
    np.testing.assert_allclose(marked.get_xdata(), [dyn["q"].iloc[1] ** 2])
    beta_ax = plots.plot_summary(results).axes[1]
    dotted = by_gid(beta_ax, "dynamics-flagged")
    assert len(dotted) == 1 and dotted[0].get_linestyle() == ":"
    assert len(by_gid(beta_ax, "dynamics")) == len(dyn) - 1
