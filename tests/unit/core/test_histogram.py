from __future__ import annotations

import numpy as np
import pytest

from xsvs_bluesky.core.geometry import (
    PartitionOverlapWarning,
    Partitions,
)
from xsvs_bluesky.core.histogram import (
    Backend,
    FrameBinner,
    HistogramAccumulator,
    bin_frames,
)
from xsvs_bluesky.core.synthetic import speckle_frames, static_speckle_frames
from xsvs_bluesky.errors import GeometryError

SHAPE = (48, 56)
BACKENDS: list[Backend] = ["numba", "numpy"]


def _radius() -> np.ndarray:
    rows, cols = np.indices(SHAPE)
    return np.hypot(rows - 20.3, cols - 25.6)


def _rings(overlap: bool = False) -> Partitions:
    centers = np.arange(4.0, 24.0, 4.0)
    if overlap:
        with pytest.warns(PartitionOverlapWarning):
            return Partitions.from_centers(_radius(), centers, dq=3.0)
    return Partitions.from_centers(_radius(), centers, dq=1.9)


def _reference(frames: np.ndarray, pixels, n_bins: int):
    """Naive per-frame, per-group np.bincount."""
    hist = np.array(
        [[np.bincount(f.ravel()[p], minlength=n_bins) for p in pixels] for f in frames],
        dtype=np.int64,
    )
    return hist  # [n_frames, G, K]


def _assert_same(a: HistogramAccumulator, b: HistogramAccumulator) -> None:
    assert a.n_bins == b.n_bins and a.n_frames == b.n_frames
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.counts_sq, b.counts_sq)
    np.testing.assert_array_equal(a.frame_sums, b.frame_sums)
    np.testing.assert_array_equal(a.trace, b.trace)
    if a.keep_frame_histograms and b.keep_frame_histograms:
        np.testing.assert_array_equal(a.frame_counts, b.frame_counts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_counts_squares_and_trace_vs_naive_reference(backend: Backend) -> None:
    parts = _rings()
    frames = speckle_frames(30, SHAPE, 2.5, 0.4, rng=11)
    acc = HistogramAccumulator(parts, n_bins=64, backend=backend)
    acc.update(frames)
    ref = _reference(frames, parts.pixels, 64)
    assert acc.backend == backend and acc.n_frames == 30 and acc.n_bins == 64
    np.testing.assert_array_equal(acc.n_pixels, parts.n_pixels)
    np.testing.assert_array_equal(acc.counts, ref.sum(axis=0))
    np.testing.assert_array_equal(acc.counts_sq, (ref**2).sum(axis=0))
    means = [[f.ravel()[p].mean() for p in parts.pixels] for f in frames]
    np.testing.assert_array_equal(acc.trace, np.array(means))
    assert acc.trace.shape == (30, len(parts))
    total = np.array([frames.reshape(30, -1)[:, p].mean() for p in parts.pixels])
    np.testing.assert_allclose(acc.kbar, total, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])  # both numba kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_overflow_grows_bins_and_keeps_every_count(backend: Backend, dtype) -> None:
    parts = _rings()
    frames = speckle_frames(12, SHAPE, 1.0, 0.2, rng=3, dtype=dtype)
    frames[4].ravel()[parts.pixels[2][7]] = 37  # forces 2 -> 64 bins mid-stack
    frames[9].ravel()[parts.pixels[0][0]] = 100  # and 64 -> 128 later
    acc = HistogramAccumulator(
        parts, n_bins=2, backend=backend, keep_frame_histograms=True
    )
    acc.update(frames)
    assert acc.n_bins == 128
    ref = _reference(frames, parts.pixels, 128)
    np.testing.assert_array_equal(acc.counts, ref.sum(axis=0))
    np.testing.assert_array_equal(acc.counts_sq, (ref**2).sum(axis=0))
    np.testing.assert_array_equal(acc.frame_counts, ref)
    np.testing.assert_array_equal(acc.counts.sum(axis=1), 12 * parts.n_pixels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_partitions_count_shared_pixels_in_both(backend: Backend) -> None:
    parts = _rings(overlap=True)
    shared = np.intersect1d(parts.pixels[0], parts.pixels[1])
    assert shared.size > 0
    frames = speckle_frames(8, SHAPE, 3.0, 0.5, rng=5)
    acc = HistogramAccumulator(parts, n_bins=8, backend=backend)
    acc.update(frames)
    ref = _reference(frames, parts.pixels, acc.n_bins)
    np.testing.assert_array_equal(acc.counts, ref.sum(axis=0))
    np.testing.assert_array_equal(acc.counts.sum(axis=1), 8 * parts.n_pixels)


def test_numba_and_numpy_backends_are_bit_identical() -> None:
    parts = _rings(overlap=True)
    flat = np.random.default_rng(1).gamma(4.0, 0.25, size=SHAPE)
    groups = parts.split_by(flat, n_groups=4)  # scattered pixels, not rings
    frames = speckle_frames(40, SHAPE, 4.0, 0.3, efficiency=flat, rng=2)
    frames[17].ravel()[groups.pixels[2][5]] = 500  # growth mid-stack
    accs = [
        HistogramAccumulator(groups, n_bins=4, backend=b, keep_frame_histograms=True)
        for b in BACKENDS
    ]
    for acc in accs:
        acc.update(frames[:25])
        for frame in frames[25:]:
            acc.update(frame)
    _assert_same(*accs)
    assert accs[0].n_bins == 512
    ref = _reference(frames, groups.pixels, accs[0].n_bins)
    np.testing.assert_array_equal(accs[0].frame_counts, ref)
    mean, std = accs[0].probability()
    mean_b, std_b = accs[1].probability()
    np.testing.assert_array_equal(mean, mean_b)
    np.testing.assert_array_equal(std, std_b)


@pytest.mark.parametrize(
    "dtype",
    [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_integer_dtype_gives_the_same_histograms(dtype, backend: Backend) -> None:
    parts = _rings()
    frames = speckle_frames(6, SHAPE, 2.0, 0.5, rng=7, dtype=np.uint16)
    frames = np.minimum(frames, 120)
    expected = _reference(frames, parts.pixels, 128).sum(axis=0)
    acc = HistogramAccumulator(parts, n_bins=16, backend=backend)
    acc.update(frames.astype(dtype))
    np.testing.assert_array_equal(acc.counts[:, :128], expected[:, : acc.n_bins])
    assert acc.counts.sum() == 6 * parts.n_pixels.sum()


def test_bool_frames_are_counts_zero_and_one() -> None:
    parts = _rings()
    frames = speckle_frames(3, SHAPE, 0.3, 0.5, rng=8) > 0
    acc = HistogramAccumulator(parts, n_bins=2)
    acc.update(frames)
    np.testing.assert_array_equal(
        acc.counts, _reference(frames, parts.pixels, 2).sum(0)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_count_raises_and_leaves_accumulator_unchanged(
    backend: Backend,
) -> None:
    parts = _rings()
    frames = speckle_frames(6, SHAPE, 2.0, 0.5, rng=9, dtype=np.int32)
    acc = HistogramAccumulator(
        parts, n_bins=4, backend=backend, keep_frame_histograms=True
    )
    acc.update(frames[:2])
    before = (acc.n_bins, acc.counts, acc.counts_sq, acc.trace, acc.frame_counts)
    bad = frames[2:].copy()
    bad[0] = 200  # would grow n_bins first
    bad[2].ravel()[parts.pixels[1][3]] = -1
    with pytest.raises(ValueError, match="negative count"):
        acc.update(bad)
    assert acc.n_frames == 2 and acc.n_bins == before[0]
    for now, then in zip(
        (acc.counts, acc.counts_sq, acc.trace, acc.frame_counts),
        before[1:],
        strict=True,
    ):
        np.testing.assert_array_equal(now, then)
    acc.update(frames[2:])  # still usable, and still exact
    ref = _reference(frames, parts.pixels, acc.n_bins)
    np.testing.assert_array_equal(acc.counts, ref.sum(axis=0))


def test_negative_value_outside_the_groups_is_ignored() -> None:
    parts = _rings()
    frame = np.ones(SHAPE, dtype=np.int32)
    frame[0, 0] = -5  # corner pixel far from every ring
    assert all(0 not in p for p in parts.pixels)
    acc = HistogramAccumulator(parts, n_bins=2)
    acc.update(frame)
    np.testing.assert_array_equal(acc.counts[:, 1], parts.n_pixels)


def test_count_beyond_max_bins_is_refused() -> None:
    parts = _rings()
    frame = np.zeros(SHAPE, dtype=np.uint32)
    frame.ravel()[parts.pixels[0][0]] = 2**32 - 1  # e.g. an unmasked gap pixel
    acc = HistogramAccumulator(parts, max_bins=1024)
    with pytest.raises(ValueError, match="max_bins=1024"):
        acc.update(frame)
    assert acc.n_frames == 0 and acc.n_bins == 32


def test_bad_input_errors() -> None:
    parts = _rings()
    acc = HistogramAccumulator(parts)
    with pytest.raises(GeometryError, match=r"\(48, 56\)"):
        acc.update(np.zeros((56, 48), dtype=np.uint16))
    with pytest.raises(ValueError, match="integer"):
        acc.update(np.zeros(SHAPE))
    with pytest.raises(ValueError, match="backend"):
        HistogramAccumulator(parts, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(GeometryError, match="distinct"):
        HistogramAccumulator(_Duck((np.array([3, 3]),), SHAPE))
    with pytest.raises(ValueError, match="no frame"):
        acc.probability()


class _Duck:
    def __init__(self, pixels, shape):
        self.pixels = pixels
        self.shape = shape


def test_duck_typed_groups_and_empty_group_give_nan_without_warning() -> None:
    groups = _Duck((np.array([0, 1, 2]), np.array([], dtype=np.intp)), (2, 3))
    acc = HistogramAccumulator(groups, n_bins=4)
    acc.update(np.array([[1, 2, 3], [0, 0, 0]], dtype=np.uint8))
    assert acc.kbar[0] == 2.0 and np.isnan(acc.kbar[1])
    mean, std = acc.probability()
    np.testing.assert_array_equal(mean[0], [0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_array_equal(std[0], 0.0)
    assert np.isnan(mean[1]).all() and np.isnan(acc.trace[0, 1])


@pytest.mark.parametrize("n_frames", [1, 2, 3])  # the one- and two-frame fills
def test_groups_larger_than_a_16_bit_bin_count_exactly(n_frames: int) -> None:
    # 400 x 400 all-zero frames: one bin of the big group gets 160000 counts
    # per frame, ~80000 in each copy of the kernel's scratch (past 16 bits)
    shape = (400, 400)
    size = shape[0] * shape[1]
    groups = _Duck((np.arange(size), np.arange(0, size, 7)), shape)
    frames = np.zeros((n_frames, *shape), dtype=np.uint16)
    frames[-1, 0, :3] = [2, 1, 1]
    acc = HistogramAccumulator(groups, n_bins=4, backend="numba")
    acc.update(frames)
    ref = _reference(frames, groups.pixels, 4)
    assert ref[0, 0, 0] >= 159997
    np.testing.assert_array_equal(acc.counts, ref.sum(axis=0))
    np.testing.assert_array_equal(acc.counts_sq, (ref**2).sum(axis=0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_equals_one_accumulator_over_all_frames(backend: Backend) -> None:
    parts = _rings(overlap=True)
    frames = speckle_frames(20, SHAPE, 1.5, 0.3, rng=4)
    frames[15, 20, 30] = 300  # only the second part grows its bins
    whole, first, second = (
        HistogramAccumulator(
            parts, n_bins=8, backend=backend, keep_frame_histograms=True
        )
        for _ in range(3)
    )
    whole.update(frames)
    first.update(frames[:11])
    second.update(frames[11:])
    assert first.n_bins < second.n_bins
    merged = first.merge(second)
    _assert_same(merged, whole)
    merged.update(frames[:3])  # the merged accumulator keeps working
    whole.update(frames[:3])
    _assert_same(merged, whole)


def test_merge_refuses_other_groups() -> None:
    a = HistogramAccumulator(_rings())
    b = HistogramAccumulator(_rings(overlap=True))
    with pytest.raises(ValueError, match="different groups"):
        a.merge(b)


def test_probability_mean_and_per_frame_std() -> None:
    parts = _rings()
    frames = speckle_frames(25, SHAPE, 1.2, 0.5, rng=6)
    acc = HistogramAccumulator(parts, n_bins=32, keep_frame_histograms=True)
    acc.update(frames)
    mean, std = acc.probability()
    per_frame = acc.frame_counts / parts.n_pixels[None, :, None]
    np.testing.assert_allclose(mean, per_frame.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(std, per_frame.std(axis=0), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-12)
    k = np.arange(acc.n_bins)
    np.testing.assert_allclose((mean * k).sum(axis=1), acc.kbar, rtol=1e-12)


# ------------------------------------------------------------------ parents
def _efficiency_groups(overlap: bool = False):
    parts = _rings(overlap=overlap)
    flat = np.random.default_rng(12).gamma(4.0, 0.25, size=SHAPE)
    return parts, parts.split_by(flat, n_groups=4), flat


def _assert_parent_level(acc: HistogramAccumulator, ref: HistogramAccumulator):
    """Parent level of ``acc`` == a separate accumulator over the parents."""
    assert acc.parents is not None
    _assert_same(acc.parents, ref)
    np.testing.assert_array_equal(acc.parents.n_pixels, ref.n_pixels)
    np.testing.assert_array_equal(acc.parents.kbar, ref.kbar)
    for got, want in zip(acc.parents.probability(), ref.probability(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("dtype", [np.uint16, np.int64])  # both numba kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_parent_level_equals_a_separate_accumulator_over_the_parents(
    backend: Backend, dtype, overlap: bool
) -> None:
    parts, groups, flat = _efficiency_groups(overlap)
    frames = speckle_frames(33, SHAPE, 2.5, 0.3, efficiency=flat, rng=13)
    frames = frames.astype(dtype)
    frames[9].ravel()[groups.pixels[3][2]] = 300  # growth mid-stack: 4 -> 512
    acc = HistogramAccumulator(
        groups, n_bins=4, backend=backend, keep_frame_histograms=True, parents=parts
    )
    acc.update(frames[:7])
    acc.update(frames[7:])
    # the numpy backend without parents is the reference for both levels
    ref = HistogramAccumulator(
        parts, n_bins=4, backend="numpy", keep_frame_histograms=True
    )
    ref.update(frames)
    own = HistogramAccumulator(
        groups, n_bins=4, backend="numpy", keep_frame_histograms=True
    )
    own.update(frames)
    assert acc.parents is not None
    assert acc.n_bins == acc.parents.n_bins == ref.n_bins == 512
    _assert_parent_level(acc, ref)
    _assert_same(acc, own)  # the group level is unchanged by the parents
    # per-frame std needs the per-frame parent histograms, not group sums
    assert not np.array_equal(
        ref.counts_sq, _sum_by_parent(own.counts_sq, groups.parent, len(parts))
    )
    np.testing.assert_array_equal(
        ref.counts, _sum_by_parent(own.counts, groups.parent, len(parts))
    )


def _sum_by_parent(values: np.ndarray, parent: np.ndarray, n: int) -> np.ndarray:
    return np.array([values[parent == j].sum(axis=0) for j in range(n)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_parents_merge_spawn_and_failed_update(backend: Backend) -> None:
    parts, groups, flat = _efficiency_groups()
    frames = speckle_frames(20, SHAPE, 1.5, 0.3, efficiency=flat, rng=14)
    frames = frames.astype(np.int32)
    first = HistogramAccumulator(groups, n_bins=8, backend=backend, parents=parts)
    second = first.spawn()
    assert second.parents is not None
    assert second.n_frames == 0 and second.parents is not first.parents
    assert second.same_groups(first) and second.parents.same_groups(_parts_acc(parts))
    first.update(frames[:12])
    second.update(frames[12:])
    assert first.n_frames == 12 and second.n_frames == 8  # no shared state
    merged = first.merge(second)
    ref = _parts_acc(parts, backend)
    ref.update(frames)
    _assert_parent_level(merged, ref)
    # a refused frame leaves both levels as they were
    assert merged.parents is not None
    before = merged.parents.counts_sq, merged.counts_sq
    bad = frames[:3].copy()
    bad[1].ravel()[groups.pixels[0][0]] = -1
    with pytest.raises(ValueError, match="negative count"):
        merged.update(bad)
    assert merged.n_frames == merged.parents.n_frames == 20
    np.testing.assert_array_equal(merged.parents.counts_sq, before[0])
    np.testing.assert_array_equal(merged.counts_sq, before[1])
    with pytest.raises(RuntimeError, match="update that accumulator"):
        merged.parents.update(frames[0])
    with pytest.raises(ValueError, match="different parents"):
        merged.merge(HistogramAccumulator(groups, backend=backend))


def _parts_acc(parts: Partitions, backend: Backend = "numpy") -> HistogramAccumulator:
    return HistogramAccumulator(parts, n_bins=8, backend=backend)


def test_groups_that_do_not_tile_their_parents_are_refused() -> None:
    parts, groups, _ = _efficiency_groups()
    with pytest.raises(GeometryError, match="do not tile"):
        HistogramAccumulator(groups, parents=_rings(overlap=True))
    partial = type(
        groups
    )(
        pixels=groups.pixels[1:],  # a group of partition 0 left out
        parent=groups.parent[1:],
        weight=groups.weight[1:],
        shape=groups.shape,
        n_partitions=groups.n_partitions,
    )
    with pytest.raises(GeometryError, match="do not tile"):
        HistogramAccumulator(partial, parents=parts)
    with pytest.raises(GeometryError, match="parent indices"):
        HistogramAccumulator(_Duck(groups.pixels, SHAPE), parents=parts)


# ------------------------------------------------------------------ binning
def test_bin_frames_sums_non_overlapping_groups_and_drops_remainder() -> None:
    frames = speckle_frames(11, (5, 4), 3.0, 0.5, rng=1)
    out = bin_frames(frames, 3)
    assert out.shape == (3, 5, 4) and out.dtype == np.uint32
    for j in range(3):
        np.testing.assert_array_equal(out[j], frames[3 * j : 3 * j + 3].sum(axis=0))
    assert bin_frames(frames.astype(np.int32), 2).dtype == np.int64
    assert bin_frames(frames.astype(np.uint32), 2).dtype == np.int64
    assert bin_frames(frames, 20).shape == (0, 5, 4)
    with pytest.raises(ValueError, match="positive integer"):
        bin_frames(frames, 0)


def test_frame_binner_over_chunks_equals_bin_frames_at_once() -> None:
    frames = speckle_frames(23, (6, 7), 2.0, 0.5, rng=2)
    binner = FrameBinner(4)
    pieces = []
    for chunk in (frames[:3], frames[3:4], frames[4:13], frames[13]):
        pieces.append(binner.push(chunk))
    assert binner.pending == 2  # frames 12 and 13
    pieces.append(binner.push(frames[14:]))
    got = np.concatenate(pieces)
    expected = bin_frames(frames, 4)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    assert binner.pending == 3
    binner.reset()
    assert binner.pending == 0


def _moment_beta(x: np.ndarray, n_eff: int) -> tuple[float, float]:
    """beta = var/mean^2 - 1/mean and its delta-method standard error."""
    x = x.astype(np.float64).ravel()
    m = x.mean()
    d = x - m
    mu2, mu3, mu4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    beta = mu2 / m**2 - 1 / m
    g_m = -2 * mu2 / m**3 + 1 / m**2
    g_v = 1 / m**2
    var = g_m**2 * mu2 + g_v**2 * (mu4 - mu2**2) + 2 * g_m * g_v * mu3
    return beta, float(np.sqrt(var / n_eff))


@pytest.mark.parametrize("n", [2, 4])
def test_binning_independent_frames_divides_contrast_by_n(n: int) -> None:
    beta = 0.5
    frames = speckle_frames(48 * n, (64, 64), 2.0, beta, rng=21 + n)
    binned = bin_frames(frames, n)
    got, err = _moment_beta(binned, binned.size)
    assert abs(got - beta / n) < 5 * err, (got, beta / n, err)
    assert abs(got - beta) > 10 * err  # distinguishable from "kept beta"


def test_binning_static_speckle_keeps_contrast() -> None:
    beta = 0.3
    frames = static_speckle_frames(40, (96, 96), 1.0, beta, rng=5)
    binned = bin_frames(frames, 4)
    # frames share one intensity pattern: only the pixels are independent
    got, err = _moment_beta(binned, 96 * 96)
    assert abs(got - beta) < 5 * err, (got, beta, err)
    assert abs(got - beta / 4) > 10 * err


@pytest.mark.parametrize("dtype", [np.uint16, np.int64])  # both numba kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_whose_bits_reach_past_n_bins_are_still_in_range(
    backend: Backend, dtype
) -> None:
    # the kernels bound a frame's counts by their bitwise OR: 16 | 8 = 24 is
    # not below n_bins = 24 although every count is, so no growth may happen
    parts = _rings()
    frames = np.zeros((5,) + SHAPE, dtype=dtype)
    frames[0].ravel()[parts.pixels[0][:3]] = 16
    frames[0].ravel()[parts.pixels[0][3:5]] = 8  # next to the 16s
    frames[0].ravel()[parts.pixels[1][:2]] = 8
    frames[1].ravel()[parts.pixels[2][:1]] = 23
    frames[3].ravel()[parts.pixels[4][:4]] = 17
    frames[4].ravel()[parts.pixels[3][:2]] = 6
    acc = HistogramAccumulator(parts, n_bins=24, backend=backend)
    acc.update(frames[:4])  # two pairs
    acc.update(frames[4])  # a lone frame
    assert acc.n_bins == 24
    ref = _reference(frames, parts.pixels, 24)
    np.testing.assert_array_equal(acc.counts, ref.sum(axis=0))
    np.testing.assert_array_equal(acc.counts_sq, (ref**2).sum(axis=0))


# ----------------------------------------------------- partials (to_arrays)
def _blocks(n: int, rng: int) -> list[tuple[int, int]]:
    cuts = np.sort(np.random.default_rng(rng).choice(np.arange(1, n), 4, False))
    edges = [0, *cuts.tolist(), n]
    return list(zip(edges[:-1], edges[1:], strict=True))


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("with_parents", [False, True])
def test_absorbed_partials_of_blocks_equal_one_accumulator(
    keep: bool, with_parents: bool
) -> None:
    parts, groups, flat = _efficiency_groups()
    frames = speckle_frames(40, SHAPE, 2.0, 0.3, efficiency=flat, rng=21)
    frames[27, 20, 30] = 700  # a later block grows the bins

    def fresh() -> HistogramAccumulator:
        if with_parents:
            return HistogramAccumulator(
                groups, n_bins=8, parents=parts, keep_frame_histograms=keep
            )
        return HistogramAccumulator(parts, n_bins=8, keep_frame_histograms=keep)

    whole, merged = fresh(), fresh()
    whole.update(frames)
    for a, b in _blocks(len(frames), 3):
        part = fresh()  # e.g. in another process
        part.update(frames[a:b])
        arrays = part.to_arrays()
        assert all(v.dtype == np.int64 for v in arrays.values())
        assert ("parents_counts" in arrays) == with_parents
        assert ("frames" in arrays) == keep
        merged.absorb(arrays)
    _assert_same(merged, whole)
    if with_parents:
        assert whole.parents is not None
        _assert_parent_level(merged, whole.parents)
    merged.update(frames[:5])  # it keeps working
    whole.update(frames[:5])
    _assert_same(merged, whole)


def test_absorb_refuses_arrays_of_other_groups_and_stays_unchanged() -> None:
    parts, groups, _ = _efficiency_groups()
    frames = speckle_frames(6, SHAPE, 1.0, 0.3, rng=2)
    acc = HistogramAccumulator(parts)
    acc.update(frames)
    other = HistogramAccumulator(groups, parents=parts)
    other.update(frames)
    with pytest.raises(GeometryError, match="parents"):
        acc.absorb(other.to_arrays())
    wrong = {k: v for k, v in other.to_arrays().items() if "parents" not in k}
    with pytest.raises(GeometryError, match="groups"):
        acc.absorb(wrong)
    kept = HistogramAccumulator(parts, keep_frame_histograms=True)
    kept.update(frames)
    with pytest.raises(GeometryError, match="keep_frames"):
        acc.absorb(kept.to_arrays())
    floats = {k: v.astype(float) for k, v in acc.to_arrays().items()}
    with pytest.raises(GeometryError, match="int64"):
        acc.absorb(floats)
    assert acc.n_frames == 6
    assert other.parents is not None
    with pytest.raises(RuntimeError, match="parents"):
        other.parents.absorb(acc.to_arrays())
