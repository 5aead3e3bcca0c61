"""Tests of xsvs_bluesky.core.images: averaging, radial profiles, centre refinement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xsvs_bluesky.core.geometry import Geometry, Partitions
from xsvs_bluesky.core.images import (
    CenterFit,
    ImageAverager,
    RadialProfile,
    radial_profile,
    refine_center,
)
from xsvs_bluesky.core.synthetic import speckle_frames
from xsvs_bluesky.errors import FitError, GeometryError, XSVSError

# ------------------------------------------------------------------ ImageAverager


def test_averager_stack_single_frames_and_merge_equal_all_frames():
    frames = speckle_frames(23, (16, 24), kbar=3.0, beta=0.3, rng=11)
    a = ImageAverager()
    a.update(frames[:10])
    a.update(frames[10])
    b = ImageAverager((16, 24))
    b.update(frames[11:20])
    b.update(frames[20:20])  # an empty stack adds nothing
    for f in frames[20:]:
        b.update(f)
    merged = a.merge(b)
    assert (a.n_frames, b.n_frames, merged.n_frames) == (11, 12, 23)
    # integer counts: float64 sums are exact
    expected = frames.astype(np.float64).sum(axis=0)
    np.testing.assert_array_equal(merged.sum, expected)
    np.testing.assert_array_equal(merged.mean(), expected / 23)
    assert merged.mean().dtype == np.float64
    # merge leaves its inputs alone
    np.testing.assert_array_equal(a.sum, frames[:11].sum(axis=0))
    assert not merged.sum.flags.writeable


def test_averager_merge_with_empty_and_errors():
    frames = np.arange(12, dtype=np.uint16).reshape(3, 2, 2)
    a = ImageAverager()
    a.update(frames)
    merged = ImageAverager().merge(a)
    assert merged.n_frames == 3
    np.testing.assert_array_equal(merged.mean(), [[4.0, 5.0], [6.0, 7.0]])
    with pytest.raises(XSVSError, match="no frames"):
        ImageAverager().mean()
    with pytest.raises(GeometryError, match=r"\(3, 2\)"):
        a.update(np.zeros((3, 2)))
    with pytest.raises(GeometryError, match="shape"):
        a.update(np.zeros(4))
    other = ImageAverager()
    other.update(np.zeros((2, 3)))
    with pytest.raises(GeometryError, match="differ"):
        a.merge(other)
    assert ImageAverager().shape is None and a.shape == (2, 2)


def test_averager_large_counts_do_not_overflow():
    a = ImageAverager()
    frame = np.full((2, 2), 60000, dtype=np.uint16)
    a.update(np.stack([frame] * 4))
    a.update(frame)
    assert a.sum[0, 0] == 300000.0
    # 70 full-scale 16-bit frames: two whole 32-frame passes of the compiled
    # sum (its int32 partial at its largest) and a 6-frame tail
    b = ImageAverager()
    b.update(np.full((70, 3, 5), 65535, dtype=np.uint16))
    np.testing.assert_array_equal(b.sum, np.full((3, 5), 70 * 65535.0))


# ----------------------------------------------------------------- radial_profile


def small_partitions() -> tuple[Geometry, Partitions]:
    g = Geometry(1.53, 2140.0, 0.055, 60.4, 50.6, (96, 128))
    return g, Partitions.from_range(g.q_map(), 0.001, 0.004, 0.001, 4e-4)


def test_radial_profile_of_known_image():
    g, p = small_partitions()
    image = 100.0 * np.exp(-g.q_map() / 0.002)
    prof = radial_profile(image, p)
    assert isinstance(prof, RadialProfile)
    q, intensity, err = prof
    np.testing.assert_array_equal(q, p.centers)
    for j, pix in enumerate(p.pixels):
        v = image.ravel()[pix]
        assert intensity[j] == pytest.approx(v.mean(), rel=1e-12)
        assert err[j] == pytest.approx(v.std(ddof=1) / np.sqrt(v.size), rel=1e-9)
    # a monotonic profile: means fall with q and lie close to I(q_j)
    assert np.all(np.diff(intensity) < 0)
    np.testing.assert_allclose(intensity, 100.0 * np.exp(-q / 0.002), rtol=0.02)


def test_radial_profile_constant_rings_and_empty_partition():
    g, p = small_partitions()
    labels = p.label_image()
    image = np.where(labels >= 0, 10.0 * (labels + 1), -5.0)
    q, intensity, err = radial_profile(image, p)
    np.testing.assert_allclose(intensity, [10.0, 20.0, 30.0, 40.0])
    np.testing.assert_allclose(err, 0.0, atol=1e-12)
    empty = Partitions.from_centers(g.q_map(), [0.002, 1.0], 1e-4)
    _, i2, e2 = radial_profile(image, empty)
    assert np.isfinite(i2[0]) and np.isnan(i2[1]) and np.isnan(e2[1])
    with pytest.raises(GeometryError, match="shape"):
        radial_profile(image.T, p)


# ------------------------------------------------------------------ refine_center


def ring_image(shape: tuple[int, int], cx: float, cy: float, seed: int) -> np.ndarray:
    """Poisson counts of two rings and a central peak around (cx, cy), 1-based."""
    i, j = np.indices(shape)
    r = np.hypot(i + 1 - cy, j + 1 - cx)
    lam = (
        5.0
        + 60.0 * np.exp(-0.5 * ((r - 40.0) / 3.0) ** 2)
        + 30.0 * np.exp(-0.5 * ((r - 85.0) / 5.0) ** 2)
        + 200.0 * np.exp(-r / 15.0)
    )
    return np.random.default_rng(seed).poisson(lam).astype(np.float64)


def assert_good_fit(fit: CenterFit, cx: float, cy: float) -> None:
    assert abs(fit.center_x - cx) < 0.1 and abs(fit.center_y - cy) < 0.1
    assert 0 < fit.center_x_err < 0.1 and 0 < fit.center_y_err < 0.1
    assert abs(fit.center_x - cx) < 4 * fit.center_x_err
    assert abs(fit.center_y - cy) < 4 * fit.center_y_err
    assert 0.8 < fit.reduced_chi2 < 1.2  # the noise model fits


def test_refine_center_square_detector_off_grid():
    cx, cy = 125.37, 118.71
    image = ring_image((256, 256), cx, cy, seed=1)
    start = Geometry(1.53, 2140.0, 0.055, 127.0, 116.5, (256, 256))
    fit = refine_center(image, start)
    assert_good_fit(fit, cx, cy)
    assert fit.method == "azimuthal-spline" and fit.error_method == "jacobian"
    assert fit.one_based is True and fit.n_pixels == 256 * 256
    assert (fit.initial_x, fit.initial_y) == (127.0, 116.5)
    moved = fit.apply(start)
    assert (moved.center_x, moved.center_y) == (fit.center_x, fit.center_y)
    assert json.loads(json.dumps(fit.to_dict()))["center_x"] == fit.center_x


def test_refine_center_non_square_detector():
    cx, cy = 160.42, 90.83  # centre column beyond the number of rows
    image = ring_image((200, 320), cx, cy, seed=2)
    start = Geometry(1.53, 2140.0, 0.055, 158.0, 93.0, (200, 320))
    assert_good_fit(refine_center(image, start), cx, cy)


def test_refine_center_masked_column_and_beamstop():
    cx, cy = 125.37, 118.71
    image = ring_image((256, 256), cx, cy, seed=3)
    i, j = np.indices(image.shape)
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, 142] = True  # a hot column
    mask |= np.hypot(i + 1 - cy, j + 1 - cx) < 12  # beamstop
    mask |= (np.abs(j + 1 - cx) < 4) & (i + 1 > cy)  # its arm
    image[mask] = 65535.0  # garbage under the mask must not matter
    start = Geometry(1.53, 2140.0, 0.055, 124.0, 120.0, (256, 256))
    fit = refine_center(image, start, mask)
    assert_good_fit(fit, cx, cy)
    assert fit.n_pixels == int((~mask).sum())
    # NaN pixels are ignored as well
    image_nan = np.where(mask, np.nan, image)
    fit_nan = refine_center(image_nan, start)
    assert fit_nan.center_x == pytest.approx(fit.center_x, abs=1e-6)
    assert fit_nan.center_y == pytest.approx(fit.center_y, abs=1e-6)


def test_refine_center_same_convention_as_q_map():
    # the same pixels in both conventions: centres differ by exactly 1 px
    cx, cy = 60.37, 50.71
    image = ring_image((110, 130), cx, cy, seed=4)
    one = refine_center(image, Geometry(1.0, 1000.0, 0.1, 61.0, 50.0, (110, 130)))
    zero = refine_center(
        image, Geometry(1.0, 1000.0, 0.1, 60.0, 49.0, (110, 130), one_based=False)
    )
    assert zero.one_based is False
    assert zero.center_x == pytest.approx(one.center_x - 1.0, abs=1e-6)
    assert zero.center_y == pytest.approx(one.center_y - 1.0, abs=1e-6)
    # the refined geometry puts q = min where the truth is
    g = one.apply(Geometry(1.0, 1000.0, 0.1, 61.0, 50.0, (110, 130)))
    truth = Geometry(1.0, 1000.0, 0.1, cx, cy, (110, 130))
    # dq/dr = 2 pi / lambda * pix / distance = 6.3e-4 1/A per px here: 0.1 px
    np.testing.assert_allclose(g.q_map(), truth.q_map(), rtol=0, atol=6.3e-5)
    with pytest.raises(GeometryError, match="one_based"):
        zero.apply(g)


def test_refine_center_jackknife_errors():
    cx, cy = 60.37, 50.71
    image = ring_image((110, 130), cx, cy, seed=5)
    start = Geometry(1.0, 1000.0, 0.1, 61.0, 50.0, (110, 130))
    jac = refine_center(image, start)
    jk = refine_center(image, start, jackknife_sectors=6)
    assert jk.error_method == "jackknife-6"
    assert jk.center_x == jac.center_x and jk.center_y == jac.center_y
    # an isotropic pattern: both error estimates agree within the jackknife noise
    for a, b in (
        (jk.center_x_err, jac.center_x_err),
        (jk.center_y_err, jac.center_y_err),
    ):
        assert 0.25 < a / b < 4.0


def test_refine_center_failures():
    start = Geometry(1.0, 1000.0, 0.1, 61.0, 50.0, (110, 130))
    flat = np.full((110, 130), 7.0)
    with pytest.raises(FitError, match="radial structure"):
        refine_center(flat, start)
    noise = np.random.default_rng(6).poisson(7.0, (110, 130)).astype(np.float64)
    with pytest.raises(FitError, match="max_shift"):
        refine_center(noise, start, max_shift=3.0)
    far = ring_image((110, 130), 75.0, 50.0, seed=6)
    with pytest.raises(FitError, match="max_shift"):
        refine_center(far, start, max_shift=2.0)
    with pytest.raises(FitError, match="usable pixels"):
        refine_center(far, start, np.ones((110, 130), dtype=bool))
    with pytest.raises(GeometryError, match="shape"):
        refine_center(far.T, start)
    with pytest.raises(GeometryError, match="knot_spacing"):
        refine_center(far, start, knot_spacing=0.0)
    with pytest.raises(GeometryError, match="jackknife_sectors"):
        refine_center(far, start, jackknife_sectors=2)
    with pytest.raises(GeometryError, match="r_range"):
        refine_center(far, start, r_range=(10.0, 5.0))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint32])
def test_averager_stack_sum_is_exact_for_every_integer_dtype(dtype):
    # 61 x 73 pixels: more than one block of the compiled sum, with a tail
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 250, size=(9, 61, 73)).astype(dtype)
    a = ImageAverager()
    a.update(frames[:5])
    a.update(frames[5:])
    np.testing.assert_array_equal(a.sum, frames.sum(axis=0, dtype=np.float64))
    assert a.n_frames == 9


def test_absorbed_block_sums_equal_the_sum_of_the_series_bit_for_bit():
    """Integer counts sum exactly in float64: any blocking gives one result."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 60000, size=(300, 8, 9), dtype=np.uint16)
    whole = ImageAverager()
    for a in range(0, 300, 32):  # the in-process pieces
        whole.update(frames[a : a + 32])
    merged = ImageAverager()
    for a, b in [(0, 7), (7, 150), (150, 151), (151, 300)]:  # a worker's blocks
        part = ImageAverager()
        part.update(frames[a:b])
        merged.absorb(part.sum, part.n_frames)
    assert merged.n_frames == 300
    assert merged.sum.tobytes() == whole.sum.tobytes()
    assert merged.mean().tobytes() == whole.mean().tobytes()
    np.testing.assert_array_equal(whole.sum, frames.sum(axis=0, dtype=np.int64))
    with pytest.raises(GeometryError, match="shape"):
        merged.absorb(np.zeros((3, 3)), 1)
    with pytest.raises(GeometryError, match="rows"):
        merged.absorb(np.zeros(3), 1)
