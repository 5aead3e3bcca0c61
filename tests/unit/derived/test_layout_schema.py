"""The one definition of the derived-run layout, its documents and its reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from derived_docs import derived_run
from event_model import DocumentNames, compose_run, schema_validators

from xsvs_bluesky.derived import (
    LAYOUT_VERSION,
    PROVENANCE_KEYS,
    RESULT_FLAGS,
    RESULTS,
    STREAMS,
    encode_flags,
    schema_markdown,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "reference"
SCHEMA = DOC / "derived-run-schema.md"


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_reference_holds_the_generated_table_of_every_stream(stream):
    assert schema_markdown(stream) in SCHEMA.read_text()


def test_reference_names_the_provenance_keys_and_the_version():
    text = SCHEMA.read_text()
    for key in PROVENANCE_KEYS:
        assert f"`{key}`" in text
    assert f"`{LAYOUT_VERSION}`" in text


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_every_field_is_typed_with_units_and_scalars_only(stream):
    names = [f.name for f in stream.all_fields(["low-count"])]
    assert len(names) == len(set(names))
    assert set(stream.index) <= set(names) and set(stream.hints) <= set(names)
    desc = stream.descriptor(["low-count"], {"mean_image": (7,)})
    for key, data_key in desc["data_keys"].items():
        assert "units" in data_key and data_key["object_name"] == "xsvs"
        if key == "mean_image":
            assert data_key["shape"] == [7] and data_key["dims"] == ["col"]
        else:
            assert data_key["shape"] == []
    bundle = compose_run(uid="x")
    composed = bundle.compose_descriptor(**desc)  # validated by event-model
    assert composed.descriptor_doc["hints"] == {"xsvs": {"fields": list(stream.hints)}}


def test_flag_legend_is_fixed_and_unknown_flags_set_other():
    assert RESULTS.field("flags").flags == RESULT_FLAGS
    assert encode_flags([RESULT_FLAGS[1], RESULT_FLAGS[0]], RESULT_FLAGS) == 0b11
    other = 1 << RESULT_FLAGS.index("other")
    assert encode_flags(["never-heard-of"], RESULT_FLAGS) == other


def test_derived_documents_carry_layout_provenance_and_versions():
    docs = derived_run()
    start = docs[0][1]
    assert start["xsvs"]["schema_version"] == LAYOUT_VERSION
    versions = start["xsvs"]["versions"]
    assert {"numpy", "scipy", "numba", "event-model", "bluesky", "tiled"} <= set(
        versions
    )
    assert start["xsvs"]["histogram_backend"] in ("numba", "numpy")
    assert start["xsvs"]["n_bins"] >= 1
    for name, doc in docs:
        schema_validators[getattr(DocumentNames, name)].validate(doc)
        if name == "event_page":
            assert len({len(v) for v in doc["data"].values()}) == 1


def test_provenance_keys_are_copied_from_the_raw_run():
    from xsvs_bluesky.derived import DerivedRun

    raw = {
        "uid": "raw-1",
        "scan_id": 3,
        "data_session": "pass-123456",
        "proposal": {"proposal_id": "123456"},
        "cycle": "2026-3",
        "tiled_access_tags": ["beamline_x"],
        "unrelated": 1,
    }
    docs = []
    DerivedRun([lambda n, d: docs.append((n, d))], raw_start=raw, xsvs={})
    start = docs[0][1]
    for key in ("data_session", "proposal", "cycle", "tiled_access_tags"):
        assert start[key] == raw[key]
    assert "unrelated" not in start and start["original_run_uid"] == "raw-1"


def test_event_uids_are_unique_and_numbered_per_page():
    uids = []
    for name, doc in derived_run():
        if name == "event_page":
            stems = {u.rsplit("-", 1)[0] for u in doc["uid"]}
            assert len(stems) == 1
            assert [u.rsplit("-", 1)[1] for u in doc["uid"]] == [
                str(i) for i in range(len(doc["uid"]))
            ]
            uids += doc["uid"]
    assert len(uids) > 100 and len(set(uids)) == len(uids)


def test_row_uids_past_the_kept_suffixes(monkeypatch):
    from xsvs_bluesky.derived import _compose

    monkeypatch.setattr(_compose, "_MAX_SUFFIXES", 3)
    monkeypatch.setattr(_compose, "_SUFFIXES", ())
    uids = _compose._row_uids(7)
    assert [u.rsplit("-", 1)[1] for u in uids] == [str(i) for i in range(7)]
    assert len({u.rsplit("-", 1)[0] for u in uids}) == 1
    assert len(_compose._SUFFIXES) == 3
    assert _compose._row_uids(0) == []
    assert _compose._row_uids(2)[0] != uids[0]


def test_flag_legends_follow_the_analysis_flag_lists():
    from xsvs_bluesky.analysis import FLAG_FIT_FAILED
    from xsvs_bluesky.core.dynamics import DYNAMICS_FLAGS
    from xsvs_bluesky.core.estimators import FLAGS
    from xsvs_bluesky.derived import DYNAMICS_FLAG_NAMES, RESULT_FLAGS

    assert RESULT_FLAGS == (*FLAGS, FLAG_FIT_FAILED, "other")
    assert DYNAMICS_FLAG_NAMES == (*DYNAMICS_FLAGS, "other")


def test_d_statuses_follow_the_dynamics_fit():
    from xsvs_bluesky.core.dynamics import DIFFUSION_STATUSES
    from xsvs_bluesky.derived._layout import D_STATUSES

    assert D_STATUSES == DIFFUSION_STATUSES


def test_readers_of_the_layout_import_neither_numba_nor_scipy():
    import subprocess
    import sys

    code = (
        "import sys, xsvs_bluesky.results, xsvs_bluesky.derived\n"
        "print(sorted(m for m in ('numba', 'scipy', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "[]", done.stderr
