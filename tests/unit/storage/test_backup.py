"""The local backup of runs: its JSON lines, its lock, and the writers' guard."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from xsvs_bluesky.errors import ServerUnavailableError, StorageError
from xsvs_bluesky.storage import backup_files
from xsvs_bluesky.storage._backup import BackupFile, Journal, decode_line, encode_line
from xsvs_bluesky.storage._health import GuardedTransport, ServerHealth


def test_numpy_values_come_back_with_their_dtype_shape_and_bytes() -> None:
    rng = np.random.default_rng(7)
    doc: dict[str, Any] = {
        "frames": rng.integers(0, 9, (2, 3, 4)).astype(">u2"),  # big-endian
        "image": rng.random((5, 4)).astype(np.float32)[:, ::2],  # not contiguous
        "f32": np.float32(0.1),
        "i64": np.int64(-3),
        "flag": np.bool_(True),
        "fields": np.zeros(2, dtype=[("x", "<f4"), ("n", "<i2")]),
        "text": np.array(["ab", "c"]),
        "empty": np.zeros((0, 3)),
        "nested": {"list": [np.uint8(4), 1.5, None, "s"], "nan": float("nan")},
        "tuple": (1, 2),
    }
    name, back = decode_line(encode_line("event", doc))
    assert name == "event"
    for key in ("frames", "image", "fields", "text", "empty"):
        assert back[key].dtype == doc[key].dtype, key
        assert back[key].shape == doc[key].shape, key
        assert back[key].tobytes() == np.ascontiguousarray(doc[key]).tobytes(), key
    for key in ("f32", "i64", "flag"):
        assert type(back[key]) is type(doc[key]) and back[key] == doc[key], key
    assert type(back["nested"]["list"][0]) is np.uint8
    assert back["nested"]["list"][1:] == [1.5, None, "s"]
    assert np.isnan(back["nested"]["nan"])
    assert back["tuple"] == [1, 2]  # JSON has lists only (as Tiled stores them)


def test_a_line_is_plain_json_without_pickle() -> None:
    arrays = {"a": np.arange(3, dtype="<i4"), "b": np.ones(2), "c": "@x:0@"}
    line = encode_line("event", arrays)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    item = json.loads(line)
    assert item["doc"]["a"]["__xsvs_ndarray__"]["descr"] == "<i4"
    assert item["doc"]["b"]["__xsvs_ndarray__"]["data"] == "AAAAAAAA8D8AAAAAAADwPw=="
    assert item["doc"]["c"] == "@x:0@"  # a string like the splicing token stays
    with pytest.raises(TypeError, match="cannot be written"):
        encode_line("event", {"a": object()})


def _journal(folder: Path, uid: str = "run-1") -> Journal:
    journal = Journal(folder, uid, ["raw"], "http://127.0.0.1:1/api/v1")
    journal.write("start", {"uid": uid, "time": 1.0})
    journal.write("event", {"data": {"x": np.arange(2)}, "seq_num": 1})
    return journal


def test_a_journal_is_locked_while_written_and_read_back_after(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    assert journal.path == tmp_path / "run-1.jsonl"
    assert BackupFile.open(journal.path) is None  # locked: still being written
    journal.write("stop", {"uid": "s", "run_start": "run-1", "exit_status": "success"})
    journal.close()
    assert backup_files(tmp_path) == [journal.path]
    backup = BackupFile.open(journal.path)
    assert backup is not None
    with backup:
        assert backup.catalog == ("raw",)
        assert backup.header["server"] == "http://127.0.0.1:1/api/v1"
        docs = list(backup.documents())
        assert BackupFile.open(journal.path) is None  # the reader holds it now
    assert [n for n, _ in docs] == ["start", "event", "stop"]
    np.testing.assert_array_equal(docs[1][1]["data"]["x"], [0, 1])
    second = Journal(tmp_path, "run-1", ["raw"], "u")  # a name taken: another file
    assert second.path.name == "run-1.1.jsonl"
    second.close(delete=True)
    assert not second.path.exists()


def test_a_last_line_cut_short_is_skipped_a_damaged_one_refused(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.close()
    with open(journal.path, "a") as fh:
        fh.write('{"name": "event", "doc": {"da')  # killed mid-line
    backup = BackupFile.open(journal.path)
    assert backup is not None
    with backup:
        assert [n for n, _ in backup.documents()] == ["start", "event"]
        assert backup.truncated
    with open(journal.path, "ab") as fh:
        fh.write(b"\n" + encode_line("stop", {"uid": "s"}))
    backup = BackupFile.open(journal.path)
    assert backup is not None
    with backup, pytest.raises(StorageError, match="line 4: not a document"):
        list(backup.documents())
    other = tmp_path / "notes.jsonl"
    other.write_text('{"name": "start"}\n')
    with pytest.raises(StorageError, match="not a run backup"):
        BackupFile.open(other)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once closed


def test_the_guard_stops_sending_after_retry_s_until_a_probe_answers() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}/api/v1"
    health = ServerHealth(uri)
    transport = GuardedTransport(httpx.HTTPTransport(), health, retry_s=0.3)
    with httpx.Client(transport=transport, timeout=2) as client:  # type: ignore[arg-type]
        with pytest.raises(httpx.ConnectError):
            client.get(uri)  # refused: the outage starts
        assert not health.down and health.cause and "ConnectError" in health.cause
        with pytest.raises(httpx.ConnectError):
            client.get(uri)  # within retry_s: tried again
        time.sleep(0.35)
        t0 = time.perf_counter()
        with pytest.raises(ServerUnavailableError, match=uri) as err:
            client.get(uri)  # given up: not sent
        assert time.perf_counter() - t0 < 0.1
        assert health.down and "ConnectError" in err.value.cause
        assert not isinstance(err.value, httpx.HTTPError)  # Tiled does not retry it
        assert not health.probe(timeout_s=1)
        assert health.down
