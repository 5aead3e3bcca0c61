"""The settings of a re-analysis and the lines saying what differs (no server)."""

from __future__ import annotations

from typing import Any

from xsvs_bluesky.options import AnalysisOptions, Estimator, Limits
from xsvs_bluesky.reanalyze._settings import (
    Baseline,
    resolve_settings,
    setting_changes,
)

PARTS = {"q1": 1e-3, "q2": 3e-3, "qs": 1e-3, "dq": 4e-4}
RAW = {"uid": "raw-0001", "xsvs_partitions": PARTS}


def recorded(**changes: Any) -> dict[str, Any]:
    xsvs: dict[str, Any] = {
        **AnalysisOptions(estimator=Estimator.MLE_WEIGHTED).to_metadata(),
        "partitions": {
            "centers": [1e-3, 2e-3, 3e-3],
            "half_width": 4e-4,
            "n_pixels": [10, 20, 30],
            "q1": 1e-3,
            "q2": 3e-3,
            "qs": 1e-3,
            "dq": 4e-4,
        },
        "masks": [],
        "flat_field": None,
    }
    xsvs.update(changes)
    return xsvs


def changes(baseline: Baseline | None, **given: Any) -> tuple[Any, list[str]]:
    settings = resolve_settings(
        baseline,
        RAW,
        options=given.pop("options", None),
        estimator=given.pop("estimator", None),
        flat_field=given.pop("flat_field", None),
        partitions=given.pop("partitions", None),
        limits=given.pop("limits", None),
    )
    main = settings.options.main_estimator(False)
    lines = setting_changes(
        baseline,
        settings,
        raw_uid="raw-0001",
        main=main,
        partitions=settings.partitions,
        masks=[],
        flat=None,
        flat_named=False,
    )
    return settings, lines


def test_mle_weighted_without_a_flat_field_is_kept_and_said():
    """The old default with no flat field recorded: no silent switch to mle."""
    base = Baseline("abcdef12-0000", None, recorded())
    settings, lines = changes(base)
    assert settings.options.estimator is Estimator.MLE_WEIGHTED
    assert lines[0] == (
        "starting from the settings of derived run abcdef12, the latest "
        "successful analysis of raw run raw-0001"
    )
    assert lines[1].startswith(
        "estimator: kept mle-weighted of derived run abcdef12; the default is now "
        "mle-intensity ("
    )
    assert lines[2] == (
        "estimator mle-weighted has no flat field to weight with (no flat field): "
        "it fits each partition as one group, as mle does"
    )
    assert len(lines) == 3


def test_named_settings_replace_the_recorded_ones_one_line_each():
    base = Baseline("abcdef12-0000", None, recorded(dynamics_model="stretched"))
    settings, lines = changes(
        base,
        estimator="moments",
        flat_field="none",
        partitions={"dq": 2e-4, "q2": None},
        limits=Limits(max_partitions=50),
    )
    opts = settings.options
    assert opts.estimator is Estimator.MOMENTS and opts.flat_field_mode.value == "none"
    assert opts.dynamics_model is not None and opts.dynamics_model.value == "stretched"
    assert opts.limits.max_partitions == 50
    assert settings.partitions == {"q1": 1e-3, "q2": 3e-3, "qs": 1e-3, "dq": 2e-4}
    assert lines[1:] == [
        "estimator: moments (derived run abcdef12: mle-weighted): given",
        "flat-field mode: none (derived run abcdef12: weights): given",
        "q partitions: dq 0.0002 (derived run abcdef12: dq 0.0004): given",
    ]


def test_options_given_whole_are_compared_key_by_key():
    base = Baseline("abcdef12-0000", None, recorded(n_bins=64))
    given = AnalysisOptions(
        estimator=Estimator.MLE_WEIGHTED, n_bins=32, dynamics_model=None
    )
    _, lines = changes(base, options=given)
    was = "(derived run abcdef12:"
    assert f"dynamics_model: None {was} exponential): given (options)" in lines
    assert f"n_bins: 32 {was} 64): given (options)" in lines
    assert not any(ln.startswith("estimator: kept") for ln in lines)  # named


def test_without_an_earlier_analysis_the_defaults_and_the_raw_partitions():
    settings, lines = changes(None)
    assert settings.options == AnalysisOptions()
    assert settings.partitions == RAW["xsvs_partitions"]
    assert lines == [
        "raw run raw-0001 has no successful analysis to start from: the raw run's "
        "partitions, masks and flat field and the default settings"
    ]


def test_unreadable_recorded_settings_fall_back_to_the_defaults_and_say_so():
    base = Baseline("abcdef12-0000", None, recorded(estimator="from-the-future"))
    settings, lines = changes(base)
    assert settings.options.estimator is None
    assert "cannot be read" in lines[1] and "from-the-future" in lines[1]
