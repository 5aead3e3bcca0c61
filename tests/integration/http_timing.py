"""Timing of HTTP requests on a kept-alive connection (a helper of the tests)."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit


def kept_alive_seconds(uri: str, requests: int = 8) -> float:
    """Fastest of ``requests`` GETs of the server's health check on one connection.

    The connection's first answer is not timed.  With Nagle's algorithm on
    the server's sockets every answer after the first waits for the client's
    delayed acknowledgement (>= 40 ms on Linux); the health check itself
    takes a few milliseconds.
    """
    parts = urlsplit(uri)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    best = float("inf")
    try:
        for i in range(requests + 1):
            t0 = time.perf_counter()
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            if i:
                best = min(best, time.perf_counter() - t0)
    finally:
        connection.close()
    return best
