"""Tests of xsvs_bluesky.core.geometry: q maps, partitions, pixel groups, masks."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest

from xsvs_bluesky.core.geometry import (
    Geometry,
    MaskPolarityWarning,
    PartitionOverlapWarning,
    Partitions,
    PixelGroups,
    check_mask_polarity,
    combine_masks,
    partition_centers,
)
from xsvs_bluesky.errors import GeometryError, XSVSError

# wavelength 2 pi A makes 4 pi / lambda = 2; pixel 0.1 mm at 500 mm: 1 px = 2e-4 rad
HAND = {"wavelength": 2 * math.pi, "distance": 500.0, "pixel_size": 0.1}
# r = 5 px -> 0.5 mm / 500 mm = 1e-3; q = 2 sin(arctan(1e-3) / 2)
#   arctan(1e-3) = 1e-3 - 1e-9/3, sin(y) = y - y^3/6  ->  q = 9.99999625000e-4
Q_5PX = 0.0009999996250002422
# r = sqrt(13) px -> q = 2 sin(arctan(sqrt(13) * 2e-4) / 2)
Q_SQRT13PX = 0.0007211101144763454


def hand_geometry(one_based: bool = True) -> Geometry:
    # 5 rows x 8 columns, beam at column 2, row 1
    return Geometry(
        **HAND, center_x=2.0, center_y=1.0, shape=(5, 8), one_based=one_based
    )


# ----------------------------------------------------------------------------- q map


def test_q_map_one_based_hand_values_non_square():
    q = hand_geometry().q_map()
    assert q.shape == (5, 8)
    assert q.dtype == np.float64
    # 1-based: pixel (i, j) at (i + 1 - 1, j + 1 - 2) px -> beam on pixel (0, 1)
    assert q[0, 1] == 0.0
    assert np.unravel_index(np.argmin(q), q.shape) == (0, 1)
    # (i, j) = (3, 5): dy = 3, dx = 4 -> r = 5 px
    assert q[3, 5] == pytest.approx(Q_5PX, rel=1e-13)
    # (i, j) = (4, 4): dy = 4, dx = 3 -> r = 5 px as well (rows vs columns)
    assert q[4, 4] == pytest.approx(Q_5PX, rel=1e-13)
    # (i, j) = (2, 4): dy = 2, dx = 3 -> sqrt(13) px
    assert q[2, 4] == pytest.approx(Q_SQRT13PX, rel=1e-13)


def test_q_map_zero_based_hand_values():
    q = hand_geometry(one_based=False).q_map()
    # 0-based: pixel (i, j) at (i - 1, j - 2) px -> beam on pixel (1, 2)
    assert q[1, 2] == 0.0
    assert q[4, 6] == pytest.approx(Q_5PX, rel=1e-13)  # dy = 3, dx = 4
    assert q[3, 5] == pytest.approx(Q_SQRT13PX, rel=1e-13)  # dy = 2, dx = 3


def test_conventions_differ_by_exactly_one_pixel():
    one = Geometry(1.53, 2140.0, 0.055, 125.01, 118.31, (256, 200))
    zero = Geometry(1.53, 2140.0, 0.055, 124.01, 117.31, (256, 200), one_based=False)
    np.testing.assert_allclose(one.q_map(), zero.q_map(), rtol=1e-13, atol=0)


def test_pixel_offsets_follow_rows_and_columns():
    dy, dx = hand_geometry().pixel_offsets()
    assert dy.shape == (5, 1) and dx.shape == (1, 8)
    np.testing.assert_array_equal(dy[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(dx[0], [-1, 0, 1, 2, 3, 4, 5, 6])


def test_q_map_large_angle_formula():
    # 2 theta = arctan(r) exactly, not the small angle approximation
    g = Geometry(1.0, 10.0, 1.0, 1.0, 1.0, (1, 11))  # last pixel: r = 10 mm
    q = g.q_map()[0, -1]
    assert q == pytest.approx(4 * math.pi * math.sin(math.atan(1.0) / 2), rel=1e-14)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wavelength", 0.0),
        ("wavelength", -1.53),
        ("distance", math.nan),
        ("distance", math.inf),
        ("pixel_size", "0.055"),
        ("pixel_size", True),
        ("center_x", math.nan),
        ("center_y", None),
    ],
)
def test_geometry_validation_names_bad_value(field, value):
    kwargs: dict[str, Any] = {
        "wavelength": 1.53,
        "distance": 2140.0,
        "pixel_size": 0.055,
        "center_x": 125.0,
        "center_y": 118.0,
        "shape": (256, 256),
    }
    kwargs[field] = value
    with pytest.raises(GeometryError, match=field) as info:
        Geometry(**kwargs)
    assert repr(value) in str(info.value)
    assert "finite" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, XSVSError)


@pytest.mark.parametrize("shape", [(256,), (256, 256, 1), (0, 5), (5, -1), (2.5, 3), 7])
def test_geometry_shape_validation(shape):
    with pytest.raises(GeometryError, match="two positive integers"):
        Geometry(1.53, 2140.0, 0.055, 1.0, 1.0, shape)


def test_geometry_one_based_must_be_bool():
    with pytest.raises(GeometryError, match="one_based"):
        Geometry(1.53, 2140.0, 0.055, 1.0, 1.0, (4, 4), one_based="yes")  # type: ignore[arg-type]


def test_geometry_normalises_types_and_is_frozen():
    # An array shape on purpose: the constructor normalises it to ints.
    g = Geometry(1, 2140, 0.055, 125, 118, np.array([256, 128]))  # type: ignore[arg-type]
    assert g.shape == (256, 128) and all(type(n) is int for n in g.shape)
    assert type(g.wavelength) is float and g.one_based is True
    with pytest.raises(AttributeError):
        g.center_x = 3.0  # type: ignore[misc]


def test_with_center_and_dict_round_trip():
    g = Geometry(1.53, 2140.0, 0.055, 125.01, 118.31, (256, 200), one_based=False)
    moved = g.with_center(120.5, 100.25)
    assert (moved.center_x, moved.center_y) == (120.5, 100.25)
    assert moved.one_based is False and moved.shape == (256, 200)
    assert (g.center_x, g.center_y) == (125.01, 118.31)
    d = json.loads(json.dumps(moved.to_dict()))
    assert d["shape"] == [256, 200]
    assert Geometry.from_dict(d) == moved


def test_from_dict_errors_name_keys():
    d = Geometry(1.53, 2140.0, 0.055, 1.0, 1.0, (4, 4)).to_dict()
    del d["distance"]
    with pytest.raises(GeometryError, match="distance"):
        Geometry.from_dict(d)
    d = Geometry(1.53, 2140.0, 0.055, 1.0, 1.0, (4, 4)).to_dict()
    d["cenx"] = 3
    with pytest.raises(GeometryError, match="cenx"):
        Geometry.from_dict(d)
    d = Geometry(1.53, 2140.0, 0.055, 1.0, 1.0, (4, 4)).to_dict()
    del d["one_based"]
    assert Geometry.from_dict(d).one_based is True


# ----------------------------------------------------------------------- centres


def test_partition_centers_legacy_example_has_nine():
    c = partition_centers(0.002, 0.010, 0.001)
    assert c.size == 9
    np.testing.assert_allclose(c, 0.002 + 0.001 * np.arange(9), rtol=0, atol=1e-18)
    assert c[-1] == pytest.approx(0.010, rel=1e-12)


def test_partition_centers_float_end_point():
    # numpy.arange(0.1, 0.3 + 0.1, 0.1) has 4 elements; we want 3
    assert np.arange(0.1, 0.3 + 0.1, 0.1).size == 4
    np.testing.assert_allclose(partition_centers(0.1, 0.3, 0.1), [0.1, 0.2, 0.3])
    # 0.1 + 0.2 != 0.3 in floats; still 3 centres
    assert partition_centers(0.1, 0.1 + 0.2, 0.1).size == 3
    assert partition_centers(0.0, 0.7, 0.1).size == 8
    assert partition_centers(0.005, 0.005, 0.001).tolist() == [0.005]


@pytest.mark.parametrize(
    ("q1", "q2", "qs", "match"),
    [
        (0.01, 0.002, 0.001, "q2"),
        (0.002, 0.01, 0.0, "qs"),
        (0.002, 0.01, -0.001, "qs"),
        (math.nan, 0.01, 0.001, "q1"),
        (0.002, "x", 0.001, "q2"),
    ],
)
def test_partition_centers_errors(q1, q2, qs, match):
    with pytest.raises(GeometryError, match=match):
        partition_centers(q1, q2, qs)


# -------------------------------------------------------------------- partitions


def test_partition_edges_are_inclusive_and_masks_exclude():
    # binary-exact values: centres 0.25, 0.75, half-width 0.125
    q = np.array(
        [
            [0.125, 0.375, 0.3750001, 0.1249999],
            [0.625, 0.875, 0.8750001, 0.25],
            [0.5, 0.75, 0.75, 0.0],
        ]
    )
    mask = np.zeros(q.shape, dtype=bool)
    mask[2, 2] = True
    p = Partitions.from_centers(q, [0.25, 0.75], 0.125, mask=mask)
    assert len(p) == 2
    assert p.pixels[0].tolist() == [0, 1, 7]  # 0.125, 0.375, 0.25
    assert p.pixels[1].tolist() == [4, 5, 9]  # 0.625, 0.875, 0.75 (10 masked)
    assert p.n_pixels.tolist() == [3, 3]
    assert p.half_width == 0.125 and p.shape == (3, 4)
    assert not p.overlapping
    labels = p.label_image()
    assert labels.tolist() == [[0, 0, -1, -1], [1, 1, -1, 0], [-1, 1, -1, -1]]


def test_pixel_exactly_on_computed_upper_edge_is_in():
    centers = partition_centers(0.002, 0.010, 0.001)
    dq = 4e-4
    q = np.array([[centers[3] + dq, centers[3] - dq, np.nextafter(centers[3] + dq, 1)]])
    p = Partitions.from_range(q, 0.002, 0.010, 0.001, dq)
    assert p.pixels[3].tolist() == [0, 1]
    assert p.n_pixels.sum() == 2


def test_partition_pixels_sorted_intp_read_only():
    g = Geometry(1.53, 2140.0, 0.055, 60.3, 40.7, (96, 128))
    p = Partitions.from_range(g.q_map(), 0.002, 0.006, 0.001, 4e-4)
    q = g.q_map().ravel()
    for j, pix in enumerate(p.pixels):
        assert pix.dtype == np.intp
        assert np.all(np.diff(pix) > 0)
        assert not pix.flags.writeable
        expected = np.flatnonzero(np.abs(q - p.centers[j]) <= 4e-4)
        np.testing.assert_array_equal(pix, expected)


def test_mask_shape_mismatch_and_bad_half_width():
    q = np.zeros((4, 5))
    with pytest.raises(GeometryError, match=r"\(5, 4\).*\(4, 5\)"):
        Partitions.from_centers(q, [0.0], 0.1, mask=np.zeros((5, 4)))
    with pytest.raises(GeometryError, match="dq"):
        Partitions.from_centers(q, [0.0], 0.0)
    with pytest.raises(GeometryError, match="2-d"):
        Partitions.from_centers(np.zeros(5), [0.0], 0.1)


def test_overlapping_partitions_warn_and_share_pixels():
    g = Geometry(1.53, 2140.0, 0.055, 60.3, 40.7, (96, 128))
    q = g.q_map()
    with pytest.warns(PartitionOverlapWarning, match="overlap"):
        p = Partitions.from_range(q, 0.002, 0.006, 0.001, 6e-4)
    assert p.overlapping
    shared = np.intersect1d(p.pixels[0], p.pixels[1])
    assert shared.size > 0
    band = np.abs(q.ravel()[shared] - 0.0025) <= 1e-4 + 1e-15
    assert band.all()
    # the label image gives shared pixels to the lower index
    assert np.all(p.label_image().ravel()[shared] == 0)
    # 2 dq == qs is not an overlap (touching edges only)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        touching = Partitions.from_range(q, 0.002, 0.006, 0.001, 5e-4)
    assert not touching.overlapping


def test_as_groups_and_to_dict():
    g = Geometry(1.53, 2140.0, 0.055, 60.3, 40.7, (96, 128))
    p = Partitions.from_range(g.q_map(), 0.002, 0.006, 0.001, 4e-4)
    groups = p.as_groups()
    assert isinstance(groups, PixelGroups)
    assert len(groups) == len(p) == groups.n_partitions == 5
    assert groups.parent.tolist() == [0, 1, 2, 3, 4]
    assert groups.weight.tolist() == [1.0] * 5
    assert groups.n_pixels.tolist() == p.n_pixels.tolist()
    d = json.loads(json.dumps(p.to_dict()))
    assert d["n_pixels"] == p.n_pixels.tolist()
    assert d["half_width"] == 4e-4 and len(d["centers"]) == 5


def test_split_by_quantile_groups_partition_each_ring():
    g = Geometry(1.53, 2140.0, 0.055, 60.3, 40.7, (96, 128))
    p = Partitions.from_range(g.q_map(), 0.002, 0.006, 0.001, 4e-4)
    rng = np.random.default_rng(7)
    eff = rng.normal(1.0, 0.1, size=g.shape)
    groups = p.split_by(eff, n_groups=8)
    assert groups.n_partitions == 5 and groups.shape == g.shape
    flat = eff.ravel()
    for j, pix in enumerate(p.pixels):
        mine = [k for k in range(len(groups)) if groups.parent[k] == j]
        assert len(mine) == 8
        joined = np.concatenate([groups.pixels[k] for k in mine])
        # disjoint and covering the ring
        np.testing.assert_array_equal(np.sort(joined), pix)
        sizes = groups.n_pixels[mine]
        assert sizes.max() - sizes.min() <= 2  # quantile groups: equal counts
        expected = [flat[groups.pixels[k]].mean() / flat[pix].mean() for k in mine]
        np.testing.assert_allclose(groups.weight[mine], expected, rtol=1e-12)
        assert np.all(np.diff(groups.weight[mine]) > 0)
        # pixel-weighted mean of the weights is 1
        assert np.dot(sizes, groups.weight[mine]) / sizes.sum() == pytest.approx(1.0)
        for k in mine:
            assert np.all(np.diff(groups.pixels[k]) > 0)
        # groups are ordered by value: no overlap of value ranges
        highs = [flat[groups.pixels[k]].max() for k in mine[:-1]]
        lows = [flat[groups.pixels[k]].min() for k in mine[1:]]
        assert np.all(np.array(highs) < np.array(lows))


def test_split_by_ties_constant_and_empty_partitions():
    q = np.array([[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5], [0.9, 0.9, 0.9, 0.9]])
    values = np.array([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0], [0, 0, 0, 0]])
    # centres 0.1, 0.3 (empty), 0.5
    p = Partitions.from_centers(q, [0.1, 0.3, 0.5], 0.05)
    groups = p.split_by(values, n_groups=16)
    assert groups.n_partitions == 3
    assert groups.parent.tolist() == [0, 0, 2]  # ties merge, empty dropped
    assert [x.tolist() for x in groups.pixels] == [[0, 1], [2, 3], [4, 5, 6, 7]]
    np.testing.assert_allclose(groups.weight, [0.5, 1.5, 1.0])


def test_split_by_errors():
    q = np.full((2, 2), 0.1)
    p = Partitions.from_centers(q, [0.1], 0.05)
    with pytest.raises(GeometryError, match="shape"):
        p.split_by(np.ones((3, 2)))
    with pytest.raises(GeometryError, match="n_groups"):
        p.split_by(np.ones((2, 2)), n_groups=0)
    with pytest.raises(GeometryError, match="finite"):
        p.split_by(np.array([[1.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(GeometryError, match="positive mean"):
        p.split_by(np.array([[-1.0, -2.0], [1.0, -1.0]]))


def test_pixel_groups_validation():
    with pytest.raises(GeometryError, match="parent"):
        PixelGroups((np.array([0, 1]),), np.array([3]), np.array([1.0]), (2, 2), 2)
    with pytest.raises(GeometryError, match="increasing"):
        PixelGroups((np.array([1, 0]),), np.array([0]), np.array([1.0]), (2, 2), 1)
    with pytest.raises(GeometryError, match="weights"):
        PixelGroups((np.array([0, 1]),), np.array([0]), np.array([]), (2, 2), 1)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ([3, 2], "decreasing"),
        ([1, 1], "repeated"),
        ([-1, 2], "negative"),
        ([2, 9], "past the detector"),
    ],
)
def test_pixel_groups_name_the_first_bad_group(bad: list[int], why: str):
    # groups are checked together: empty groups around, a good one after,
    # and a pair across two groups that would be bad inside one (7 then 0)
    good = [np.array([0, 7]), np.array([], np.intp), np.array([0, 1])]
    pixels = (*good, np.array(bad), np.array([4, 5]), np.array([], np.intp))
    with pytest.raises(GeometryError, match="^group 3: "):
        PixelGroups(pixels, np.zeros(6, int), np.ones(6), (3, 3), 1)
    groups = PixelGroups(
        (*good, np.array([], np.intp)), np.zeros(4, int), np.ones(4), (3, 3), 1
    )
    assert [p.tolist() for p in groups.pixels] == [[0, 7], [], [0, 1], []], why
    assert all(p.dtype == np.intp and not p.flags.writeable for p in groups.pixels)


# ------------------------------------------------------------------------- masks


def test_combine_masks_union_legacy_values():
    a = np.array([[0, 1, 0], [0, 0, 0]], dtype=np.int8)
    b = np.array([[0, 0, 2], [0, 0, 0]], dtype=np.int16)
    c = np.array([[False, False, False], [True, False, False]])
    out = combine_masks(a, None, b, c)
    assert out.dtype == bool
    assert out.tolist() == [[False, True, True], [True, False, False]]
    assert a.tolist() == [[0, 1, 0], [0, 0, 0]]  # inputs untouched
    out[0, 0] = True
    assert not c[0, 0]


def test_combine_masks_shapes():
    with pytest.raises(GeometryError, match=r"\(3, 2\).*\(2, 3\)"):
        combine_masks(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(GeometryError, match=r"\(2, 3\).*\(4, 4\)"):
        combine_masks(np.zeros((2, 3)), shape=(4, 4))
    assert combine_masks(shape=(2, 3)).tolist() == [[False] * 3] * 2
    assert combine_masks(None, shape=(1, 2)).shape == (1, 2)
    with pytest.raises(GeometryError, match="at least one"):
        combine_masks()
    with pytest.raises(GeometryError, match="2-d"):
        combine_masks(np.zeros(4))


def test_check_mask_polarity():
    mask = np.zeros((10, 10), dtype=np.int8)
    mask[:6] = 1
    with pytest.warns(MaskPolarityWarning, match=r"'flat.edf'.*60\.0%.*opposite"):
        fraction = check_mask_polarity(mask, "flat.edf")
    assert fraction == pytest.approx(0.6)
    assert issubclass(MaskPolarityWarning, UserWarning)
    half = np.zeros((10, 10), dtype=bool)
    half[:5] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_mask_polarity(half, "half") == 0.5


def test_partition_count_is_checked_before_the_centres_are_made():
    from xsvs_bluesky.errors import LimitError
    from xsvs_bluesky.options import Limits

    with pytest.raises(LimitError, match="1e\\+09 q partitions"):
        partition_centers(0.002, 1e6, 0.001)
    assert partition_centers(0.0, 9.0, 1.0, limits=Limits(max_partitions=10)).size == 10
    with pytest.raises(LimitError, match="11 q partitions"):
        partition_centers(0.0, 10.0, 1.0, limits=Limits(max_partitions=10))
    q = np.linspace(0, 1, 16).reshape(4, 4)
    with pytest.raises(LimitError, match="3 centres"):
        Partitions.from_centers(q, [0.1, 0.5, 0.9], 0.01, limits=Limits(2))
