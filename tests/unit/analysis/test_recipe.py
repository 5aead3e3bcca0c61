"""Partial analyses of blocks of frames, made from a recipe, merged exactly."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from xsvs_bluesky.analysis import (
    AnalysisOptions,
    AnalysisSetup,
    ExposureResult,
    analysis_from_recipe,
    shard_recipe,
)
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.core.synthetic import speckle_frames
from xsvs_bluesky.errors import GeometryError, OptionError

SHAPE = (64, 64)
GEO = Geometry(1.5, 5000.0, 0.055, 32.5, 32.5, SHAPE)
PARTS = {"q1": 0.0004, "q2": 0.0016, "qs": 0.0004, "dq": 0.0002}
FLAT = np.random.default_rng(3).gamma(20.0, 0.05, size=SHAPE)


def _setup(flat: bool = False, **options: Any) -> AnalysisSetup:
    return AnalysisSetup.build(
        partitions=PARTS,
        geometry=GEO,
        flat_field=("flat.edf", FLAT) if flat else None,
        options=AnalysisOptions(**options),
    )


def _value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes())
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return tuple(_value(getattr(v, f.name)) for f in dataclasses.fields(v))
    if isinstance(v, tuple | list):
        return tuple(_value(x) for x in v)
    if isinstance(v, dict) or hasattr(v, "items"):
        return tuple((k, _value(x)) for k, x in sorted(v.items()))
    if isinstance(v, float):
        return np.float64(v).tobytes()  # NaN equals NaN, bit for bit
    return v


def assert_same_result(a: ExposureResult, b: ExposureResult) -> None:
    """Every field equal bit for bit (NaN included)."""
    for f in dataclasses.fields(ExposureResult):
        assert _value(getattr(a, f.name)) == _value(getattr(b, f.name)), f.name


CASES = [
    pytest.param({}, False, id="mle"),
    pytest.param({}, True, id="flat-mle-weighted"),
    pytest.param({"estimator": "mle-frames"}, False, id="mle-frames"),
    pytest.param({"flat_field_mode": "divide-round"}, True, id="divide-round"),
    pytest.param({"flat_field_mode": "record-only"}, True, id="record-only"),
    pytest.param({"estimator": "mle-weighted", "n_groups": 3}, True, id="groups"),
]


@pytest.mark.parametrize(("options", "flat"), CASES)
def test_partials_of_blocks_from_a_recipe_equal_one_analysis(
    options: dict[str, Any], flat: bool
) -> None:
    setup = _setup(flat, **options)
    frames = speckle_frames(130, SHAPE, 1.5, 0.3, efficiency=FLAT, rng=8)
    frames = frames.astype(np.uint16)
    frames[100, 30, 30] = 900  # a late block grows the bins
    whole = setup.new_exposure("primary", 0.01, source="uid")
    for a in range(0, 130, 32):  # the in-process pieces
        whole.update(frames[a : a + 32])
    recipe = shard_recipe(setup)
    assert recipe["key"] == shard_recipe(setup)["key"]
    plain = (np.ndarray, str, int, float, list, type(None))
    assert all(isinstance(v, (*plain, dict)) for v in recipe.values())
    worker = analysis_from_recipe(recipe)  # as a worker would rebuild it
    merged = setup.new_exposure("primary", 0.01, source="uid")
    for a, b in [(0, 1), (1, 40), (40, 41), (41, 99), (99, 130)]:
        part = worker.spawn("")
        part.update(frames[a:b])
        arrays = part.to_arrays()
        assert all(isinstance(v, np.ndarray) for v in arrays.values())
        assert merged.absorb(arrays) == b - a
    assert_same_result(merged.result(), whole.result())
    assert_same_result(merged.result(final=False), whole.result(final=False))


def test_partial_of_other_settings_is_refused() -> None:
    frames = speckle_frames(4, SHAPE, 1.0, 0.3, rng=1)
    flat_part = analysis_from_recipe(shard_recipe(_setup(True)))
    flat_part.update(frames)
    plain = _setup().new_exposure("primary")
    with pytest.raises(GeometryError, match="settings|do not fit"):
        plain.absorb(flat_part.to_arrays())
    assert plain.n_frames == 0


def test_legacy_bins_of_divide_round_are_not_sharded() -> None:
    setup = _setup(True, flat_field_mode="divide-round", estimator="pyxsvs-lsq")
    with pytest.raises(OptionError, match="pyxsvs-lsq"):
        shard_recipe(setup)
    given = _setup(
        True,
        flat_field_mode="divide-round",
        estimator="pyxsvs-lsq",
        estimator_options={"legacy_mean": [1.0] * 4},
    )
    assert shard_recipe(given)["estimator"] == "pyxsvs-lsq"
