"""The raw run's feed: one StreamDatum per exposure, in order, on a worker thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from event_model import compose_run
from event_model.documents.stream_datum import StreamRange

from xsvs_bluesky.replay._feed import ExposureFeed


class Recorder:
    """A writer that records what it gets and on which thread."""

    def __init__(self, fail_at: str = "") -> None:
        self.docs: list[tuple[str, dict[str, Any]]] = []
        self.threads: set[str] = set()
        self.fail_at = fail_at

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self.threads.add(threading.current_thread().name)
        if name == self.fail_at:
            raise OSError(f"no server for {name}")
        self.docs.append((name, doc))


def _run_docs(
    exposures: int = 2, datums: int = 3, frames: int = 5
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    bundle = compose_run()
    docs: list[tuple[str, dict[str, Any]]] = [("start", dict(bundle.start_doc))]
    for e in range(exposures):
        descriptor = bundle.compose_descriptor(
            name=f"exposure_{e}",
            data_keys={
                "det": {
                    "source": "s",
                    "dtype": "array",
                    "shape": [1, 2, 2],
                    "external": "STREAM:",
                }
            },
        ).descriptor_doc
        assert bundle.compose_stream_resource is not None
        resource = bundle.compose_stream_resource(
            mimetype="application/x-hdf5",
            uri=f"file://localhost/tmp/e{e}.h5",
            data_key="det",
            parameters={},
        )
        docs.append(("descriptor", dict(descriptor)))
        docs.append(("stream_resource", dict(resource.stream_resource_doc)))
        for d in range(datums):
            first, last = d * frames, (d + 1) * frames
            datum = resource.compose_stream_datum(
                indices=StreamRange(start=first, stop=last),
                seq_nums=StreamRange(start=first + 1, stop=last + 1),
                descriptor=descriptor,
            )
            docs.append(("stream_datum", dict(datum)))
    return docs, dict(bundle.compose_stop(exit_status="success"))


def test_one_stream_datum_per_exposure_in_order_from_a_worker_thread():
    docs, stop = _run_docs()
    writer = Recorder()
    feed = ExposureFeed(writer)
    for name, doc in docs:
        feed(name, dict(doc))
    feed.flush()
    feed("stop", dict(stop))
    names = [n for n, _ in writer.docs]
    assert names == [
        "start",
        "descriptor",
        "stream_resource",
        "stream_datum",
        "descriptor",
        "stream_resource",
        "stream_datum",
        "stop",
    ]
    datums = [d for n, d in writer.docs if n == "stream_datum"]
    firsts = [d for n, d in docs if n == "stream_datum"][::3]
    for joined, first in zip(datums, firsts, strict=True):
        assert joined["uid"] == first["uid"]
        assert joined["stream_resource"] == first["stream_resource"]
        assert joined["indices"] == {"start": 0, "stop": 15}
        assert joined["seq_nums"] == {"start": 1, "stop": 16}
    assert writer.threads == {"xsvs-raw-writer"}


def test_a_gap_or_another_resource_is_not_joined():
    docs, stop = _run_docs(exposures=1, datums=3)
    datums = [d for n, d in docs if n == "stream_datum"]
    datums[2] = {**datums[2], "indices": {"start": 11, "stop": 15}}
    writer = Recorder()
    feed = ExposureFeed(writer)
    for name, doc in docs:
        feed(name, dict(doc) if name != "stream_datum" else datums.pop(0))
    feed("stop", dict(stop))
    ranges = [d["indices"] for n, d in writer.docs if n == "stream_datum"]
    assert ranges == [{"start": 0, "stop": 10}, {"start": 11, "stop": 15}]


def test_a_writer_error_is_raised_once_then_only_the_stop_is_written():
    docs, stop = _run_docs(exposures=2)
    writer = Recorder(fail_at="stream_resource")
    feed = ExposureFeed(writer)
    for name, doc in docs[:3]:
        feed(name, dict(doc))
    feed.flush()
    while feed._error is None:  # the worker got to the failing document
        threading.Event().wait(0.01)
    with pytest.raises(OSError, match="no server for stream_resource"):
        for name, doc in docs[3:]:
            feed(name, dict(doc))
    feed("stop", {**stop, "exit_status": "fail"})  # as the replay ends a failed run
    assert [n for n, _ in writer.docs] == ["start", "descriptor", "stop"]
    assert writer.docs[-1][1]["exit_status"] == "fail"


def test_an_error_not_raised_before_the_stop_marks_the_run_failed():
    docs, stop = _run_docs(exposures=1)
    writer = Recorder(fail_at="stream_datum")
    feed = ExposureFeed(writer)
    for name, doc in docs:
        feed(name, dict(doc))
    feed.flush()  # the failing datum is written during the next call
    with pytest.raises(OSError, match="no server for stream_datum"):
        feed("stop", dict(stop))
    name, written = writer.docs[-1]
    assert name == "stop" and written["exit_status"] == "fail"
    assert "no server for stream_datum" in written["reason"]


def test_a_failing_stop_is_raised():
    docs, stop = _run_docs(exposures=1)
    feed = ExposureFeed(Recorder(fail_at="stop"))
    for name, doc in docs:
        feed(name, dict(doc))
    with pytest.raises(OSError, match="no server for stop"):
        feed("stop", dict(stop))
