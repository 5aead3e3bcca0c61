"""EDF decoding: the fast path equals fabio; damage gives clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import fabio
import numpy as np
import pytest
from fabio.edfimage import EdfImage

from xsvs_bluesky.core.geometry import MaskPolarityWarning
from xsvs_bluesky.errors import InputFileError
from xsvs_bluesky.legacy import (
    FrameSeries,
    check_files_exist,
    header_metadata,
    read_edf,
    read_flat_field,
    read_frame,
    read_header,
    read_mask,
)

DTYPES = ["uint16", "int32", "float32", "uint8", "int8", "int16", "uint32", "float64"]


def _frame(dtype: str, shape: tuple[int, int] = (7, 5), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def write_edf(
    path: Path,
    data: np.ndarray,
    *,
    header: dict[str, str] | None = None,
    big_endian: bool = False,
    gz: bool = False,
) -> Path:
    """Write with fabio (native order); optionally rewrite as HighByteFirst."""
    EdfImage(data=data, header=dict(header or {})).write(str(path))
    raw = path.read_bytes()
    if big_endian:
        end = raw.index(b"}\n") + 2
        text = raw[:end].replace(b"LowByteFirst ", b"HighByteFirst")
        assert len(text) == end  # one padding space fewer: header keeps its size
        raw = text + data.astype(data.dtype.newbyteorder(">")).tobytes()
    if gz:
        path.unlink()
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def assert_same_as_fabio(path: Path, decoder: str = "fast") -> np.ndarray:
    ours = read_edf(path)
    ref = fabio.open(str(path))
    assert ours.decoder == decoder
    assert ours.data.dtype == ref.data.dtype
    assert ours.data.dtype.isnative
    assert ours.data.shape == ref.data.shape
    assert ours.data.tobytes() == ref.data.tobytes()  # bit-identical (NaN too)
    assert ours.data.flags.writeable
    return ours.data


@pytest.mark.parametrize("gz", [False, True], ids=["edf", "edf.gz"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["low", "high"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_is_bit_identical_to_fabio(tmp_path, dtype, big_endian, gz):
    data = _frame(dtype)
    path = write_edf(tmp_path / "f.edf", data, big_endian=big_endian, gz=gz)
    out = assert_same_as_fabio(path)
    np.testing.assert_array_equal(out, data)


def test_float_nan_and_inf_survive(tmp_path):
    data = np.array([[np.nan, np.inf], [-np.inf, -0.0]], dtype=np.float32)
    out = assert_same_as_fabio(write_edf(tmp_path / "f.edf", data, big_endian=True))
    assert np.isnan(out[0, 0]) and out[0, 1] == np.inf and np.signbit(out[1, 1])


def test_long_header_spanning_several_512_byte_blocks(tmp_path):
    header = {f"key_{i:02d}": "x" * 40 for i in range(40)}
    path = write_edf(tmp_path / "f.edf", _frame("uint16", (4, 6)), header=header)
    offset = path.read_bytes().index(b"}\n") + 2
    assert offset % 512 == 0 and offset >= 2048
    assert_same_as_fabio(path)
    assert read_header(path)["key_39"] == "x" * 40


def test_multi_frame_file_falls_back_to_fabio_first_frame(tmp_path):
    image = EdfImage(data=_frame("int32", seed=1))
    image.append_frame(data=_frame("int32", seed=2))
    image.write(str(tmp_path / "m.edf"))
    out = assert_same_as_fabio(tmp_path / "m.edf", decoder="fabio")
    np.testing.assert_array_equal(out, _frame("int32", seed=1))


def test_non_square_shape_is_rows_dim2_cols_dim1(tmp_path):
    data = _frame("uint16", (3, 11))
    path = write_edf(tmp_path / "f.edf", data, gz=True)
    assert read_header(path)["Dim_1"] == "11"
    assert read_frame(path).shape == (3, 11)


def test_multi_member_and_zero_padded_gzip(tmp_path):
    plain = write_edf(tmp_path / "f.edf", _frame("uint16"))
    raw = plain.read_bytes()
    two = tmp_path / "two.edf.gz"
    two.write_bytes(gzip.compress(raw[:300]) + gzip.compress(raw[300:]))
    padded = tmp_path / "pad.edf.gz"
    padded.write_bytes(gzip.compress(raw) + b"\0" * 16)
    for path in (two, padded):
        np.testing.assert_array_equal(read_frame(path), _frame("uint16"))


def test_fabio_only_mode_gives_same_frame(tmp_path):
    path = write_edf(tmp_path / "f.edf", _frame("float32"), gz=True)
    assert read_edf(path, fast=False).decoder == "fabio"
    assert read_frame(path, fast=False).tobytes() == read_frame(path).tobytes()


# -- damaged files -------------------------------------------------------------
def test_truncated_gzip_names_the_file(tmp_path):
    path = write_edf(tmp_path / "f.edf", _frame("uint16", (64, 64)), gz=True)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputFileError, match=r"f\.edf\.gz: corrupt or truncated gzip"):
        read_frame(path)


def test_corrupt_gzip_names_the_file(tmp_path):
    path = write_edf(tmp_path / "f.edf", _frame("uint16", (64, 64)), gz=True)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match=r"f\.edf\.gz: corrupt"):
        read_frame(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload_is_an_error_not_zero_padding(tmp_path, gz):
    path = write_edf(tmp_path / "f.edf", _frame("uint16", (8, 8)))
    path.write_bytes(path.read_bytes()[:-10])  # fabio would pad with zeros
    if gz:
        path = tmp_path / "g.edf.gz"
        path.write_bytes(gzip.compress((tmp_path / "f.edf").read_bytes()))
    with pytest.raises(InputFileError) as info:
        read_frame(path)
    message = str(info.value)
    assert str(path) in message and "truncated EDF payload" in message
    assert "118 bytes" in message and "needs 128" in message and "\n" not in message


def test_header_without_end_is_an_error(tmp_path):
    path = tmp_path / "bad.edf"
    path.write_bytes(b"{\nDim_1 = 4 ;\nDim_2 = 4 ;\n" + b" " * 600)
    with pytest.raises(InputFileError, match=r"bad\.edf: EDF header never ends"):
        read_frame(path)


def test_garbage_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "junk.edf"
    path.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(InputFileError, match=r"junk\.edf: cannot decode image file"):
        read_frame(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match=r"nope\.edf\.gz: frame file not found"):
        read_frame(tmp_path / "nope.edf.gz")


# -- masks and flat fields -------------------------------------------------------
def test_read_mask_polarity_and_shape(tmp_path):
    mask = np.zeros((4, 6), dtype=np.int8)
    mask[1, 2] = 1
    mask[3, 5] = 2  # any nonzero value is bad
    path = write_edf(tmp_path / "mask.edf", mask)
    bad = read_mask(path, (4, 6))
    assert bad.dtype == bool and bad.sum() == 2 and bad[1, 2] and bad[3, 5]
    with pytest.warns(MaskPolarityWarning, match=r"mask\.edf' excludes 91\.7%"):
        inverted = read_mask(path, one_is_bad=False)
    np.testing.assert_array_equal(inverted, ~bad)


def test_mask_of_wrong_shape_names_file_and_both_shapes(tmp_path):
    path = write_edf(tmp_path / "mask.edf", np.zeros((4, 6), dtype=np.int8))
    with pytest.raises(InputFileError) as info:
        read_mask(path, (6, 4))
    message = str(info.value)
    assert str(path) in message
    assert "(4, 6) (transposed?)" in message and "(6, 4)" in message
    with pytest.raises(InputFileError, match=r"mask shape \(4, 6\) does not match"):
        read_mask(path, (256, 256))


def test_flat_field_checked_where_used(tmp_path):
    flat = np.ones((4, 6), dtype=np.float32)
    flat[0, 0] = 0.0
    flat[2, 3] = np.nan
    path = write_edf(tmp_path / "ff.edf", flat)
    with pytest.raises(InputFileError) as info:
        read_flat_field(path, (4, 6))
    message = str(info.value)
    assert "2 non-finite or non-positive" in message and "row 0, column 0" in message
    mask = np.zeros((4, 6), dtype=bool)
    mask[0, 0] = mask[2, 3] = True
    out = read_flat_field(path, (4, 6), mask=mask)
    assert out.dtype == np.float64 and out[1, 1] == 1.0
    with pytest.raises(InputFileError, match=r"flat field shape"):
        read_flat_field(path, (5, 6))


# -- series ------------------------------------------------------------------------
def _series(tmp_path: Path, n: int = 10) -> list[Path]:
    return [
        write_edf(
            tmp_path / f"s_{i:04d}.edf", _frame("uint16", (8, 8), seed=i), gz=True
        )
        for i in range(1, n + 1)
    ]


def test_missing_files_one_error_with_count(tmp_path):
    files = _series(tmp_path, 4)
    wanted = files + [tmp_path / f"s_{i:04d}.edf.gz" for i in range(5, 12)]
    with pytest.raises(InputFileError) as info:
        FrameSeries(wanted)
    message = str(info.value)
    assert message.startswith("7 of 11 frame files are missing in ")
    assert "s_0005.edf.gz, s_0006.edf.gz, s_0007.edf.gz, ..." in message
    with pytest.raises(InputFileError, match="7 of 11"):
        check_files_exist(wanted)
    check_files_exist(files)  # no error


@pytest.mark.parametrize("threads", [0, 2])
def test_series_yields_frames_in_order(tmp_path, threads):
    files = _series(tmp_path)
    series = FrameSeries(files, threads=threads)
    frames = list(series)
    assert len(series) == 10 and len(frames) == 10
    for i, frame in enumerate(frames, start=1):
        np.testing.assert_array_equal(frame, _frame("uint16", (8, 8), seed=i))
    assert series.shape == (8, 8) and series.dtype == np.uint16
    assert [c.shape for c in FrameSeries(files, threads=threads).chunks(4)] == [
        (4, 8, 8),
        (4, 8, 8),
        (2, 8, 8),
    ]
    np.testing.assert_array_equal(FrameSeries(files).read_all(), np.stack(frames))


@pytest.mark.parametrize("threads", [0, 2])
def test_shape_mismatch_names_first_differing_file(tmp_path, threads):
    files = _series(tmp_path, 5)
    write_edf(tmp_path / "s_0004.edf", _frame("uint16", (8, 9)), gz=True)
    with pytest.raises(InputFileError) as info:
        list(FrameSeries(files, threads=threads))
    message = str(info.value)
    assert message.startswith(f"{files[3]}: frame shape (8, 9) dtype uint16")
    assert f"shape (8, 8) dtype uint16 of {files[0]}" in message


def test_dtype_mismatch_against_expected(tmp_path):
    files = _series(tmp_path, 2)
    with pytest.raises(InputFileError, match=r"dtype uint16 differs from .* int32"):
        list(FrameSeries(files, expected_dtype=np.int32))


@pytest.mark.parametrize("threads", [0, 2])
def test_skip_bad_records_bad_files_and_goes_on(tmp_path, threads):
    files = _series(tmp_path, 6)
    files[2].write_bytes(files[2].read_bytes()[:-50])  # truncated gz
    files[4].write_bytes(b"garbage")
    with pytest.raises(InputFileError, match=r"s_0003\.edf\.gz: corrupt or truncated"):
        list(FrameSeries(files, threads=threads))
    extra = tmp_path / "s_0099.edf.gz"  # missing
    series = FrameSeries([*files, extra], skip_bad=True, threads=threads)
    frames = list(series)
    assert len(frames) == 4
    np.testing.assert_array_equal(frames[2], _frame("uint16", (8, 8), seed=4))
    skipped = dict(series.skipped)
    assert set(skipped) == {files[2], files[4], extra}
    assert skipped[extra] == "file not found"
    assert skipped[files[2]].startswith("corrupt or truncated gzip data")
    assert "cannot decode" in skipped[files[4]]


# -- metadata ------------------------------------------------------------------------
def test_header_metadata_plain_json(tmp_path):
    header = {
        "count_time": "0.001",
        "time_of_day": "1383506719.117682",
        "time": "Sun Nov  3 20:25:19 2013",
        "motor_mne": "samx samy",
        "motor_pos": "1.5 -2",
        "counter_mne": "mon",
        "counter_pos": "12345",
        "acq_frame_nb": "7",
        "odd.key/name": "text",
    }
    path = write_edf(tmp_path / "f.edf", _frame("uint16"), header=header, gz=True)
    meta = header_metadata(read_header(path))
    assert meta["count_time"] == 0.001
    assert meta["timestamp"] == 1383506719.117682
    assert meta["date"] == "2013-11-03T20:25:19"
    assert meta["motors"] == {"samx": 1.5, "samy": -2}
    assert meta["counters"] == {"mon": 12345}
    assert meta["frame_number"] == 7
    assert meta["header"]["odd_key_name"] == "text"
    assert "DataType" not in meta["header"] and meta["header"]["Image"] == 0
    assert json.loads(json.dumps(meta)) == meta


# -- resource limits: gzip bombs and announced sizes ----------------------------------
def _edf_bytes(tmp_path: Path, shape: tuple[int, int] = (16, 16)) -> bytes:
    path = write_edf(tmp_path / "one.edf", np.zeros(shape, np.uint16))
    return path.read_bytes()


def gzip_bomb(tmp_path: Path, inflated_mib: int) -> Path:
    """A valid EDF header + frame, then zeros: ``inflated_mib`` MiB once inflated.

    Built from one compressed MiB of zeros repeated as gzip members (a gzip
    file may hold many), so making a 2 GiB bomb costs 2 MB and no time.
    """
    zeros = gzip.compress(bytes(2**20), compresslevel=9)
    path = tmp_path / "bomb.edf.gz"
    with path.open("wb") as out:
        out.write(gzip.compress(_edf_bytes(tmp_path)))
        for _ in range(inflated_mib):
            out.write(zeros)
    return path


def test_gzip_bomb_stops_at_the_limit_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    from xsvs_bluesky.errors import OversizedFileError
    from xsvs_bluesky.options import Limits

    bomb = gzip_bomb(tmp_path, 2048)  # 2 GiB inflated
    assert bomb.stat().st_size < 3 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(OversizedFileError, match="inflates to more than") as info:
            read_edf(bomb, limits=Limits(max_frame_bytes=8 * 2**20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, peak  # the limit, not 2 GiB
    assert isinstance(info.value, InputFileError)  # skipped like a damaged file
    assert str(bomb) in str(info.value) and "Limits.max_frame_bytes" in str(info.value)


def test_default_limit_refuses_a_2_gib_bomb(tmp_path: Path) -> None:
    from xsvs_bluesky.errors import LimitError

    with pytest.raises(LimitError, match="268435456 bytes"):
        read_edf(gzip_bomb(tmp_path, 2048))


def test_a_header_announcing_a_huge_frame_is_refused_before_inflating(
    tmp_path: Path,
) -> None:
    from xsvs_bluesky.errors import OversizedFileError

    raw = _edf_bytes(tmp_path).replace(b"Dim_1 = 16", b"Dim_1 = 99999999", 1)
    assert b"Dim_1 = 99999999" in raw
    path = tmp_path / "liar.edf.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(OversizedFileError, match=r"header announces Dim_1 x Dim_2"):
        read_edf(path)


def test_a_plain_file_over_the_limit_is_not_read(tmp_path: Path) -> None:
    from xsvs_bluesky.errors import OversizedFileError
    from xsvs_bluesky.options import Limits

    path = write_edf(tmp_path / "big.edf", np.zeros((64, 64), np.uint16))
    with pytest.raises(OversizedFileError, match="the file has 8"):
        read_edf(path, limits=Limits(max_frame_bytes=4096))
    assert read_edf(path, limits=Limits(max_frame_bytes=9000)).data.shape == (64, 64)


def test_the_limit_is_on_the_inflated_size(tmp_path: Path) -> None:
    from xsvs_bluesky.errors import OversizedFileError
    from xsvs_bluesky.options import Limits

    frame = np.zeros((64, 64), np.uint16)
    path = write_edf(tmp_path / "zeros.edf", frame, gz=True)
    inflated = len(gzip.decompress(path.read_bytes()))
    assert path.stat().st_size < 1000 < inflated
    assert read_edf(path, limits=Limits(max_frame_bytes=inflated)).data.shape == (
        64,
        64,
    )
    with pytest.raises(OversizedFileError):
        read_edf(path, limits=Limits(max_frame_bytes=inflated - 1))
