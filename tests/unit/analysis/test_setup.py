"""AnalysisSetup.build: limits checked before allocating, sanity checks."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from xsvs_bluesky.analysis import AnalysisSetup
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.errors import GeometryError, LimitError
from xsvs_bluesky.options import AnalysisOptions, Limits

GEO = Geometry(1.53, 2140.0, 0.055, 32.5, 32.5, (64, 64))
PARTS = {"q1": 0.001, "q2": 0.003, "qs": 0.0005, "dq": 0.0002}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "spec, needle",
    [
        ({"q1": 0.002, "q2": 1e6, "qs": 0.001, "dq": 4e-4}, "1e+09 q partitions"),
        ({"q1": 0.002, "q2": 100, "qs": 0.001, "dq": 4e-4}, "99999 q partitions"),
        ({"q1": 0, "q2": 1e300, "qs": 1e-300, "dq": 4e-4}, "inf q partitions"),
        ({"centers": [0.001] * 2000, "dq": 1e-4}, "2000 centres"),
    ],
)
def test_too_many_partitions_refused_before_allocating(spec, needle):
    before = peak_rss_mb()
    with pytest.raises(LimitError, match="Limits.max_partitions") as info:
        AnalysisSetup.build(partitions=spec, geometry=GEO)
    assert needle in str(info.value)
    assert peak_rss_mb() - before < 50  # 1e9 centres alone would be 8 GB


def test_a_huge_detector_is_refused_before_the_q_map():
    huge = Geometry(1.53, 2140.0, 0.055, 32.5, 32.5, (10**6, 10**6))
    with pytest.raises(LimitError, match=r"\(1000000, 1000000\) = 1000000000000"):
        AnalysisSetup.build(partitions=PARTS, geometry=huge)


@pytest.mark.filterwarnings("ignore::xsvs_bluesky.analysis.EmptyPartitionWarning")
def test_limits_can_be_raised():
    many = {"q1": 0.001, "q2": 0.003, "qs": 0.00001, "dq": 0.000005}  # 201
    with pytest.raises(LimitError):
        AnalysisSetup.build(
            partitions=many,
            geometry=GEO,
            options=AnalysisOptions(limits=Limits(max_partitions=200)),
        )
    setup = AnalysisSetup.build(
        partitions=many,
        geometry=GEO,
        options=AnalysisOptions(limits=Limits(max_partitions=201)),
    )
    assert len(setup.partitions) == 201
    assert "limits" not in setup.description  # a bound, not a setting of results
    assert np.all(np.diff(setup.partitions.centers) > 0)


# -- sanity checks: garbage refused, never a silent table of NaN ----------------------
def test_a_beam_centre_far_outside_the_detector_is_refused():
    far = GEO.with_center(1e300, 32.5)
    with pytest.raises(GeometryError, match=r"center_x = 1e\+300 px is .* outside"):
        AnalysisSetup.build(partitions=PARTS, geometry=far)
    near = GEO.with_center(-200.0, 32.5)  # off the detector, but a real setup
    with pytest.raises(GeometryError, match="the unmasked pixels cover q = "):
        AnalysisSetup.build(partitions=PARTS, geometry=near)  # PARTS: no pixel


def test_masks_that_leave_no_pixel_are_refused_with_the_reason():
    everything = np.ones(GEO.shape, bool)
    with pytest.raises(GeometryError, match="masks exclude every pixel"):
        AnalysisSetup.build(partitions=PARTS, geometry=GEO, masks=[everything])


@pytest.mark.parametrize("with_flat", [False, True], ids=["no-flat", "flat"])
def test_some_empty_partitions_warn_and_are_flagged_no_data(with_flat):
    from xsvs_bluesky.analysis import EmptyPartitionWarning

    wide = {"q1": 0.001, "q2": 0.05, "qs": 0.001, "dq": 0.0004}  # past the corner
    # with a flat field, mle-intensity splits each partition by efficiency
    # quantiles: an empty partition has none (and no group)
    flat = np.random.default_rng(1).uniform(0.8, 1.2, GEO.shape) if with_flat else None
    with pytest.warns(EmptyPartitionWarning, match="of 50 q partitions hold no pixel"):
        setup = AnalysisSetup.build(partitions=wide, geometry=GEO, flat_field=flat)
    assert setup.estimator == "mle-intensity"
    empty = setup.partitions.n_pixels == 0
    assert empty.any() and not empty.all()
    exposure = setup.new_exposure("primary", 0.001)
    exposure.update(np.random.default_rng(0).poisson(0.5, (20, *GEO.shape)))
    result = exposure.result(final=True)
    assert all("no-data" in result.flags[j] for j in np.flatnonzero(empty))


def test_an_implausible_flat_field_is_refused():
    flat = np.ones(GEO.shape)
    flat[32, 40] = 1e30  # a used pixel (q ~ 0.0012 1/A)
    with pytest.raises(GeometryError, match=r"1 of \d+ pixels used .* 1e\+30"):
        AnalysisSetup.build(
            partitions=PARTS, geometry=GEO, flat_field=("flat.edf", flat)
        )
    flat[32, 40] = 0.5  # plausible: accepted
    AnalysisSetup.build(partitions=PARTS, geometry=GEO, flat_field=flat)
    flat[0, 0] = 1e30  # not used by any partition: accepted
    AnalysisSetup.build(partitions=PARTS, geometry=GEO, flat_field=flat)
