"""AnalysisOptions: one vocabulary, normalised once, light to import."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from xsvs_bluesky.errors import XSVSError
from xsvs_bluesky.options import (
    ESTIMATORS,
    FLAT_FIELD_MODES,
    AnalysisOptions,
    DynamicsModel,
    Estimator,
    FlatFieldMode,
    OptionError,
    default_estimator,
)


def test_options_import_loads_no_numerics() -> None:
    # the CLI parses options with this module before any numerics is needed
    code = (
        "import sys, xsvs_bluesky.options\n"
        "heavy = [m for m in ('numba', 'numpy', 'scipy', 'bluesky', 'tiled') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_four_flat_field_modes_and_the_old_name() -> None:
    assert FLAT_FIELD_MODES == ("weights", "divide-round", "record-only", "none")
    for name in FLAT_FIELD_MODES:
        assert FlatFieldMode.parse(name).value == name
    assert FlatFieldMode.parse("weighted") is FlatFieldMode.WEIGHTS
    assert FlatFieldMode.parse(" Record-Only ") is FlatFieldMode.RECORD_ONLY
    assert FlatFieldMode.parse(FlatFieldMode.NONE) is FlatFieldMode.NONE


def test_unknown_names_raise_an_option_error_listing_the_choices() -> None:
    with pytest.raises(OptionError, match="weights, divide-round, record-only, none"):
        FlatFieldMode.parse("divide")
    with pytest.raises(ValueError, match="estimator 'mle2' is unknown"):
        Estimator.parse("mle2")
    with pytest.raises(XSVSError, match="exponential, stretched"):
        AnalysisOptions(dynamics_model="linear")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="n_bins"):
        AnalysisOptions(n_bins=0)
    with pytest.raises(OptionError, match="histogram backend"):
        AnalysisOptions(histogram_backend="cuda")  # type: ignore[arg-type]


def test_estimator_names_are_the_cores() -> None:
    from xsvs_bluesky.core.dynamics import MODELS
    from xsvs_bluesky.core.estimators import ESTIMATORS as CORE

    assert CORE == ESTIMATORS == tuple(e.value for e in Estimator)
    assert MODELS == tuple(m.value for m in DynamicsModel)


@pytest.mark.parametrize(
    ("has_flat", "mode", "expected"),
    [
        (True, "weights", "mle-intensity"),
        (True, "weighted", "mle-intensity"),
        (True, "divide-round", "mle"),
        (True, "record-only", "mle-intensity"),
        (True, "none", "mle-intensity"),
        (False, "weights", "mle-intensity"),
        (False, "divide-round", "mle"),
    ],
)
def test_one_default_estimator(has_flat: bool, mode: str, expected: str) -> None:
    assert default_estimator(has_flat, mode) == expected
    flat = FlatFieldMode.parse(mode)
    assert AnalysisOptions(flat_field_mode=flat).main_estimator(has_flat) == expected
    given = AnalysisOptions(estimator=Estimator.MOMENTS, flat_field_mode=flat)
    assert given.main_estimator(has_flat) is Estimator.MOMENTS


@pytest.mark.parametrize(
    ("has_flat", "mode", "expected"),
    [
        (True, "weights", "mle-weighted"),
        (True, "record-only", "mle"),
        (True, "divide-round", "mle"),
        (False, "weights", "mle"),
    ],
)
def test_default_without_a_q_map(has_flat: bool, mode: str, expected: str) -> None:
    """Partitions without a geometry: the pixels' q are unknown, no mle-intensity."""
    assert default_estimator(has_flat, mode, has_q_map=False) == expected
    opts = AnalysisOptions(flat_field_mode=FlatFieldMode.parse(mode))
    assert opts.main_estimator(has_flat, has_q_map=False) == expected


def test_values_are_normalised_and_the_object_frozen() -> None:
    # Plain names on purpose: the fields are typed as they are after
    # normalisation, the constructor also takes the names (see its docstring).
    opts = AnalysisOptions(
        estimator="pyxsvs-lsq",  # type: ignore[arg-type]
        flat_field_mode="weighted",  # type: ignore[arg-type]
        extra_estimators=["moments"],  # type: ignore[arg-type]
        estimator_options={"legacy_mean": [1.0]},
        dynamics_model="stretched",  # type: ignore[arg-type]
    )
    assert opts.estimator is Estimator.PYXSVS_LSQ
    assert opts.flat_field_mode is FlatFieldMode.WEIGHTS
    assert opts.extra_estimators == (Estimator.MOMENTS,)
    assert opts.dynamics_model is DynamicsModel.STRETCHED
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.n_bins = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        opts.estimator_options["x"] = 1  # type: ignore[index]
    assert opts == AnalysisOptions.merge(opts, estimator=None)
    assert AnalysisOptions.merge(opts, n_bins=64).n_bins == 64
    assert opts.replace(flat_field_mode="none").uses_flat_field is False


def test_metadata_round_trip() -> None:
    opts = AnalysisOptions(
        estimator=Estimator.MLE,
        flat_field_mode=FlatFieldMode.RECORD_ONLY,
        n_bins=40,
        n_groups=8,
        histogram_backend="numpy",
        dynamics_model=None,
    )
    md = opts.to_metadata()
    assert md["flat_field_mode"] == "record-only"
    assert md["dynamics_model"] is None
    assert all(type(v) in (str, int, list, dict, type(None)) for v in md.values())
    assert AnalysisOptions.from_metadata(md) == opts


def test_v1_start_documents_are_read() -> None:
    # what version 1 derived runs stored: the mode only inside the flat
    # field's identity, in the callback's old name; n_groups = groups made
    v1_weighted = {
        "package_version": "0.1.0",
        "estimator": "mle-weighted",
        "extra_estimators": ["moments", "low-count", "r-1"],
        "estimator_options": {},
        "flat_field": {"name": "flat.edf", "sha256": "ab", "mode": "weighted"},
        "n_groups": 64,
        "dynamics_model": "exponential",
    }
    opts = AnalysisOptions.from_metadata(v1_weighted)
    assert opts.flat_field_mode is FlatFieldMode.WEIGHTS
    assert opts.estimator is Estimator.MLE_WEIGHTED
    assert opts.n_groups == 16  # not the 64 groups made
    v1_divide = {**v1_weighted, "flat_field": {"mode": "divide-round"}}
    assert AnalysisOptions.from_metadata(v1_divide).flat_field_mode == "divide-round"
    # no flat field recorded: none was loaded
    v1_none = {"estimator": "mle", "flat_field": None, "dynamics_model": None}
    opts = AnalysisOptions.from_metadata(v1_none)
    assert opts.flat_field_mode is FlatFieldMode.NONE
    assert opts.dynamics_model is None


def test_limits_defaults_and_validation() -> None:
    from xsvs_bluesky.errors import LimitError
    from xsvs_bluesky.options import DEFAULT_LIMITS, AnalysisOptions, Limits

    assert AnalysisOptions().limits is DEFAULT_LIMITS
    assert (DEFAULT_LIMITS.max_partitions, DEFAULT_LIMITS.max_pixels) == (
        1024,
        2**25,
    )
    assert DEFAULT_LIMITS.max_frame_bytes == 2**28
    for bad in (0, -3, 1.5, True):
        with pytest.raises(XSVSError, match="give an integer >= 1"):
            Limits(max_partitions=bad)  # type: ignore[arg-type]  # 1.5 on purpose
    with pytest.raises(XSVSError, match="give a Limits object"):
        AnalysisOptions(limits={"max_partitions": 3})  # type: ignore[arg-type]
    small = Limits(max_pixels=100)
    small.check_pixels((10, 10), "x")
    with pytest.raises(LimitError, match=r"x has shape \(10, 11\) = 110 pixels"):
        small.check_pixels((10, 11), "x")
    assert "limits" not in AnalysisOptions().to_metadata()
