"""Documents on the wire: JSON and msgpack decoded, pickle refused unread."""

from __future__ import annotations

import json
import pickle

import numpy as np
import ormsgpack
import pytest

from xsvs_bluesky.listen import (
    PickleRefusedError,
    WireFormatError,
    decode_payload,
    encode_json,
    encode_msgpack,
)

DOC = {"uid": "abc", "time": 1.5, "data": {"img": np.arange(6).reshape(2, 3)}}


@pytest.mark.parametrize("encode", [encode_json, encode_msgpack])
def test_round_trip_turns_arrays_into_lists(encode):
    doc = decode_payload(encode(DOC))
    assert doc == {"uid": "abc", "time": 1.5, "data": {"img": [[0, 1, 2], [3, 4, 5]]}}


def test_bluesky_nats_payloads_decode():
    payload = ormsgpack.packb(DOC, option=ormsgpack.OPT_SERIALIZE_NUMPY)
    assert decode_payload(payload)["data"]["img"] == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickles_are_refused_and_never_loaded(protocol, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("pickle.loads called")

    monkeypatch.setattr(pickle, "loads", boom)
    payload = pickle.dumps({"uid": "x"}, protocol=protocol)
    with pytest.raises(PickleRefusedError, match="pickled documents: refused"):
        decode_payload(payload, where="the 0MQ publisher at h:1")


@pytest.mark.parametrize("payload", [b"\xc1garbage", json.dumps([1, 2]).encode()])
def test_other_payloads_are_a_format_error(payload):
    with pytest.raises(WireFormatError) as info:
        decode_payload(payload)
    assert not isinstance(info.value, PickleRefusedError)
