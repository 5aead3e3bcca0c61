"""SIGINT and SIGTERM stop a RunEngine's plan at once, marked abort (private).

bluesky's RunEngine handles Ctrl-C itself (``SigintHandler``): the first one
requests a *deferred* pause, which a fly scan reaches only at its end, and a
KeyboardInterrupt raised in the main thread while the RunEngine runs (as a
command line's SIGTERM handler does) panics it: its run ends ``fail`` with a
traceback.  A command that wants Ctrl-C to mean "stop now, keep what was
taken" makes its RunEngine with ``context_managers=[]`` and runs the plan
through :class:`AbortOnSignal`: the first SIGINT or SIGTERM

1. is recorded (:attr:`AbortOnSignal.signum`), in the signal handler only;
2. makes a watcher thread call ``RE.abort(reason)`` while the plan runs (the
   RunEngine runs the plan's cleanup: the detector stops, its files are
   closed, the run gets its stop document with ``exit_status="abort"`` and
   the reason, e.g. ``interrupted (SIGINT, Ctrl-C)``); a signal before the
   plan starts keeps it from starting;
3. then calls ``then(reason)`` in that thread (e.g.
   :meth:`~xsvs_bluesky.live.LiveSession.interrupt`: the analysis stops too).

The caller finishes its work (stores the runs) and then ends as it likes
(the command line: exit code 130 or 143).  A second signal is ignored (the
cleanup is bounded by the writers' retry time); a third one is handed to the
handler that was there before (KeyboardInterrupt: the process ends at once).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

__all__ = ["AbortOnSignal", "signal_reason"]

logger = logging.getLogger(__name__)

#: signals counted before the previous handler is called again
_LAST_IGNORED = 2


def signal_reason(signum: int) -> str:
    """Return the stop reason of a run ended by ``signum``.

    ``interrupted (SIGINT, Ctrl-C)`` or ``interrupted (signal SIGTERM)``, as
    ``xsvs-bluesky replay`` writes it.
    """
    if signum == signal.SIGINT:
        return "interrupted (SIGINT, Ctrl-C)"
    return f"interrupted (signal {signal.Signals(signum).name})"


class _QuietAbort(logging.Filter):
    """Drop what the RunEngine logs of an abort we asked for.

    ``Run aborted`` with the traceback of the cancelled task, and the
    tracing's ``No open traces left to close!`` (``RE.abort`` ends the run's
    trace before the run's ``close_run``).
    """

    _TEXTS = ("Run aborted", "No open traces left to close!")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._TEXTS


class AbortOnSignal:
    """Stop a RunEngine's plan on SIGINT or SIGTERM: ``RE.abort(reason)``.

    A context manager: signal handlers are installed on entry (main thread
    only; elsewhere nothing is installed) and the previous ones restored on
    exit.  Run the plan with :meth:`run`.

    Parameters
    ----------
    RE : bluesky.RunEngine
        Made with ``context_managers=[]`` (its own SIGINT handler would
        replace this one while the plan runs).
    then : callable, optional
        Called with the reason once the plan is stopped (or at once when
        none runs), in a thread of its own.
    signals : iterable of int
        Default SIGINT and SIGTERM.

    Attributes
    ----------
    signum : int or None
        The first signal received.
    reason : str
        Its :func:`signal_reason` (empty before).
    """

    def __init__(
        self,
        RE: Any,
        *,
        then: Callable[[str], Any] | None = None,
        signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        self.RE = RE
        self.then = then
        self.signals = tuple(signals)
        self.signum: int | None = None
        self.reason = ""
        self._count = 0
        self._previous: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._running = False  # the plan runs (RE.__call__ not returned)
        self._plan_over = threading.Event()
        self._received = threading.Event()
        self._released = False
        self._watcher: threading.Thread | None = None
        self._quiet = _QuietAbort()

    # ---------------------------------------------------------- lifetime
    def __enter__(self) -> AbortOnSignal:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._watcher = threading.Thread(
            target=self._watch, name="xsvs-abort-on-signal", daemon=True
        )
        self._watcher.start()
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)
        logging.getLogger("bluesky").addFilter(self._quiet)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        logging.getLogger("bluesky").removeFilter(self._quiet)
        self._released = True
        self._plan_over.set()
        self._received.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)

    @property
    def interrupted(self) -> bool:
        """Whether a signal was received."""
        return self.signum is not None

    # ---------------------------------------------------------- the plan
    def run(self, plan: Any) -> tuple[str, ...] | None:
        """Run ``plan`` on the RunEngine; None if a signal stopped or kept it.

        The plan does not start after a signal.  Other errors of the plan
        are raised as the RunEngine raises them.
        """
        from bluesky.preprocessors import msg_mutator
        from bluesky.utils import RunEngineInterrupted

        with self._lock:
            if self.interrupted:
                self._plan_over.set()
                return None
            self._running = True
        try:
            uids = self.RE(msg_mutator(plan, self._with_reason))
        except RunEngineInterrupted:
            if not self.interrupted:
                raise  # paused by someone else: not ours to end
            return None
        finally:
            with self._lock:
                self._running = False
            self._plan_over.set()
        return None if self.interrupted else tuple(str(u) for u in uids)

    def _with_reason(self, msg: Any) -> Any:
        # the run decorators close an aborted run with reason=None: the
        # reason given to RE.abort would be lost
        if msg.command == "close_run" and self.interrupted:
            if msg.kwargs.get("exit_status") == "abort" and not msg.kwargs.get(
                "reason"
            ):
                return msg._replace(kwargs={**msg.kwargs, "reason": self.reason})
        return msg

    # ---------------------------------------------------------- signals
    def _handler(self, signum: int, frame: Any) -> None:
        # in the main thread between two bytecodes: record, wake the watcher
        self._count += 1
        if self.signum is None:
            self.signum, self.reason = signum, signal_reason(signum)
            self._received.set()
            return
        if self._count > _LAST_IGNORED:
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:  # e.g. SIGTERM: end as it would
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

    def _watch(self) -> None:
        self._received.wait()
        if self._released and not self.interrupted:
            return
        self._abort()
        if self.then is not None:
            try:
                self.then(self.reason)
            except Exception:
                logger.exception("stopping after %s failed", self.reason)

    def _abort(self) -> None:
        """``RE.abort`` while the plan runs; nothing once it is over."""
        while not self._plan_over.is_set():
            with self._lock:
                running = self._running
            if running and not self.RE.state.is_idle:
                # the RunEngine prints "Aborting: ..." on stdout: not ours
                with contextlib.redirect_stdout(io.StringIO()):
                    try:
                        self.RE.abort(self.reason)
                        return
                    except RuntimeError as err:  # TransitionError: try again
                        if self.RE.state == "panicked":
                            logger.error("could not abort the plan: %s", err)
                            return
            self._plan_over.wait(0.02)
