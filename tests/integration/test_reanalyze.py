"""``reanalyze`` starts from the latest analysis and says what differs (real Tiled).

The series of ``test_replay`` (3 exposures of 40 EDF frames, a mask) with a
flat field added, replayed once into module catalogs; each test then
analyses the stored raw run again and checks the lines printed about the
settings against the derived runs stored before.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from fabio.edfimage import EdfImage
from legacy_series import SHAPE, write_series
from test_replay import cli_options, fresh_catalogs, run_cli

from xsvs_bluesky.callback import XSVSCallback
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.reanalyze import fetch_documents, latest_analysis, reanalyze
from xsvs_bluesky.replay import LegacyReplay
from xsvs_bluesky.storage import make_tiled_writer

pytestmark = pytest.mark.tiled

PROG = "xsvs-bluesky reanalyze: "


@pytest.fixture(scope="module")
def replayed(tiled_server, tmp_path_factory):
    """The series with a flat field, replayed: (catalogs, raw uid, derived uid)."""
    root = tmp_path_factory.mktemp("series")
    ini = write_series(root, n_frames=40)
    flat = 1.0 + 0.05 * np.random.default_rng(3).standard_normal(SHAPE)
    EdfImage(data=flat.astype(np.float32)).write(str(root / "flat.edf"))
    ini.write_text(
        ini.read_text().replace(
            "mask = mask.edf", "mask = mask.edf\nflat field = flat.edf"
        )
    )
    with fresh_catalogs(tiled_server) as cats:
        out = LegacyReplay(ini, frames_per_datum=20).run(cats)
        assert out.analysis_status == "success"
        yield cats, out.raw_uid, out.derived_uids[0]


def xsvs_of(cats: Any, uid: str) -> dict[str, Any]:
    return dict(cats.processed[uid].metadata["start"]["xsvs"])


def said(err: str) -> list[str]:
    """The lines about the settings (stderr lines of the command, prefix cut)."""
    return [ln[len(PROG) :] for ln in err.splitlines() if ln.startswith(PROG)]


def uid_of(baseline: Any) -> str | None:
    return None if baseline is None else baseline.uid


def runs_as_run(line: str) -> str:
    """The line with ``derived run 6a0c40c5`` written ``RUN``."""
    return re.sub(r"derived run \w{8}", "RUN", line)


def reanalyze_cli(cats: Any, raw_uid: str, *options: str) -> tuple[str, list[str]]:
    code, out, err = run_cli(
        "reanalyze",
        raw_uid,
        *cli_options(cats),
        *options,
        "--format",
        "json",
        "--no-progress",
    )
    assert code == 0, err
    records = json.loads(out)
    lines = [ln for ln in said(err) if not ln.startswith("raw run ")]
    return records[0]["run_uid"], lines


def test_reanalyze_starts_from_the_latest_analysis_and_names_each_change(replayed):
    cats, raw_uid, first = replayed
    assert uid_of(latest_analysis(cats.processed, raw_uid)) == first
    recorded = xsvs_of(cats, first)
    assert recorded["estimator"] == "mle-intensity"
    assert recorded["flat_field"]["name"] == "flat.edf"

    # 1. two settings named: one line each, with the old value and the reason
    second, lines = reanalyze_cli(
        cats, raw_uid, "--estimator", "mle-weighted", "--dq", "0.0002"
    )
    assert lines[0].startswith(f"starting from the settings of derived run {first[:8]}")
    assert lines[0].endswith(f"the latest successful analysis of raw run {raw_uid[:8]}")
    assert [runs_as_run(ln) for ln in lines[1:]] == [
        "estimator: mle-weighted (RUN: mle-intensity): given",
        "q partitions: dq 0.0002 (RUN: dq 0.00025): given",
    ], lines
    new = xsvs_of(cats, second)
    assert new["estimator"] == "mle-weighted" and new["flat_field_mode"] == "weights"
    assert new["partitions"]["half_width"] == pytest.approx(2e-4)
    assert new["flat_field"]["file_sha256"] == recorded["flat_field"]["file_sha256"]
    assert [m["file_sha256"] for m in new["masks"]] == [
        m["file_sha256"] for m in recorded["masks"]
    ]

    # 2. only the flat-field mode named: mle-weighted is KEPT (no silent switch
    # to mle), with a line on what it does without weights and one on the
    # better default; dq comes from the latest analysis, not the raw run
    third, lines = reanalyze_cli(cats, raw_uid, "--flat-field", "none")
    assert lines[0].startswith(
        f"starting from the settings of derived run {second[:8]}"
    )
    rest = [runs_as_run(ln) for ln in lines[1:]]
    assert rest[0] == "flat-field mode: none (RUN: weights): given"
    assert lines[2].startswith(
        f"estimator: kept mle-weighted of derived run {second[:8]}"
    )
    assert "the default is now mle-intensity" in rest[1]
    assert "--estimator mle-intensity" in rest[1]
    assert rest[2] == (
        "estimator mle-weighted has no flat field to weight with (flat-field mode "
        "none): it fits each partition as one group, as mle does"
    )
    assert len(rest) == 3, rest
    new = xsvs_of(cats, third)
    assert new["estimator"] == "mle-weighted" and new["flat_field"] is None
    assert new["flat_field_mode"] == "none"
    assert new["partitions"]["half_width"] == pytest.approx(2e-4)
    assert uid_of(latest_analysis(cats.processed, raw_uid)) == third


def test_masks_and_flat_field_not_reachable_are_said(replayed, tmp_path):
    """A derived run made from arrays (as live) names files the run does not hold."""
    cats, raw_uid, _ = replayed
    run = cats.raw[raw_uid]
    start = run.metadata["start"]
    geometry = Geometry.from_dict(start["xsvs_geometry"])
    hand_mask = np.zeros(SHAPE, bool)
    hand_mask[:, :2] = True
    callback = XSVSCallback(
        geometry=geometry,
        partitions=start["xsvs_partitions"],
        masks=[("hand-made", hand_mask)],
        flat_field=("efficiency", np.ones(SHAPE)),
        estimator="moments",
        emit=make_tiled_writer(cats.processed),
    )
    for name, doc in fetch_documents(run):
        callback(name, doc)
    live = callback.records[raw_uid].derived_uid
    assert live is not None and uid_of(latest_analysis(cats.processed, raw_uid)) == live
    lines: list[str] = []
    out = reanalyze(cats, raw_uid, report=lines.append)
    assert out.baseline_uid == live and list(out.changes) == lines
    rest = [runs_as_run(ln) for ln in lines[1:]]
    assert rest == [
        "masks: hand-made of RUN not used: not reachable (the raw run names no such "
        "mask file; its masks: mask.edf)",
        "masks: mask.edf used, named by the raw run (RUN: hand-made)",
        "flat field: flat.edf (RUN: efficiency, other bytes): named by the raw run",
        "estimator: kept moments of RUN; the default is now mle-intensity (each "
        "pixel's mean from the flat field and the intensity's shape across the "
        "ring: unbiased when the intensity varies inside a ring); give "
        "estimator='mle-intensity' (--estimator mle-intensity) to use it",
    ], rest
    assert xsvs_of(cats, out.derived_uid or "")["estimator"] == "moments"


def test_no_earlier_analysis_is_said_and_defaults_apply(tiled_server, tmp_path):
    ini = write_series(tmp_path / "series", n_frames=12)
    with fresh_catalogs(tiled_server) as cats:
        first = LegacyReplay(ini).run(cats)
        # the only analysis fails to count: a raw run with no successful one
        for uid in first.derived_uids:
            cats.processed[uid].delete(recursive=True, external_only=False)
        lines: list[str] = []
        out = reanalyze(cats, first.raw_uid, report=lines.append)
        assert out.baseline_uid is None and out.exit_status == "success"
        assert lines == [
            f"raw run {first.raw_uid[:8]} has no successful analysis to start from: "
            "the raw run's partitions, masks and flat field and the default settings"
        ]
        xsvs = xsvs_of(cats, out.derived_uid or "")
        assert xsvs["estimator"] == "mle-intensity"
        assert xsvs["partitions"]["q1"] == pytest.approx(6e-4)
