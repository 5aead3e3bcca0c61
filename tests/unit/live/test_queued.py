"""QueuedCallback.interrupt: the backlog is dropped, the call comes next."""

from __future__ import annotations

import threading

from xsvs_bluesky.live import QueuedCallback


def test_interrupt_drops_the_backlog_keeps_run_openers_and_calls_next():
    seen: list[str] = []
    gate = threading.Event()

    def consumer(name, doc):
        if name == "start" and not seen:
            gate.wait(10)  # the worker is busy: the rest stays queued
        seen.append(f"{name}{doc.get('n', '')}")

    q = QueuedCallback(consumer)
    q("start", {})
    for n in range(5):
        q("stream_datum", {"n": n})
    q("descriptor", {"n": 9})
    q("stop", {})
    dropped = q.interrupt(lambda: seen.append("abort"), keep={"start", "descriptor"})
    q("stream_datum", {"n": 6})  # after the interrupt: dropped as it comes
    gate.set()
    assert q.wait(timeout=10)
    # the first start was being processed; of the queue the descriptor is
    # kept (opens a stream), five frames and the stop are dropped
    assert dropped == 6
    assert seen == ["start", "descriptor9", "abort"]
    q.close()


def test_interrupt_during_close_still_ends_the_worker():
    q = QueuedCallback(lambda name, doc: None)
    calls: list[int] = []
    q.close()
    assert q.interrupt(lambda: calls.append(1)) == 0
    assert calls == []  # a closed worker makes no call
