"""AnalysisSetup.build: limits checked before allocating, sanity checks."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from xsvs_bluesky.analysis import AnalysisSetup
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.errors import LimitError
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
