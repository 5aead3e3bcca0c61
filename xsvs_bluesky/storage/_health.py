"""How long a writer waits for a failing Tiled server (private).

The Tiled client retries a failed request for up to 45 s (its
``TILED_RETRY_TIMEOUT``, read once per process) and a read for up to 30 s
each time.  The spooling writers (:mod:`._spool`) bound that per server
instead, without changing the process's other Tiled clients: their own
Tiled context sends its requests through :class:`GuardedTransport`, which
notes when the server stops answering (no connection, a timeout, an HTTP
5xx) in the :class:`ServerHealth` shared by every writer of that server.
Once the server has failed for ``retry_s`` without answering, the transport
raises :class:`~xsvs_bluesky.errors.ServerUnavailableError` (not an
``httpx`` error: the Tiled client does not retry it) for every request,
at once, until :meth:`ServerHealth.probe` finds the server answering again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from xsvs_bluesky.errors import ServerUnavailableError

__all__ = [
    "GuardedTransport",
    "ServerHealth",
    "describe_error",
    "server_health",
    "why_unanswered",
    "writer_root",
]

logger = logging.getLogger(__name__)

#: one ServerHealth per server address, shared by the writers of a process
_BY_URI: dict[str, ServerHealth] = {}
_LOCK = threading.Lock()


def describe_error(err: BaseException) -> str:
    """One line: ``ConnectError: [Errno 111] Connection refused``."""
    if isinstance(err, ServerUnavailableError):
        return err.cause
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text}"


class ServerHealth:
    """Whether one Tiled server answers, as its writers saw it.

    Parameters
    ----------
    uri : str
        The server's API address.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._down = False
        #: the first failure of the current outage (one line), or None
        self.cause: str | None = None

    @property
    def down(self) -> bool:
        """Whether writers give up on the server until a probe finds it."""
        return self._down

    def check(self, retry_s: float) -> None:
        """Raise ServerUnavailableError if the server failed for ``retry_s``."""
        with self._lock:
            if not self._down and self._failing_since is not None:
                self._down = time.monotonic() - self._failing_since > retry_s
            if self._down:
                raise ServerUnavailableError(self.uri, self.cause or "no answer")

    def failed(self, cause: str) -> None:
        """Note a request that got no answer (or an HTTP 5xx)."""
        with self._lock:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                self.cause = cause
                logger.info("Tiled server at %s failed: %s", self.uri, cause)

    def answered(self) -> None:
        """Note a request the server answered."""
        with self._lock:
            if not self._down:
                self._failing_since = None

    def probe(self, timeout_s: float = 2.0) -> bool:
        """Ask the server once (no retry); True if it answers (the outage ends)."""
        import httpx

        try:
            response = httpx.get(
                self.uri.rstrip("/") + "/", timeout=timeout_s, trust_env=False
            )
            ok = response.status_code < 500
        except httpx.HTTPError as err:
            logger.debug("probe of %s: %s", self.uri, describe_error(err))
            ok = False
        if ok:
            with self._lock:
                if self._down or self._failing_since is not None:
                    logger.info("Tiled server at %s answers again", self.uri)
                self._down, self._failing_since, self.cause = False, None, None
        return ok


def why_unanswered(uri: str, timeout_s: float = 5.0) -> str | None:
    """Ask the server at ``uri`` once (no retry); why it does not answer, or None.

    The reason is one line (``ConnectError: [Errno 111] Connection refused``,
    ``HTTP 503``); None when the server answers (any status below 500).
    """
    import httpx

    try:
        response = httpx.get(uri.rstrip("/") + "/", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as err:
        return describe_error(err)
    if response.status_code >= 500:
        return f"HTTP {response.status_code}"
    return None


def server_health(uri: str) -> ServerHealth:
    """Return the :class:`ServerHealth` of the server at ``uri`` (one per process)."""
    key = uri.rstrip("/")
    with _LOCK:
        health = _BY_URI.get(key)
        if health is None:
            health = _BY_URI[key] = ServerHealth(key)
        return health


class GuardedTransport:
    """An ``httpx`` transport that reports to, and obeys, a :class:`ServerHealth`.

    Parameters
    ----------
    inner : httpx.BaseTransport
        The transport that sends the requests.
    health : ServerHealth
    retry_s : float
        How long the server may fail before requests stop being sent.
    """

    def __init__(self, inner: Any, health: ServerHealth, retry_s: float) -> None:
        self.inner = inner
        self.health = health
        self.retry_s = retry_s

    def handle_request(self, request: Any) -> Any:
        """Send ``request`` unless the server is given up on."""
        import httpx

        self.health.check(self.retry_s)
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError as err:
            self.health.failed(describe_error(err))
            raise
        if response.status_code >= 500:
            self.health.failed(f"HTTP {response.status_code} from {request.url.path}")
        else:
            self.health.answered()
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()

    def __enter__(self) -> GuardedTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _no_indicator() -> None:
    """Show nothing (the writers' Tiled retries are reported by the writers)."""


def writer_root(container: Any, *, retry_s: float, timeout_s: float) -> Any:
    """Make a root client of ``container``'s server whose requests are guarded.

    Its own Tiled context (connection pool, timeouts ``timeout_s``), so the
    bound applies to the writer only.  Makes a request: call it where a
    failure is handled.
    """
    import httpx
    from tiled.client import from_context
    from tiled.client.context import Context

    from xsvs_bluesky.storage._light import writer_clients

    source = container.context
    uri = str(source.api_uri)
    context = Context(
        uri,
        api_key=source.api_key,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        trust_env=False,
    )
    # the transport is wrapped as Tiled wraps its own for in-process apps
    http = context.http_client
    http._transport = GuardedTransport(http._transport, server_health(uri), retry_s)
    # the writer reports a failing server itself (its runs go to the backup):
    # no "Retrying..." line of Tiled's on the terminal of the acquisition
    context.signal_retry = _no_indicator
    context.signal_retry_resolved = _no_indicator
    try:
        # plain container clients: no Bluesky client classes (the writers
        # need none; a TiledWriter gets its own, RunWriter.tiled_writer)
        return from_context(context, structure_clients=writer_clients())
    except BaseException:
        context.close()
        raise
