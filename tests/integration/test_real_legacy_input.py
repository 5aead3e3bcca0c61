"""The real ESRF ID10 MAXIPIX example: INI, frames, masks, flat field."""

from __future__ import annotations

import fabio
import numpy as np
import pytest

from xsvs_bluesky.legacy import (
    FrameSeries,
    header_metadata,
    read_edf,
    read_flat_field,
    read_ini,
    read_mask,
)

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def config(example_dir):
    return read_ini(example_dir / "analysis" / "xsvs" / "xsvs_input.txt")


def test_real_ini(config, example_dir):
    assert config.mode == "XSVS" and config.layout == "pyxsvs"
    assert config.data_dir == example_dir / "data" / "xsvs-series"
    assert config.mask == example_dir / "analysis" / "mask.edf"
    assert config.flat_field == example_dir / "analysis" / "maxipix1_flatfield_2013.edf"
    assert (config.cenx, config.ceny) == (125.01, 118.31)
    assert (config.wavelength, config.pix, config.sddist) == (1.53, 0.055, 2140.0)
    assert config.n_partitions == 9
    assert [e.name for e in config.exposures] == [f"Exp_{i}" for i in range(1, 9)]
    assert [e.n_files for e in config.exposures] == [360] * 7 + [180]
    times = [e.exposure_time for e in config.exposures]
    np.testing.assert_allclose(times, 5e-5 * 2.0 ** np.arange(8), rtol=1e-12)
    files = config.all_files()
    assert len(files) == 2700 and all(f.is_file() for f in files)
    assert files[0].name == "sid1-1_40C_0001.edf.gz"
    assert files[-1].name == "sid1-1_40C_2700.edf.gz"


def test_fast_path_equals_fabio_on_real_files(config):
    files = config.all_files()
    for path in files[:: len(files) // 50]:
        ours = read_edf(path)
        ref = fabio.open(str(path))
        assert ours.decoder == "fast"
        assert ours.data.dtype == np.uint16 and ours.data.shape == (256, 256)
        assert ours.data.tobytes() == ref.data.tobytes(), path
        assert ours.header == dict(ref.header)


@pytest.mark.slow
def test_fast_path_equals_fabio_on_all_real_files(config):
    for path in config.all_files():
        assert read_edf(path).data.tobytes() == fabio.open(str(path)).data.tobytes()


def test_masks_and_flat_field(config, example_dir):
    user = read_mask(config.mask, (256, 256))
    detector = read_mask(config.default_mask, (256, 256))
    assert user.sum() == 19099 and detector.sum() == 14379
    assert not (detector & ~user).any()  # the user mask contains the detector mask
    assert user[:, 143].all()  # the hot column is masked
    np.testing.assert_array_equal(config.read_mask((256, 256)), user)
    flat = read_flat_field(config.flat_field, (256, 256), mask=user)
    assert flat.dtype == np.float64
    assert flat.mean() == pytest.approx(1.0, abs=1e-6)
    assert 0.2 < flat.min() and flat.max() < 1.8


def test_hot_column_143(config):
    files = config.all_files()
    # frames 469 and 583 (1-based numbers) carry the saturated value 11810
    for number, row in ((469, 72), (583, 10)):
        frame = read_edf(files[number - 1]).data
        assert frame[row, 143] == 11810
        assert np.argwhere(frame == 11810).tolist() == [[row, 143]]
    for number in (1, 1500, 2600):  # column 143 is by far the brightest column
        column_means = read_edf(files[number - 1]).data.mean(axis=0)
        assert np.argmax(column_means) == 143
        assert column_means[143] > 20 * np.sort(column_means)[-2]


@pytest.mark.parametrize("threads", [0, 2])
def test_mean_counts_rise_with_exposure(config, threads):
    mask = config.read_mask((256, 256))
    means = []
    for spec in config.exposures:
        step = spec.n_files // 4
        series = FrameSeries(spec.files[::step][:4], threads=threads)
        stack = series.read_all()
        assert stack.shape == (4, 256, 256) and stack.dtype == np.uint16
        means.append(stack[:, ~mask].mean())
    assert means[0] == pytest.approx(0.04, rel=0.25)
    assert means[-1] == pytest.approx(4.5, rel=0.15)
    ratios = np.diff(np.log2(means))
    assert np.all((ratios > 0.7) & (ratios < 1.3))  # roughly doubling


def test_real_header_metadata(config):
    meta = header_metadata(read_edf(config.all_files()[0]).header)
    assert meta["date"] == "2013-11-03T20:25:19"
    assert meta["timestamp"] == pytest.approx(1383506719.117682)
    assert meta["frame_number"] == 0
    assert meta["header"]["roi"] == "<0,0>-<256x256>"


def test_real_geometry_partitions(config):
    geometry = config.geometry((256, 256))
    partitions = config.partitions(geometry.q_map(), config.read_mask((256, 256)))
    np.testing.assert_array_equal(
        partitions.n_pixels, [553, 1012, 1477, 1918, 2376, 2817, 3279, 3720, 4181]
    )
