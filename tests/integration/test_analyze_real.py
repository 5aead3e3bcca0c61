"""``xsvs-bluesky analyze`` on the real ESRF ID10 MAXIPIX series (2700 frames).

Two full passes over the series are shared by the tests of this module
(module-scoped fixtures): the default analysis (``mle-weighted`` with the
flat field as weights) and the legacy compatibility mode (``pyxsvs-lsq``
with ``divide-round``).  Each pass costs about the decode time of the 2700
files (a few seconds on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from xsvs_bluesky.cli import main

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

RING_PIXELS = [553, 1012, 1477, 1918, 2376, 2817, 3279, 3720, 4181]
N_FRAMES = [360] * 7 + [180]
TIMES = [5e-5 * 2**i for i in range(8)]

# Read off reference_figure_pyxsvs_notebook.png (right panel, unshifted beta),
# produced by the legacy pyxsvs tool on this series; see /tmp/xsvs/figure_values.md
# and docs/tutorial/first-analysis.md.
FIGURE_BETA = {
    0.002: [0.115, 0.235, 0.201, 0.158, 0.102, 0.066, 0.033, 0.015],
    0.003: [0.217, 0.192, 0.148, 0.098, 0.060, 0.043, 0.022, 0.007],
    0.004: [0.149, 0.149, 0.118, 0.072, 0.052, 0.035, 0.018, 0.005],
    0.010: [0.142, 0.099, 0.059, 0.045, 0.036, 0.025, 0.015, 0.007],
}
# The compatibility mode is deterministic: on the same frames it repeats the
# legacy computation, so the figure's error bars (statistical uncertainty of
# beta) do not enter the comparison; what remains is the precision with which
# the values were read off the figure, +-0.007, plus marker size.  Hence:
FIGURE_TOLERANCE = 0.010
FIGURE_MEAN_OFFSET = 0.006  # a systematic bias of the reading, if any, is smaller


@pytest.fixture(scope="module")
def ini(example_dir):
    return example_dir / "analysis" / "xsvs" / "xsvs_input.txt"


def analyze_json(ini_path, *options) -> tuple[list[dict], str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            ["analyze", str(ini_path), "--format", "json", "--no-progress", *options]
        )
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue()), err.getvalue()


def by_exposure(records, key) -> np.ndarray:
    """``[exposure, partition]`` array of ``key``."""
    n_exp = 1 + max(r["exposure"] for r in records)
    n_q = 1 + max(r["partition"] for r in records)
    out = np.full((n_exp, n_q), np.nan)
    for r in records:
        value = r[key]
        out[r["exposure"], r["partition"]] = np.nan if value is None else value
    return out


@pytest.fixture(scope="module")
def default_run(ini):
    records, err = analyze_json(ini)
    return records, err


@pytest.fixture(scope="module")
def compat_run(ini):
    records, _ = analyze_json(
        ini, "--estimator", "pyxsvs-lsq", "--flat-field", "divide-round"
    )
    return records


def test_layout_pixels_and_frames(default_run):
    records, err = default_run
    assert err == ""
    assert len(records) == 8 * 9
    assert by_exposure(records, "n_pixels").astype(int).tolist() == [RING_PIXELS] * 8
    assert by_exposure(records, "n_frames")[:, 0].astype(int).tolist() == N_FRAMES
    np.testing.assert_allclose(by_exposure(records, "exposure_time")[:, 0], TIMES)
    np.testing.assert_allclose(
        by_exposure(records, "q")[0], 0.002 + 0.001 * np.arange(9), rtol=1e-12
    )
    assert {r["estimator"] for r in records} == {"mle-intensity"}  # the default
    assert all(r["run_uid"] is None and r["raw_uid"] is None for r in records)


def test_kbar_doubles_with_exposure_time(default_run):
    kbar = by_exposure(default_run[0], "kbar").mean(axis=1)
    assert 0.03 < kbar[0] < 0.08
    assert 4.0 < kbar[-1] < 8.0
    np.testing.assert_allclose(kbar[1:] / kbar[:-1], 2.0, rtol=0.1)


def test_beta_falls_with_exposure_time(default_run):
    beta = by_exposure(default_run[0], "beta")
    err = by_exposure(default_run[0], "beta_err")
    assert np.all(np.isfinite(beta)) and np.all(err > 0)
    # every q: beta(6.4 ms) below beta(0.1 ms), by more than 2 standard errors
    assert np.all(beta[-1] < beta[1] - 2 * np.hypot(err[-1], err[1]))
    # from Exp_2 on, beta decreases with t_e for every q (rank correlation)
    for j in range(beta.shape[1]):
        rho = stats.spearmanr(TIMES[1:], beta[1:, j]).statistic
        assert rho <= -0.85, (j, beta[1:, j])
    # and the average over q strictly decreases
    assert np.all(np.diff(beta[1:].mean(axis=1)) < 0)
    # long exposures: small contrast, yet above the Poisson boundary
    assert np.all(beta[-1] < 0.03) and np.all(beta[-1] > 0)


def test_compat_mode_reproduces_the_legacy_figure(compat_run):
    beta = by_exposure(compat_run, "beta")
    assert {r["estimator"] for r in compat_run} == {"pyxsvs-lsq"}
    q = by_exposure(compat_run, "q")[0]
    diffs = []
    for q_value, expected in FIGURE_BETA.items():
        j = int(np.argmin(abs(q - q_value)))
        assert abs(q[j] - q_value) < 1e-9
        diff = beta[:, j] - np.array(expected)
        diffs.append(diff)
        assert np.all(abs(diff) <= FIGURE_TOLERANCE), (q_value, beta[:, j], expected)
    assert abs(np.mean(diffs)) < FIGURE_MEAN_OFFSET


def test_divide_round_bias_at_long_exposures(default_run, compat_run):
    """SCIENCE.md 5: the legacy divide-and-round inflates beta at high counts."""
    default = by_exposure(default_run[0], "beta")
    legacy = by_exposure(compat_run, "beta")
    assert np.all(legacy[-2:] > default[-2:])
    assert np.mean(legacy[-1] - default[-1]) > 0.002


def test_refine_center_leaves_the_ini_alone(ini, tmp_path):
    # a private copy of the INI next to the data layout it references
    copy = tmp_path / "xsvs_input.txt"
    text = ini.read_text()
    base = ini.parent
    for key in ("data dir", "flat field", "default mask", "mask"):

        def absolute(m: re.Match[str], b: Path = base, k: str = key) -> str:
            return f"{k} = {(b / m.group(1).strip()).resolve()}"

        text = re.sub(
            rf"^{key} = (.*)$",
            absolute,
            text,
            flags=re.M,
        )
    copy.write_text(text)
    shutil.copystat(ini, copy)
    before = (copy.read_bytes(), os.stat(copy).st_mtime_ns)
    records, err = analyze_json(copy, "--refine-center", "--frames-per-exposure", "20")
    assert (copy.read_bytes(), os.stat(copy).st_mtime_ns) == before
    line = next(ln for ln in err.splitlines() if "beam centre refined" in ln)
    found = re.search(
        r"cenx 125\.010 -> ([\d.]+) \+- ([\d.]+) px, ceny 118\.310 -> ([\d.]+) "
        r"\+- ([\d.]+) px",
        line,
    )
    assert found, line
    cx, cx_err, cy, cy_err = (float(g) for g in found.groups())
    # the full series gives (125.65, 118.84) +- 0.01 px
    assert abs(cx - 125.65) < 0.1 and abs(cy - 118.84) < 0.1
    assert 0 < cx_err < 0.1 and 0 < cy_err < 0.1
    # the refined centre (0.6 px away) was used: other ring pixel counts
    pixels = by_exposure(records, "n_pixels")[0].astype(int).tolist()
    assert pixels != RING_PIXELS
    assert abs(sum(pixels) - sum(RING_PIXELS)) < 0.05 * sum(RING_PIXELS)
