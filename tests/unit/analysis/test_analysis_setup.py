"""AnalysisSetup and ExposureAnalysis: the groups of the default mle-intensity."""

from __future__ import annotations

import numpy as np
import pytest

from xsvs_bluesky.analysis import (
    AnalysisOptions,
    AnalysisSetup,
    ExposureAnalysis,
    dynamics_q,
)
from xsvs_bluesky.core.estimators import IntensityGroups
from xsvs_bluesky.core.geometry import Geometry, Partitions
from xsvs_bluesky.core.histogram import HistogramAccumulator
from xsvs_bluesky.core.synthetic import speckle_frames
from xsvs_bluesky.errors import GeometryError
from xsvs_bluesky.options import Estimator

SHAPE = (64, 64)
GEO = Geometry(1.53, 2140.0, 0.055, 31.5, 31.5, SHAPE)
SPEC = {"q1": 8e-4, "q2": 2.4e-3, "qs": 8e-4, "dq": 3e-4}


def flat_field() -> np.ndarray:
    rng = np.random.default_rng(8)
    return rng.uniform(0.9, 1.1, size=SHAPE)


def build(**options: object) -> AnalysisSetup:
    return AnalysisSetup.build(
        partitions=SPEC,
        geometry=GEO,
        flat_field=("flat", flat_field()),
        options=AnalysisOptions(**options),  # type: ignore[arg-type]
    )


def test_default_groups_are_fixed_by_geometry_and_flat_field() -> None:
    one, two = build(), build()
    assert one.estimator == "mle-intensity"
    assert isinstance(one.groups, IntensityGroups)
    # 4 sub-rings x 4 efficiency groups at most: as many as mle-weighted's 16
    per_part = np.bincount(one.groups.parent)
    assert per_part.max() <= 16 and per_part.min() >= 4
    assert one.description["n_groups"] == len(one.groups)
    # the same groups in every worker: nothing but geometry and flat field
    assert two.groups is not None
    assert len(one.groups) == len(two.groups)
    for a, b in zip(one.groups.pixels, two.groups.pixels, strict=True):
        np.testing.assert_array_equal(a, b)
    # without the flat field's weights: sub-rings only
    plain = build(flat_field_mode="record-only")
    assert plain.estimator == "mle-intensity"
    assert plain.groups is not None
    assert np.bincount(plain.groups.parent).max() <= 4


def test_exposure_fits_the_groups_and_reports_q_eff() -> None:
    setup = build(extra_estimators=("mle-weighted", "moments"))
    frames = speckle_frames(80, SHAPE, 1.5, 0.2, efficiency=flat_field(), rng=9)
    exp = setup.new_exposure("primary", 1e-3)
    exp.update(frames)
    res = exp.result()
    assert res.estimator == "mle-intensity"
    assert np.all(np.abs(res.beta - 0.2) < 5 * res.beta_err)
    assert res.q_eff is not None
    assert np.all(np.abs(res.q_eff - res.q) <= res.q_half_width)
    assert set(res.extra_estimates) == {"mle-weighted", "moments"}
    # one pass gives the partitions' histograms exactly
    ref = HistogramAccumulator(setup.partitions, n_bins=res.n_bins)
    ref.update(frames)
    np.testing.assert_array_equal(res.counts[:, : ref.n_bins], ref.counts)
    # the exposures of one setup share the groups, not the counts
    other = setup.new_exposure("primary", 2e-3)
    assert other.n_frames == 0 and exp.n_frames == 80


def test_divide_round_and_the_compat_mode_are_untouched() -> None:
    assert build(flat_field_mode="divide-round").estimator == "mle"
    compat = build(flat_field_mode="divide-round", estimator="pyxsvs-lsq")
    assert compat.groups is None and compat.description["n_groups"] is None
    frames = speckle_frames(40, SHAPE, 0.8, 0.2, rng=10)
    exp = compat.new_exposure("primary", 1e-3)
    exp.update(frames)
    res = exp.result()
    assert res.q_eff is None and res.estimator == "pyxsvs-lsq"
    assert {e.estimator for e in res.estimates} == {"pyxsvs-lsq"}
    # its partition histograms are those of the divided, rounded frames
    acc = HistogramAccumulator(compat.partitions, n_bins=res.n_bins)
    acc.update(np.rint(frames / flat_field()).astype(np.int64))
    np.testing.assert_array_equal(res.counts[:, : acc.n_bins], acc.counts)


def test_without_a_geometry_the_old_default_and_a_clear_error() -> None:
    parts = Partitions.from_range(
        GEO.q_map(), q1=SPEC["q1"], q2=SPEC["q2"], qs=SPEC["qs"], dq=SPEC["dq"]
    )
    setup = AnalysisSetup.build(partitions=parts, flat_field=flat_field())
    assert setup.estimator == "mle-weighted"
    with pytest.raises(GeometryError, match="q_map"):
        AnalysisSetup.build(
            partitions=parts, options=AnalysisOptions(estimator=Estimator.MLE_INTENSITY)
        )
    with pytest.raises(GeometryError, match="q_map"):
        ExposureAnalysis(parts, estimator="mle-intensity")
    exp = ExposureAnalysis(parts, q_map=GEO.q_map())
    assert exp.estimator == "mle-intensity"


def test_dynamics_q_averages_q_eff_and_falls_back_to_the_centres() -> None:
    setup = build()
    frames = speckle_frames(60, SHAPE, 1.0, 0.2, efficiency=flat_field(), rng=11)
    results = []
    for t_e, part in ((1e-3, frames[:30]), (2e-3, frames[30:])):
        exp = setup.new_exposure("primary", t_e)
        exp.update(part)
        results.append(exp.result())
    q = dynamics_q(results)
    assert results[0].q_eff is not None and results[1].q_eff is not None
    np.testing.assert_allclose(q, (results[0].q_eff + results[1].q_eff) / 2)
    bare = build(estimator="mle").new_exposure("primary", 1e-3)
    bare.update(frames[:10])
    plain = bare.result()
    assert plain.q_eff is None
    np.testing.assert_array_equal(dynamics_q([plain]), plain.q)
