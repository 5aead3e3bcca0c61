"""RunAnalyser alone (a frozen RunConfig and a sink) and XSVSCallback's options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from test_callback_documents import (
    GEO,
    PARTS,
    SHAPE,
    Docs,
    callback,
    feed,
    frames_for,
    inline_run,
    stream,
)

from xsvs_bluesky.analysis import AnalysisSetup, ExposureResult
from xsvs_bluesky.callback import RunAnalyser, RunConfig, RunRecord, RunSink
from xsvs_bluesky.options import (
    AnalysisOptions,
    Estimator,
    FlatFieldMode,
    OptionError,
)


class ListSink:
    """A RunSink that keeps everything."""

    def __init__(self) -> None:
        self.docs: Docs = []
        self.results: list[ExposureResult] = []
        self.records: list[RunRecord] = []
        self.emit_targets = [lambda name, doc: self.docs.append((name, doc))]

    def publish(self, result: ExposureResult) -> None:
        self.results.append(result)

    def record(self, record: RunRecord) -> None:
        self.records.append(record)


def test_run_analyser_needs_no_callback() -> None:
    options = AnalysisOptions(estimator=Estimator.MOMENTS, dynamics_model=None)

    def setup_for(start: Mapping[str, Any]) -> AnalysisSetup:
        return AnalysisSetup.build(partitions=PARTS, geometry=GEO, options=options)

    config = RunConfig(
        setup_for=setup_for,
        frame_shape=SHAPE,
        progress_interval_s=0.0,
        progress_every_frames=1000,
        dynamics_model=None,
    )
    sink = ListSink()
    checked: RunSink = sink  # the protocol is structural
    raw = inline_run([(0.001, frames_for(0.3, n=60)), (0.002, frames_for(0.3, n=60))])
    analyser = RunAnalyser(raw[0][1], config, checked)
    for name, doc in raw[1:]:
        analyser(name, doc)
    (record,) = sink.records
    assert record.exit_status == "success"
    assert record.raw_uid == raw[0][1]["uid"]
    assert record.derived_uid == sink.docs[0][1]["uid"]
    assert [r.n_frames for r in record.results] == [60, 60]
    assert [r.final for r in sink.results] == [True, True]
    start = sink.docs[0][1]
    assert start["xsvs"]["estimator"] == "moments"
    assert start["xsvs"]["dynamics_model"] is None
    assert "dynamics" not in {d["name"] for n, d in sink.docs if n == "descriptor"}
    with pytest.raises(AttributeError):
        config.read_timeout_s = 1.0  # type: ignore[misc]


def test_keywords_are_a_convenience_over_options() -> None:
    base = AnalysisOptions(estimator=Estimator.MOMENTS, n_bins=40, dynamics_model=None)
    cb = callback([], options=base)
    assert cb.options is base
    cb = callback([], options=base, estimator="mle", flat_field_mode="weighted")
    assert cb.options == base.replace(estimator="mle")
    assert cb.options.dynamics_model is None  # not given: kept from options
    cb = callback([], options=base, dynamics_model="stretched")
    assert cb.dynamics_model == "stretched"
    with pytest.raises(OptionError):
        callback([], flat_field_mode="divide")


@pytest.mark.parametrize(
    ("mode", "estimator", "recorded"),
    [
        ("weights", "mle-intensity", True),
        ("weighted", "mle-intensity", True),  # the old name, mapped
        ("divide-round", "mle", True),
        ("record-only", "mle-intensity", True),
        ("none", "mle-intensity", False),
    ],
)
def test_four_flat_field_modes_in_the_derived_run(
    mode: str, estimator: str, recorded: bool
) -> None:
    rng = np.random.default_rng(3)
    flat = rng.uniform(0.9, 1.1, size=SHAPE)
    out: Docs = []
    cb = callback(out, flat_field=("flat.edf", flat), flat_field_mode=mode)
    feed(cb, inline_run([(0.001, frames_for(0.3, n=40))]))
    xsvs = out[0][1]["xsvs"]
    canonical = FlatFieldMode.parse(mode).value
    assert xsvs["flat_field_mode"] == canonical
    assert xsvs["estimator"] == estimator
    assert (xsvs["flat_field"] is not None) is recorded
    if recorded:
        assert xsvs["flat_field"]["mode"] == canonical
    # the backend recorded is the one used ("auto" resolved), as provenance
    assert xsvs["histogram_backend"] in ("numba", "numpy")
    assert AnalysisOptions.from_metadata(xsvs) == cb.options.replace(
        estimator=estimator, histogram_backend=xsvs["histogram_backend"]
    )
    results = stream(out, "results")
    assert results and {r["estimator"] for r in results} == {estimator}


@pytest.mark.parametrize(
    "raw_status, derived_status, word",
    [("abort", "abort", "aborted"), ("fail", "fail", "failed")],
)
def test_a_derived_run_of_an_incomplete_raw_run_is_not_success(
    raw_status: str, derived_status: str, word: str
) -> None:
    """5 of 8 planned exposures arrived, then the raw run stopped early."""
    times = [0.001 * 2**i for i in range(8)]
    raw = inline_run(
        [(t, frames_for(0.3, n=20, seed=i)) for i, t in enumerate(times[:5])],
        start_md={"xsvs_exposure_times": times},
    )
    name, stop = raw[-1]
    raw[-1] = (name, dict(stop, exit_status=raw_status, reason="Ctrl-C"))
    out: Docs = []
    cb = callback(out, dynamics_model=None)
    feed(cb, raw)
    (record,) = cb.records.values()
    assert record.exit_status == derived_status
    assert (
        record.reason == f"raw run {word} after 5 of 8 exposures (100 frames): Ctrl-C"
    )
    (derived_stop,) = [d for n, d in out if n == "stop"]
    assert derived_stop["exit_status"] == derived_status  # stored as recorded
    assert derived_stop["reason"] == record.reason
    assert [r.n_frames for r in record.results] == [20] * 5  # partial results kept
    assert len(stream(out, "results")) == 5


def test_binned_stream_equals_the_frames_binned_beforehand() -> None:
    """``xsvs_binning``: each factor one exposure, as if the frames came binned."""
    from xsvs_bluesky.core.histogram import bin_frames

    frames = frames_for(0.3, n=100, kbar=0.4, seed=5)
    factors = [1, 4, 7]
    binned: Docs = []
    # frames arrive in pages that no factor divides
    feed(
        callback(binned, estimator="moments"),
        inline_run(
            [(1e-3, frames[:33]), (1e-3, frames[33:61]), (1e-3, frames[61:])],
            start_md={"xsvs_binning": {"primary": factors}},
            page=True,
        ),
    )
    by_hand: Docs = []
    feed(
        callback(by_hand, estimator="moments"),
        inline_run([(1e-3 * n, bin_frames(frames, n)) for n in factors], page=True),
    )
    got, want = stream(binned, "results"), stream(by_hand, "results")
    assert [r["n_frames"] for r in got] == [100, 25, 14]
    assert len(got) == len(want) == 3
    for a, b in zip(got, want, strict=True):
        assert a["exposure_time"] == b["exposure_time"]
        for key in ("kbar", "beta", "beta_err", "counts", "trace"):
            np.testing.assert_array_equal(a[key], b[key])
    start = next(d for n, d in binned if n == "start")
    assert start["xsvs"]["binning"] == {"primary": factors}


@pytest.mark.parametrize(
    "value",
    [[2, 3], {"primary": [0, 2]}, {"primary": [2, 2]}, {"primary": "2"}],
)
def test_a_bad_binning_key_fails_the_derived_run_in_one_line(value: Any) -> None:
    docs: Docs = []
    feed(
        callback(docs),
        inline_run([(1e-3, frames_for(0.3, n=4))], start_md={"xsvs_binning": value}),
    )
    (stop,) = [d for n, d in docs if n == "stop"]
    assert stop["exit_status"] == "fail"
    assert "xsvs_binning" in stop["reason"] and "\n" not in stop["reason"]
