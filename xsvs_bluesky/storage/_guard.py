"""What a Tiled writer has stored of a run, to end it honestly (private).

:class:`WriterGuard` wraps the TiledWriter of a replay or re-analysis: it
records whether the run's start document reached the writer (from then on
the run's files must be kept) and whether a stop was handed to it, and can
stop a run left open with ``abort`` or ``fail`` (:meth:`WriterGuard.end_open`).
A writer that began a stop is never given a second one: TiledWriter would
register the cached frames twice.

Test hook: the environment variable ``XSVS_TEST_SIGNAL`` =
``<raw|derived>.<document name>:<n>:<SIGNAL>[:<delay s>[:<pid>]]`` makes the
process send itself (or process ``pid``: the Tiled server) that signal when
the n-th such document reaches the writer of the raw or derived run: as
soon as the writer has handled it, or ``delay`` seconds after the writer
received it (to land inside the writer's work).  Only the tests set it
(``tests/integration/test_replay_signals.py``, ``test_outage.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["TEST_SIGNAL_ENV", "WriterGuard"]

logger = logging.getLogger(__name__)

TEST_SIGNAL_ENV = "XSVS_TEST_SIGNAL"


class WriterGuard:
    """A ``(name, doc)`` writer that remembers what reached it.

    Parameters
    ----------
    writer : callable
        The TiledWriter (or any consumer) of one run at a time.
    label : str
        ``"raw"`` or ``"derived"``: the name the test hook uses.

    Attributes
    ----------
    uid : str or None
        uid of the last run whose start document reached the writer.
    stop_begun : bool
        A stop document of that run was handed to the writer.
    stored_status : str or None
        The exit status of that stop, once the writer handled it whole.
    """

    def __init__(self, writer: Callable[[str, dict[str, Any]], Any], label: str):
        self.writer = writer
        self.label = label
        self.uid: str | None = None
        self.stop_begun = False
        self.stored_status: str | None = None
        self._counts: dict[str, int] = {}
        self._hook = _parse_hook(os.environ.get(TEST_SIGNAL_ENV, ""), label)

    @property
    def started(self) -> bool:
        """Whether a start document was handed to the writer."""
        return self.uid is not None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.uid = str(doc["uid"])
            self.stop_begun, self.stored_status = False, None
        elif name == "stop":
            self.stop_begun = True
        fire = self._count(name)
        if fire is not None and fire > 0:
            _send_later(fire)
        self.writer(name, doc)
        if name == "stop":
            self.stored_status = str(doc.get("exit_status"))
        if fire == 0:
            _send_now()

    def end_open(self, status: str, reason: str) -> bool:
        """Stop the open run with ``status`` unless a stop reached the writer.

        Returns True when a stop was written; errors are logged, not raised.
        """
        if self.uid is None or self.stop_begun:
            return False
        doc = {
            "uid": str(uuid.uuid4()),
            "time": time.time(),
            "run_start": self.uid,
            "exit_status": status,
            "reason": reason,
            "num_events": {},
        }
        try:
            self("stop", doc)
        except Exception:
            logger.exception("could not mark run %s %r", self.uid, status)
            return False
        return True

    def _count(self, name: str) -> float | None:
        if self._hook is None or name != self._hook[0]:
            return None
        self._counts[name] = n = self._counts.get(name, 0) + 1
        return self._hook[2] if n == self._hook[1] else None


_SIGNUM: signal.Signals | None = None
_TARGET: int | None = None


def _parse_hook(text: str, label: str) -> tuple[str, int, float] | None:
    """``(document name, n, delay)`` of the test hook for ``label``, or None."""
    global _SIGNUM, _TARGET
    parts = text.split(":")
    if len(parts) not in (3, 4, 5) or not parts[0].startswith(f"{label}."):
        return None
    _SIGNUM = signal.Signals[parts[2]]
    delay = float(parts[3]) if len(parts) >= 4 else 0.0
    _TARGET = int(parts[4]) if len(parts) == 5 else None
    return parts[0].removeprefix(f"{label}."), int(parts[1]), delay


def _send_now() -> None:
    assert _SIGNUM is not None
    os.kill(os.getpid() if _TARGET is None else _TARGET, _SIGNUM)


def _send_later(delay: float) -> None:
    timer = threading.Timer(delay, _send_now)
    timer.daemon = True
    timer.start()
