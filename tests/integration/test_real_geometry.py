"""q partitions of the real ESRF MAXIPIX example against the legacy pixel counts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from xsvs_bluesky.core.geometry import (
    Geometry,
    Partitions,
    check_mask_polarity,
    combine_masks,
)
from xsvs_bluesky.core.images import ImageAverager, refine_center

fabio = pytest.importorskip("fabio")

pytestmark = pytest.mark.realdata

# legacy pyxsvs result on this data set (SCIENCE.md section 2)
LEGACY_COUNTS = [553, 1012, 1477, 1918, 2376, 2817, 3279, 3720, 4181]


def read_edf(path: Path) -> np.ndarray:
    """EDF data as an array (masks: 1 = bad pixel; also the flat field)."""
    return np.asarray(fabio.open(str(path)).data)


@pytest.fixture(scope="module")
def geometry() -> Geometry:
    # analysis/xsvs/xsvs_input.txt: wavelength, sddist, pix, cenx, ceny
    return Geometry(1.53, 2140.0, 0.055, 125.01, 118.31, (256, 256))


def test_legacy_partition_counts(example_dir, geometry):
    mask = read_edf(example_dir / "analysis" / "mask.edf")
    assert mask.shape == geometry.shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = Partitions.from_range(geometry.q_map(), 0.002, 0.010, 0.001, 4e-4, mask)
        assert check_mask_polarity(mask, "mask.edf") < 0.5
    assert p.n_pixels.tolist() == LEGACY_COUNTS
    np.testing.assert_allclose(p.centers, np.linspace(0.002, 0.010, 9), atol=1e-15)
    assert not p.overlapping
    assert not np.any(mask.ravel()[np.concatenate(p.pixels)])
    labels = p.label_image()
    assert np.all(labels[mask != 0] == -1)
    assert np.all(labels[:, 143] == -1)  # the hot column (0-based index 143)


def test_union_with_default_mask_never_adds_pixels(example_dir, geometry):
    user = read_edf(example_dir / "analysis" / "mask.edf")
    default = read_edf(example_dir / "analysis" / "maxipix1_mask_2013.edf")
    assert check_mask_polarity(default, "maxipix1_mask_2013.edf") < 0.5
    union = combine_masks(default, user)
    assert union.sum() >= max(np.count_nonzero(user), np.count_nonzero(default))
    p = Partitions.from_range(geometry.q_map(), 0.002, 0.010, 0.001, 4e-4, union)
    counts = p.n_pixels
    assert np.all(counts <= np.array(LEGACY_COUNTS))
    assert np.all(counts > 0)


def test_refine_center_on_flat_corrected_mean_image(example_dir, geometry):
    """Regression pin: the flat-corrected mean image is centred ~0.6 px from the INI.

    The last exposure (frames 2521-2700, the highest counts) divided by the flat
    field gives (125.65, 118.84) in the legacy 1-based convention, with every
    subset of frames tried; the INI says (125.01, 118.31).
    """
    analysis = example_dir / "analysis"
    mask = combine_masks(
        read_edf(analysis / "mask.edf"), read_edf(analysis / "maxipix1_mask_2013.edf")
    )
    flat = read_edf(analysis / "maxipix1_flatfield_2013.edf").astype(np.float64)
    mask |= ~(np.isfinite(flat) & (flat > 0))
    frames = example_dir / "data" / "xsvs-series"
    avg = ImageAverager()
    for n in range(2521, 2701):
        avg.update(fabio.open(str(frames / f"sid1-1_40C_{n:04d}.edf.gz")).data)
    image = avg.mean() / np.where(mask, 1.0, flat)
    fit = refine_center(image, geometry, mask, jackknife_sectors=8)
    assert fit.n_pixels == int((~mask).sum())
    assert fit.center_x == pytest.approx(125.65, abs=0.1)
    assert fit.center_y == pytest.approx(118.84, abs=0.1)
    assert fit.center_x_err < 0.05 and fit.center_y_err < 0.05
    assert 0.9 < fit.reduced_chi2 < 1.1
