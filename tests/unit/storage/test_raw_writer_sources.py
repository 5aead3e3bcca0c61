"""The raw-run writer's data sources and metadata against TiledWriter's own.

No server: the HDF5 data source a data key gets (shape, chunks, dims,
parameters, assets, node metadata) is compared with what
``bluesky_tiled_plugins``' HDF5 consolidator builds for the same
StreamResource, descriptor and StreamDatum documents, for the parameter
sets a detector may send; and the clipping of metadata numbers with
TiledWriter's.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from xsvs_bluesky.errors import StorageError
from xsvs_bluesky.storage._raw_writer import RawRunWriter, is_raw_replay_run
from xsvs_bluesky.storage._raw_writer._sources import (
    ExternalKey,
    json_safe,
    normalize_descriptor,
)

URI = "file://localhost/data/run/exposure_0.h5"


def _resource(**parameters: Any) -> dict[str, Any]:
    return {
        "uid": "sr-1",
        "data_key": "det",
        "mimetype": "application/x-hdf5",
        "uri": URI,
        "parameters": {"dataset": "/entry/data/data", **parameters},
    }


def _descriptor(**key: Any) -> dict[str, Any]:
    spec = {"source": "sim", "dtype": "array", "shape": [1, 16, 12]}
    spec.update(key)
    return {
        "uid": "d-1",
        "name": "primary",
        "run_start": "r-1",
        "time": 1.0,
        "data_keys": {"det": {**spec, "external": "STREAM:"}},
        "object_keys": {"det": ["det"]},
    }


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "replay": ({"chunk_shape": [1, 16, 12]}, {"dtype_numpy": "<u2"}),
    "no chunk shape": ({}, {"dtype_numpy": "<u4"}),
    "leading chunks": ({"chunk_shape": [5]}, {"dtype_numpy": "<f4"}),
    "dims": (
        {"chunk_shape": [1, 16, 12]},
        {"dtype_numpy": "<u2", "dims": ["one", "y", "x"]},
    ),
    "multiplier": ({"multiplier": 3}, {"dtype_numpy": "<u2", "shape": [16, 12]}),
    "spec and swmr": (
        {"spec": "AD_HDF5_SWMR_STREAM", "swmr": False, "locking": True},
        {"dtype_numpy": "<i4"},
    ),
    "scalar per row": ({}, {"dtype_numpy": "<f8", "shape": [1]}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rows", [[7], [7, 5]])
def test_data_source_equals_the_consolidators(case: str, rows: list[int]) -> None:
    from bluesky_tiled_plugins.writing.consolidators import consolidator_factory
    from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

    parameters, key = CASES[case]
    descriptor = normalize_descriptor(_descriptor(**key))
    resource = _resource(**parameters)
    normalized: list[Any] = []
    normalizer = RunNormalizer()
    normalizer.subscribe(lambda name, doc: normalized.append((name, doc)))
    normalizer("stream_resource", copy.deepcopy(resource))
    consolidator = consolidator_factory(normalized[-1][1], descriptor)
    ours = ExternalKey(resource, descriptor["data_keys"]["det"])
    start = 0
    for n in rows:
        datum = {
            "indices": {"start": start, "stop": start + n},
            "seq_nums": {"start": start + 1, "stop": start + n + 1},
        }
        consolidator.consume_stream_datum(datum)
        ours.rows += n
        start += n
    theirs = asdict(consolidator.get_data_source())
    mine = asdict(ours.data_source())
    for name in ("structure", "parameters", "mimetype", "assets", "properties"):
        assert mine[name] == theirs[name], name
    assert mine["management"] == theirs["management"]
    assert ours.metadata == consolidator.metadata


def test_descriptor_is_normalized_as_tiled_writer_normalizes_it() -> None:
    from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

    raw = _descriptor(dtype_str="<u2", shape=None)
    raw["data_keys"]["temp"] = {"source": "sim", "dtype": "number", "shape": []}
    raw["configuration"] = {
        "det": {
            "data": {"det-gain": 1},
            "timestamps": {"det-gain": 0.0},
            "data_keys": {
                "det-gain": {"source": "sim", "dtype": "integer", "shape": []}
            },
        }
    }
    out: list[Any] = []
    normalizer = RunNormalizer()
    normalizer.subscribe(lambda name, doc: out.append(doc))
    normalizer("descriptor", copy.deepcopy(raw))
    ours = normalize_descriptor(raw)
    assert ours["data_keys"]["det"]["object_name"] == "det"
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(out[-1]))


@pytest.mark.parametrize(
    "value",
    [
        2**60,
        -(2**60),
        2**53 - 1,
        1.0e308,
        float("inf"),
        -float("inf"),
        3.5,
        True,
        "text",
        {"a": [1, 2**70, {"b": (4, 2.0**80)}]},
        np.arange(3),
    ],
)
def test_metadata_numbers_are_clipped_as_tiled_writer_clips_them(value: Any) -> None:
    from bluesky_tiled_plugins.utils import truncate_json_overflow

    assert json_safe(value) == truncate_json_overflow(value)


def test_only_replayed_runs_and_their_documents_are_taken() -> None:
    assert is_raw_replay_run({"plan_type": "legacy_replay"})
    assert not is_raw_replay_run({"plan_name": "xsvs_series"})
    with pytest.raises(StorageError, match="'datum' document"):
        RawRunWriter(container=None)("datum", {})
    bad = _resource(template="img_%d.h5")
    with pytest.raises(StorageError, match="single HDF5 files"):
        ExternalKey(bad, _descriptor()["data_keys"]["det"])
    with pytest.raises(StorageError, match="reserved"):
        normalize_descriptor({**_descriptor(), "data_keys": {"time": {}}})
