"""The buffered publisher never holds the RunEngine longer than its bound."""

from __future__ import annotations

import threading
import time

from xsvs_bluesky.listen import BufferedPublisher


def test_a_stuck_bus_costs_at_most_the_put_timeout_per_document():
    release = threading.Event()
    got = []

    def stuck(name, doc):  # as NATSPublisher with the server down
        release.wait(10)
        got.append(name)

    pub = BufferedPublisher(stuck, maxsize=5, put_timeout_s=0.05)
    t0 = time.perf_counter()
    for i in range(20):
        pub("event", {"seq_num": i})
    elapsed = time.perf_counter() - t0
    # 1 in the worker + 5 buffered; 14 dropped after 0.05 s each
    assert pub.dropped == 14
    assert elapsed < 14 * 0.05 + 0.5
    release.set()
    assert pub.close(timeout_s=5)
    assert got == ["event"] * 6


def test_documents_are_published_in_order_and_failures_counted():
    got = []

    def flaky(name, doc):
        if doc["i"] == 3:
            raise ConnectionError("bus down")
        got.append(doc["i"])

    pub = BufferedPublisher(flaky)
    for i in range(8):
        pub("event", {"i": i})
    assert pub.close()
    assert got == [0, 1, 2, 4, 5, 6, 7] and pub.failed == 1
    pub("event", {"i": 9})  # after close: ignored
    assert got[-1] == 7
