"""pyxsvs INI files: full parse, and one clear line for every bad variant."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from xsvs_bluesky.errors import InputFileError
from xsvs_bluesky.legacy import (
    LegacyConfig,
    frame_file_names,
    read_ini,
    xpcs_bin_factors,
)

MAIN = """\
[Main]
save dir = ./
data dir = ../../data/xsvs-series/
flat field = ../maxipix1_flatfield_2013.edf
default mask = ../maxipix1_mask_2013.edf
mask = ../mask.edf
q1 = 0.002
qs = 0.001
q2 = 0.010
dq = 4e-04
sample name = SiD_1-1_40C_
wavelength = 1.53
cenx = 125.01
ceny = 118.31
pix = 0.055
sddist = 2140
figure title = SiD_1-1 40 degC
"""


def exp(n: int, first: int | str, last: int, t: str, extra: str = "") -> str:
    return (
        f"\n[Exp_{n}]\ndata prefix = sid1-1_40C_\ndata suffix = .edf.gz\n"
        f"first data file = {first}\nlast data file = {last}\nexp time = {t}\n{extra}"
    )


GOOD = MAIN + exp(1, 1, 360, "5e-5") + exp(2, 361, 720, "1e-4")


def write(tmp_path: Path, text: str, name: str = "input.txt") -> Path:
    folder = tmp_path / "analysis" / "xsvs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InputFileError) as info:
        read_ini(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


def test_good_file_parsed_fully(tmp_path):
    path = write(tmp_path, GOOD)
    config = read_ini(path)
    assert isinstance(config, LegacyConfig)
    root = tmp_path / "analysis"
    assert config.path == path and config.layout == "pyxsvs"
    assert config.save_dir == root / "xsvs"
    assert config.data_dir == tmp_path / "data" / "xsvs-series"
    assert config.flat_field == root / "maxipix1_flatfield_2013.edf"
    assert config.default_mask == root / "maxipix1_mask_2013.edf"
    assert config.mask == root / "mask.edf" and config.mask_one_is_bad
    assert (config.q1, config.qs, config.q2, config.dq) == (0.002, 0.001, 0.010, 4e-4)
    assert config.sample_name == "SiD_1-1_40C_"
    assert config.figure_title == "SiD_1-1 40 degC"
    assert (config.wavelength, config.cenx, config.ceny) == (1.53, 125.01, 118.31)
    assert (config.pix, config.sddist) == (0.055, 2140.0)
    assert config.mode == "XSVS" and config.bin_factors == ()
    assert [e.name for e in config.exposures] == ["Exp_1", "Exp_2"]
    first, second = config.exposures
    assert (first.index, first.exposure_time, first.first, first.last) == (
        1,
        5e-5,
        1,
        360,
    )
    assert first.n_files == 360 and first.bin_factor == 1 and first.frame_time == 5e-5
    assert first.files[0] == config.data_dir / "sid1-1_40C_0001.edf.gz"
    assert second.files[-1].name == "sid1-1_40C_0720.edf.gz"
    assert first.files_in_step is None and first.useful_frames is None
    assert len(config.all_files()) == 720
    assert config.exposure("Exp_2") is second
    with pytest.raises(KeyError, match="known: Exp_1, Exp_2"):
        config.exposure("Exp_9")
    assert config.n_partitions == 9
    np.testing.assert_allclose(config.partition_centers(), np.arange(2, 11) * 1e-3)
    meta = config.to_dict()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["exposures"][1]["n_files"] == 360


def test_geometry_adapter(tmp_path):
    geometry = read_ini(write(tmp_path, GOOD)).geometry((256, 300))
    assert geometry.shape == (256, 300) and geometry.one_based
    assert (geometry.center_x, geometry.center_y) == (125.01, 118.31)
    assert (geometry.wavelength, geometry.distance, geometry.pixel_size) == (
        1.53,
        2140.0,
        0.055,
    )


def test_keys_case_insensitive_spaces_and_comments(tmp_path):
    text = GOOD.replace("wavelength = 1.53", "WaveLength   =   1.53   ; Angstrom")
    text = text.replace("data dir =", "Data Dir =").replace("sddist", "SDDist")
    config = read_ini(write(tmp_path, text))
    assert config.wavelength == 1.53 and config.sddist == 2140.0
    assert config.data_dir == tmp_path / "data" / "xsvs-series"


@pytest.mark.parametrize(
    "value",
    ["../../data/xsvs-series", "../../data/xsvs-series/", "../../data//xsvs-series/."],
)
def test_relative_data_dir_with_or_without_trailing_slash(tmp_path, value):
    text = GOOD.replace("data dir = ../../data/xsvs-series/", f"data dir = {value}")
    config = read_ini(write(tmp_path, text))
    expected = tmp_path / "data" / "xsvs-series" / "sid1-1_40C_0001.edf.gz"
    assert config.exposures[0].files[0] == expected


def test_absolute_paths_kept_and_optional_keys(tmp_path):
    text = GOOD.replace("data dir = ../../data/xsvs-series/", f"data dir = {tmp_path}")
    text = text.replace(
        "flat field = ../maxipix1_flatfield_2013.edf", "flat field = none"
    )
    text = text.replace("default mask = ../maxipix1_mask_2013.edf\n", "")
    text = text.replace("figure title = SiD_1-1 40 degC\n", "")
    text = text.replace("sample name = SiD_1-1_40C_\n", "")
    config = read_ini(write(tmp_path, text))
    assert config.data_dir == tmp_path
    assert config.flat_field is None and config.default_mask is None
    assert config.figure_title is None and config.sample_name == ""


def test_exposures_ordered_numerically(tmp_path):
    sections = "".join(exp(n, 10 * n, 10 * n + 9, f"{n}e-3") for n in (10, 2, 11, 1, 9))
    config = read_ini(write(tmp_path, MAIN + sections))
    assert [e.name for e in config.exposures] == [
        "Exp_1",
        "Exp_2",
        "Exp_9",
        "Exp_10",
        "Exp_11",
    ]
    assert [e.exposure_time for e in config.exposures] == [
        1e-3,
        2e-3,
        9e-3,
        1e-2,
        11e-3,
    ]


def test_file_numbers_pad_to_at_least_four_digits(tmp_path):
    names = [p.name for p in frame_file_names(tmp_path, "a_", ".edf", 9998, 10001)]
    assert names == ["a_9998.edf", "a_9999.edf", "a_10000.edf", "a_10001.edf"]


def test_partial_spots_files_in_step_and_useful_frames(tmp_path):
    extra = "files in step = 30\nuseful frames = 10\n"
    config = read_ini(write(tmp_path, MAIN + exp(1, 1, 95, "1e-3", extra)))
    spec = config.exposures[0]
    assert (spec.files_in_step, spec.useful_frames) == (30, 10)
    numbers = [int(p.name[11:15]) for p in spec.files]
    # spots start at 1, 31, 61, 91; the last spot is cut at last data file = 95
    assert numbers == [*range(1, 11), *range(31, 41), *range(61, 71), *range(91, 96)]


@pytest.mark.parametrize(
    ("given", "missing"),
    [("files in step = 30", "useful frames"), ("useful frames = 10", "files in step")],
)
def test_files_in_step_needs_useful_frames(tmp_path, given, missing):
    message = error_of(tmp_path, MAIN + exp(3, 1, 90, "1e-3", given + "\n"))
    assert f"[Exp_3] missing key '{missing}'" in message
    assert "give both" in message


def test_useful_frames_larger_than_step(tmp_path):
    extra = "files in step = 10\nuseful frames = 11\n"
    message = error_of(tmp_path, MAIN + exp(1, 1, 90, "1e-3", extra))
    assert "[Exp_1] useful frames = '11': larger than files in step = 10" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "wavelength = 1.53\n",
            "",
            "[Main] missing key 'wavelength'; expected the X-ray wavelength, "
            "a number > 0 in Angstrom",
        ),
        (
            "wavelength = 1.53",
            "wavelength = 1.5.3",
            "[Main] wavelength = '1.5.3': not a number",
        ),
        ("cenx = 125.01", "cenx = nan", "[Main] cenx = 'nan': not finite"),
        (
            "pix = 0.055",
            "pix = 0",
            "[Main] pix = '0': must be > 0; expected the pixel size",
        ),
        ("sddist = 2140", "sddist = -2140", "[Main] sddist = '-2140': must be > 0"),
        ("dq = 4e-04", "dq = 0", "[Main] dq = '0': must be > 0"),
        ("q2 = 0.010", "q2 = 0.001", "[Main] q2 = '0.001': smaller than q1 = 0.002"),
        ("q1 = 0.002", "q1 = -0.002", "[Main] q1 = '-0.002': must be >= 0"),
        (
            "mask = ../mask.edf\n",
            "",
            "[Main] missing key 'mask'; expected the mask EDF",
        ),
        ("mask = ../mask.edf", "mask = ", "[Main] mask = '': empty"),
        ("data dir = ../../data/xsvs-series/\n", "", "[Main] missing key 'data dir'"),
        (
            "sddist = 2140",
            "sddist = 2140\nmode = SAXS",
            "[Main] mode = 'SAXS': unknown mode; expected XSVS or XPCS",
        ),
    ],
)
def test_bad_main_values(tmp_path, old, new, expected):
    assert old in GOOD
    assert expected in error_of(tmp_path, GOOD.replace(old, new))


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            exp(1, 10, 9, "1e-3"),
            "[Exp_1] last data file = '9': smaller than first data file = 10",
        ),
        (
            exp(1, 1, 9, "fast"),
            "[Exp_1] exp time = 'fast': not a number; expected the exposure "
            "time of one frame, a number > 0 in s",
        ),
        (exp(1, 1, 9, "0"), "[Exp_1] exp time = '0': must be > 0"),
        (exp(1, "1.0", 9, "1e-3"), "[Exp_1] first data file = '1.0': not an integer"),
        (exp(1, -1, 9, "1e-3"), "[Exp_1] first data file = '-1': must be >= 0"),
        (
            exp(1, 1, 9, "1e-3").replace("data suffix = .edf.gz\n", ""),
            "[Exp_1] missing key 'data suffix'",
        ),
        (
            exp(1, 1, 9, "1e-3").replace("exp time = 1e-3\n", ""),
            "[Exp_1] missing key 'exp time'",
        ),
    ],
)
def test_bad_exposure_values(tmp_path, section, expected):
    assert expected in error_of(tmp_path, MAIN + section)


def test_missing_main_section(tmp_path):
    message = error_of(tmp_path, exp(1, 1, 9, "1e-3"))
    assert "missing section [Main]" in message and "(found: [Exp_1])" in message


def test_missing_exposure_sections(tmp_path):
    assert "no exposure sections; mode XSVS needs [Exp_1]" in error_of(tmp_path, MAIN)


def test_duplicate_exposure_numbers(tmp_path):
    text = MAIN + exp(1, 1, 9, "1e-3") + exp(1, 1, 9, "1e-3").replace("Exp_1", "Exp_01")
    assert "[Exp_1] and [Exp_01] have the same exposure number 1" in error_of(
        tmp_path, text
    )


def test_no_section_header_and_missing_file(tmp_path):
    assert "comes before any section header" in error_of(tmp_path, "q1 = 0.1\n")
    with pytest.raises(InputFileError, match=r"nope\.txt: INI file not found"):
        read_ini(tmp_path / "nope.txt")


def test_unknown_keys_and_sections_are_logged(tmp_path, caplog):
    text = GOOD.replace("q1 = 0.002", "q1 = 0.002\nfavourite colour = blue")
    text += "\n[Notes]\nwho = me\n"
    with caplog.at_level(logging.DEBUG, logger="xsvs_bluesky.legacy"):
        read_ini(write(tmp_path, text))
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("'favourite colour' is not used" in r.getMessage() for r in debug)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("[Notes] is ignored" in m for m in warnings)


# -- XPCS mode -------------------------------------------------------------------
BINS = """
[Exp_bins]
data prefix = s_
data suffix = .edf
first data file = 1
last data file = 1000
exp time = 1e-3
bin start = 0
bin stop = 2
bin step = 5
"""


def test_xpcs_mode_expands_bins_into_exposures(tmp_path):
    config = read_ini(write(tmp_path, MAIN + "mode = xpcs\n" + BINS))
    assert config.mode == "XPCS"
    assert config.bin_factors == (1, 3, 10, 31, 100)
    assert [e.name for e in config.exposures] == [f"Exp_{i}" for i in range(5)]
    assert [e.bin_factor for e in config.exposures] == [1, 3, 10, 31, 100]
    np.testing.assert_allclose(
        [e.exposure_time for e in config.exposures], [1e-3, 3e-3, 1e-2, 31e-3, 0.1]
    )
    assert all(e.frame_time == pytest.approx(1e-3) for e in config.exposures)
    assert config.exposures[3].n_frames == 1000 // 31
    assert config.exposures[0].files == config.exposures[4].files
    assert len(config.all_files()) == 1000


def test_xpcs_bin_factors_are_robust_integers():
    assert xpcs_bin_factors(0, 3, 4) == [1, 10, 100, 1000]
    assert xpcs_bin_factors(0, 1, 6) == [1, 2, 3, 6, 10]  # duplicates dropped
    assert xpcs_bin_factors(1, 1, 1) == [10]


def test_xpcs_needs_exp_bins_and_sane_bins(tmp_path):
    text = MAIN + "mode = XPCS\n" + exp(1, 1, 9, "1e-3")
    assert "mode = XPCS needs an [Exp_bins] section" in error_of(tmp_path, text)
    text = MAIN + "mode = XPCS\n" + BINS.replace("bin stop = 2", "bin stop = 3.5")
    assert "[Exp_bins] bin stop = '3.5': gives a binning factor of 3162" in error_of(
        tmp_path, text
    )
    text = MAIN + "mode = XPCS\n" + BINS.replace("bin step = 5", "bin step = 0")
    assert "[Exp_bins] bin step = '0': must be >= 1" in error_of(tmp_path, text)
    text = MAIN + "mode = XPCS\n" + BINS.replace("bin start = 0", "bin start = 3")
    assert "[Exp_bins] bin stop = '2': smaller than bin start = 3" in error_of(
        tmp_path, text
    )


# -- the older pyxpcs layout ----------------------------------------------------
PYXPCS = """\
[Directories]
save dir = ./out
data dir = ../data
flat field = ff.edf
mask = mask_good_is_one.edf
default mask = detector_mask.edf
[Analysis]
q1 = 0.001
q2 = 0.005
qs = 0.001
dq = 0.0005
[Filenames]
sample name = s1
data prefix = img_
data suffix = .edf
first data file = 5
last data file = 14
exp time = 0.01
[Beam]
wavelength = 1.55
cenx = 100
ceny = 110.5
[Detector]
pix = 0.055
sddist = 5000
"""


def test_older_pyxpcs_layout(tmp_path):
    config = read_ini(write(tmp_path, PYXPCS))
    folder = tmp_path / "analysis" / "xsvs"
    assert config.layout == "pyxpcs" and not config.mask_one_is_bad
    assert config.mask == folder / "mask_good_is_one.edf"
    assert config.save_dir == folder / "out"
    assert (config.q1, config.q2, config.qs, config.dq) == (0.001, 0.005, 0.001, 5e-4)
    assert (config.wavelength, config.cenx, config.ceny) == (1.55, 100.0, 110.5)
    assert (config.pix, config.sddist) == (0.055, 5000.0)
    (spec,) = config.exposures
    assert spec.name == "Exp_1" and spec.exposure_time == 0.01 and spec.n_files == 10
    assert spec.files[0] == tmp_path / "analysis" / "data" / "img_0005.edf"


def test_older_layout_errors(tmp_path):
    message = error_of(tmp_path, PYXPCS.replace("exp time = 0.01\n", ""))
    assert "[Filenames] missing key 'exp time'" in message
    assert "older pyxpcs layout has no exposure time" in message
    message = error_of(tmp_path, PYXPCS.replace("[Beam]", "[Bream]"))
    assert "older pyxpcs layout but section(s) [Beam] are missing" in message
    assert "[Directories], [Analysis], [Filenames], [Beam], [Detector]" in message
    message = error_of(tmp_path, PYXPCS.replace("sddist = 5000", "sddist = far"))
    assert "[Detector] sddist = 'far': not a number" in message


@pytest.mark.parametrize("name", ["Exp_x", "Exp 3", "exp3"])
def test_misnamed_exposure_section(tmp_path, name):
    text = GOOD + exp(3, 721, 1080, "2e-4").replace("[Exp_3]", f"[{name}]")
    message = error_of(tmp_path, text)
    assert (
        f"section [{name}] is not a valid exposure name; expected [Exp_<number>]"
        in (message)
    )


def test_older_layout_masks_are_inverted_and_combined(tmp_path):
    from fabio.edfimage import EdfImage

    path = write(tmp_path, PYXPCS)
    folder = path.parent
    good = np.ones((4, 5), dtype=np.int8)
    good[0, 1] = 0  # pyxpcs mask: 0 = bad
    EdfImage(data=good).write(str(folder / "mask_good_is_one.edf"))
    detector = np.zeros((4, 5), dtype=np.int8)
    detector[3, 4] = 1  # detector mask: 1 = bad
    EdfImage(data=detector).write(str(folder / "detector_mask.edf"))
    flat = np.full((4, 5), 2.0, dtype=np.float32)
    flat[0, 1] = 0.0  # masked, so not checked
    EdfImage(data=flat).write(str(folder / "ff.edf"))
    config = read_ini(path)
    mask = config.read_mask((4, 5))
    assert mask is not None
    assert mask.sum() == 2 and mask[0, 1] and mask[3, 4]
    field = config.read_flat_field((4, 5), mask)
    assert field is not None and field.dtype == np.float64 and field[2, 2] == 2.0
    with pytest.raises(InputFileError, match=r"flat field has 1 non-finite"):
        config.read_flat_field((4, 5))
