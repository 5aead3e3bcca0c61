"""Live consumers of a derived run: text table, progress lines, figure."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from derived_docs import N_FRAMES, N_Q, TIMES, derived_run, raw_run
from event_model import compose_run, pack_event_page
from matplotlib.image import imread

from xsvs_bluesky.live import (
    LiveXSVSFigure,
    LiveXSVSTable,
    ProgressPrinter,
    diffusion_from_record,
    format_dynamics_flags,
)
from xsvs_bluesky.results import RunResults


@pytest.fixture(scope="module")
def live_run():
    """A derived run produced with a live table attached to the callback."""
    buf = io.StringIO()
    table = LiveXSVSTable(buf, interval_s=0)
    docs = derived_run(table)
    return docs, buf.getvalue()


def test_table_prints_every_exposure_once_with_its_beta(live_run):
    docs, text = live_run
    res = RunResults.from_documents(docs)
    for i, t_e in enumerate(TIMES):
        header = f"[xsvs] exposure {i}: t_e = {t_e:.4g} s, {N_FRAMES} frames"
        assert text.count(header) == 1
        block = text.split(header)[1].split("[xsvs]")[0]
        rows = [line.split() for line in block.strip().splitlines()[1:]]
        assert len(rows) == N_Q
        beta = res.matrix("beta")[i]
        err = res.matrix("beta_err")[i]
        for j, row in enumerate(rows):
            assert float(row[0]) == pytest.approx(res.q[j], rel=1e-3)
            assert row[2:5] == [f"{beta[j]:.4f}", "+-", f"{err[j]:.4f}"]
    # tables come in exposure order, the dynamics and the final status after them
    starts = [text.index(f"exposure {i}: t_e") for i in range(len(TIMES))]
    assert starts == sorted(starts)
    # the dynamics are refitted live when exposure 1 completes, then at the end
    refits = [m.start() for m in re.finditer("dynamics over", text)]
    assert [text[i:].split()[2] for i in refits] == ["2", "3"]
    assert starts[1] < refits[0] < starts[2] < refits[1]
    # one line on D per refit: D with its error, or why D is not given
    assert text.count("; status ") == 2
    final = diffusion_from_record(res.diffusion)
    assert final is not None and f"; status {final.status}" in text
    if final.status == "non-diffusive":
        assert "D is not given" in text
    assert text.rstrip().endswith(": success")


def test_progress_lines_follow_the_frames(live_run):
    _, text = live_run
    lines = [line for line in text.splitlines() if "frames/s" in line]
    frames = []
    for line in lines:
        match = re.search(r"\): (\d+) frames", line)
        assert match is not None, line
        frames.append(int(match.group(1)))
    assert frames == [20, 40, 60] * len(TIMES)


def progress_run(times_and_frames):
    """A hand-made derived run with progress events at given document times."""
    bundle = compose_run(
        metadata={"plan_name": "xsvs_analysis", "original_run_uid": "raw-1"}
    )
    docs: list[tuple[str, Any]] = [("start", bundle.start_doc)]
    keys: dict[str, dict[str, Any]] = {
        k: {"source": "t", "dtype": "number", "shape": []}
        for k in ("exposure_index", "exposure_time", "n_frames")
    }
    for k in ("q", "kbar", "kbar_err", "beta", "beta_err"):
        keys[k] = {"source": "t", "dtype": "array", "shape": [1]}
    desc = bundle.compose_descriptor(name="progress", data_keys=keys)
    docs.append(("descriptor", desc.descriptor_doc))
    for index, n, t in times_and_frames:
        data = {
            "exposure_index": index,
            "exposure_time": 1e-3,
            "n_frames": n,
            "q": [0.001],
            "kbar": [0.5],
            "kbar_err": [0.01],
            "beta": [0.2],
            "beta_err": [0.01],
        }
        event = desc.compose_event(data=data, timestamps=dict.fromkeys(data, t))
        event["time"] = t
        docs.append(("event", event))
    docs.append(("stop", bundle.compose_stop(exit_status="fail", reason="boom")))
    return docs, bundle.start_doc["time"]


def test_frames_per_second_from_document_times():
    docs, t0 = progress_run([(0, 100, None), (0, 300, 2.0), (1, 50, 2.5)])
    docs[2][1]["time"] = t0 + 1.0  # first event: 100 frames 1 s after the start
    docs[3][1]["time"] = t0 + 2.0  # 200 more frames in 1 s
    docs[4][1]["time"] = t0 + 2.5  # next exposure: 50 frames in 0.5 s
    out = io.StringIO()
    printer = ProgressPrinter(out, interval_s=0)
    rates = []
    for name, doc in docs:
        printer(name, doc)
        if name == "event":
            rates.append(printer.rate)
    np.testing.assert_allclose(rates, [100.0, 200.0, 100.0])
    text = out.getvalue()
    assert "100 frames/s" in text and "200 frames/s" in text


def test_failed_run_reason_and_other_runs_ignored():
    buf = io.StringIO()
    table = LiveXSVSTable(buf, progress=False)
    for name, doc in raw_run(n_frames=2):  # a raw run: not for the live table
        table(name, doc)
    assert buf.getvalue() == ""
    docs, _ = progress_run([(0, 10, 1.0)])
    for name, doc in docs:
        table(name, doc)
    text = buf.getvalue()
    assert "exposure 0: t_e = 0.001 s, 10 frames" in text
    assert text.rstrip().endswith(": fail (boom)")
    assert "frames/s" not in text


def test_replayed_event_pages_give_the_same_table(live_run):
    docs, text = live_run
    pages: list[tuple[str, Any]] = [
        ("event_page", pack_event_page(doc)) if name == "event" else (name, doc)
        for name, doc in docs
    ]
    buf = io.StringIO()
    table = LiveXSVSTable(buf, interval_s=0)
    for name, doc in pages:
        table(name, doc)
    assert buf.getvalue() == text


def test_live_figure_shows_convergence_then_the_summary(tmp_path):
    path = tmp_path / "live.png"
    figure = LiveXSVSFigure(save_path=path, redraw_interval_s=3600)
    docs = derived_run()
    progress = next(
        d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "progress"
    )
    # up to the last progress rows: the last exposure is not complete yet
    first_result = 1 + max(
        i
        for i, (n, d) in enumerate(docs)
        if n == "event_page" and d["descriptor"] == progress
    )
    for name, doc in docs[:first_result]:
        figure(name, doc)
    assert figure.n_redraws == 2  # first progress event and the live refit only
    figure.redraw()
    left, right = figure.fig.axes
    assert "convergence" in left.get_title()
    assert len(left.get_lines()) == len(TIMES)  # beta(q0) vs frames per exposure
    assert [list(line.get_xdata()) for line in left.get_lines()] == [
        [20, 40, 60]
    ] * len(TIMES)
    assert path.is_file()
    for name, doc in docs[first_result:]:
        figure(name, doc)
    left, right = figure.fig.axes
    res = RunResults.from_documents(docs)
    fits = [line for line in left.get_lines() if line.get_gid() == "fit"]
    assert len(fits) == len(TIMES)
    assert len(right.containers) == N_Q
    for j, container in enumerate(right.containers):
        expected = res.matrix("beta")[:, j] + 0.1 * j
        np.testing.assert_allclose(container.lines[0].get_ydata(), expected)
    dyn = [line for line in right.get_lines() if line.get_gid() == "dynamics"]
    assert len(dyn) == N_Q
    assert "success" in figure.fig._suptitle.get_text()
    image = imread(path)
    assert image.shape[1] > 900 and image[..., :3].std() > 0.05


def test_headless_backend_gives_a_figure_outside_pyplot():
    import matplotlib
    from matplotlib import pyplot as plt

    if matplotlib.get_backend().lower() != "agg":
        pytest.skip("needs the headless Agg backend (set MPLBACKEND=agg)")
    before = plt.get_fignums()
    figure = LiveXSVSFigure()
    assert plt.get_fignums() == before  # not a pyplot window
    assert figure.fig.get_size_inches().tolist() == [12.0, 4.5]
    figure.redraw()  # nothing received yet: an empty figure, no error
    assert figure.n_redraws == 1


def dynamics_frame(gamma, gamma_err, flags):
    import pandas as pd

    n = len(gamma)
    return pd.DataFrame(
        {
            "partition": np.arange(n),
            "q": np.linspace(2e-3, 4e-3, n),
            "model": ["exponential"] * n,
            "gamma": gamma,
            "gamma_err": gamma_err,
            "beta0": [0.2] * n,
            "beta0_err": [0.01] * n,
            "flags": flags,
        }
    )


def test_dynamics_text_flags_and_undetermined_rates():
    from xsvs_bluesky.core.dynamics import fit_diffusion

    table = dynamics_frame(
        [100.0, 50.0, 400.0], [5.0, 80.0, 20.0], [[], ["poor-fit"], []]
    )
    q = table["q"].to_numpy()
    good = fit_diffusion(q, 1e7 * q**2, 0.02 * 1e7 * q**2)
    text = format_dynamics_flags(table, good)
    rows = text.splitlines()[2:5]
    assert rows[0].endswith("  -") and "+-" in rows[0]
    # error 80 >= rate 50: no numbers for the rate, the flag is shown
    assert "not yet determined" in rows[1] and "50" not in rows[1].split()[3]
    assert rows[1].endswith("poor-fit")
    assert good.status == "diffusive"
    assert "D = 1e+07" in text and "status diffusive" in text
    assert "flags" in text.splitlines()[0]


def test_diffusion_record_round_trip_keeps_status_and_error_scale():
    from xsvs_bluesky.core.dynamics import fit_diffusion

    q = np.linspace(2e-3, 8e-3, 7)
    rng = np.random.default_rng(4)
    err = 0.02 * 1e7 * q**2
    gamma = 1e7 * q**2 * (1 + 0.08 * rng.standard_normal(q.size))  # chi2/dof ~ 16
    fit = fit_diffusion(q, gamma, err)
    assert fit.status == "poor-fit" and fit.error_scale > 1
    record = {
        "D": fit.D,
        "D_err": fit.D_err,
        "q_exponent": fit.exponent,
        "q_exponent_err": fit.exponent_err,
        "D_chi2": fit.chi2,
        "D_dof": fit.dof,
        "D_flags": ",".join(fit.flags),
    }
    back = diffusion_from_record(record)
    assert back is not None
    assert back.status == fit.status
    assert back.error_scale == pytest.approx(fit.error_scale)
    assert back.describe() == fit.describe()
    assert diffusion_from_record(None) is None
    assert diffusion_from_record({"D_err": 1.0}) is None
    # scale_errors inflates without the poor-fit rule: only the stored
    # D_error_scale (derived runs store it) gives the factor back
    scaled = fit_diffusion(
        q, 1e7 * q**2 * (1 + 0.03 * rng.standard_normal(q.size)), err, scale_errors=True
    )
    record.update(
        D=scaled.D,
        D_err=scaled.D_err,
        D_chi2=scaled.chi2,
        D_flags=",".join(scaled.flags),
        D_error_scale=scaled.error_scale,
    )
    assert scaled.error_scale > 1.2 and "poor-fit" not in scaled.flags
    back = diffusion_from_record(record)
    assert back is not None and back.error_scale == scaled.error_scale
