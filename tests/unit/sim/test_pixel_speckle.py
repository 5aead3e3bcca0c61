"""The pixel-level speckle simulator: its truth and its counts."""

from __future__ import annotations

import numpy as np
import pytest

from xsvs_bluesky.sim.pixel_speckle import PixelSpeckle, brownian_visibility


def test_visibility_check_values() -> None:
    x = [0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0, 0.0]
    expected = [
        0.99336653,
        0.93653765,
        0.73575888,
        0.56766764,
        0.37728945,
        0.095,
        0.00995,
        1.0,
    ]
    assert brownian_visibility(x) == pytest.approx(expected, abs=1e-8)
    x0 = 1e-4  # the series branch
    assert brownian_visibility(x0) == pytest.approx(1 - 2 * x0 / 3 + x0 * x0 / 3)


def test_ring_truth_and_pooled_limit() -> None:
    sim = PixelSpeckle(diffusion=0.0, efficiency_var=0.01, seed=3)
    ring = np.flatnonzero(np.abs(sim.q_map.ravel() - 0.004) <= 0.0005)
    t = 1e-3
    # constant contrast: the ring truth is that contrast
    assert sim.ring_beta(ring, t) == pytest.approx(sim.beta0)
    mu = sim.mean_map(t).ravel()[ring]
    spread = np.var(mu) / np.mean(mu) ** 2
    assert spread > 0.01  # flat field and the gradient of A/(q^2+q0^2)
    assert sim.pooled_beta(ring, t) == pytest.approx(
        sim.beta0 + spread * (1 + sim.beta0)
    )
    # the mean follows A / (q^2 + q0^2) t w pixel by pixel
    q = sim.q_map.ravel()[ring]
    w = sim.flat_field.ravel()[ring]
    assert np.allclose(mu, t * sim.amplitude / (q**2 + sim.q0**2) * w)
    assert np.mean(sim.flat_field) == pytest.approx(1.0)
    assert np.var(sim.flat_field) == pytest.approx(0.01, rel=0.05)


def test_counts_have_the_pixel_moments() -> None:
    mask = np.ones((256, 256), bool)
    mask[90:150, 90:150] = False
    sim = PixelSpeckle(mask=mask, seed=9, amplitude=0.05)
    t = 2e-3
    frames = sim.frames(t, 500)
    assert frames.dtype == np.uint16
    assert not frames[:, mask].any()
    again = sim.frames(t, 500)
    assert np.array_equal(frames, again)  # seeded
    assert not np.array_equal(frames, sim.frames(t, 500, block=1))
    k = frames[:, ~mask].astype(float)
    mu = sim.mean_map(t)[~mask]
    beta = sim.beta_map(t)[~mask]
    # factorial moments, pooled over pixels: E k = mu, E k(k-1) = mu^2 (1+beta)
    assert k.mean() == pytest.approx(mu.mean(), rel=0.01)
    assert (k * (k - 1)).mean() == pytest.approx(np.mean(mu**2 * (1 + beta)), rel=0.03)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="beta0"):
        PixelSpeckle(beta0=0.0)
    with pytest.raises(ValueError, match="mask"):
        PixelSpeckle(mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="exposure_time"):
        PixelSpeckle().frames(0.0, 1)
