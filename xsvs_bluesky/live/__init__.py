"""Live feedback from a derived XSVS run: text tables, progress and a figure.

Each class is an :class:`event_model.DocumentRouter` that consumes the
documents of the *derived* run (``plan_name = "xsvs_analysis"``), so it
works wherever those documents flow: attached to the analysis callback,
``XSVSCallback(emit=[writer, LiveXSVSTable(), LiveXSVSFigure()])``, on a
remote consumer, or replaying a stored run.  Documents of other runs are
ignored.

- :class:`ProgressPrinter`: one line per progress event (throttled) with
  frames so far and frames/s.
- :class:`LiveXSVSTable`: a text table (q, kbar, beta +- err) per exposure
  as soon as it is complete, the dynamics fit, and progress lines.
- :class:`LiveXSVSFigure`: ``beta(t_e)`` per q while frames arrive, then the
  pyxsvs summary figure; ``save_path=`` writes a PNG (headless).
- :func:`format_dynamics_flags`: the text of a dynamics fit with its flags,
  shared with ``analyze --dynamics`` and the demo;
  :func:`diffusion_from_record` rebuilds the ``D`` fit of a ``dynamics``
  stream.

The live wiring (:class:`LiveSession`, :class:`QueuedCallback`,
:func:`close_engine`) and :class:`AbortOnSignal` (SIGINT/SIGTERM stop a
RunEngine's plan at once, marked abort) are re-exported by
:mod:`xsvs_bluesky.demo`.

Each name is imported on first use (like the package's top level), so the
dynamics text loads neither event-model nor the session's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xsvs_bluesky._lazy import lazy_exports

if TYPE_CHECKING:
    from xsvs_bluesky.live._dynamics_text import (
        NOT_YET_DETERMINED,
        diffusion_from_record,
        format_dynamics_flags,
    )
    from xsvs_bluesky.live._feedback import (
        LiveXSVSFigure,
        LiveXSVSTable,
        ProgressPrinter,
    )
    from xsvs_bluesky.live._queued import QueuedCallback
    from xsvs_bluesky.live._session import LiveSession, close_engine
    from xsvs_bluesky.live._signals import AbortOnSignal, signal_reason

#: public name -> module that defines it, imported on first use: the dynamics
#: text (``results --dynamics``, ``analyze --dynamics``) needs neither the
#: document routers (event-model) nor the session
_LAZY = {
    "NOT_YET_DETERMINED": "xsvs_bluesky.live._dynamics_text",
    "diffusion_from_record": "xsvs_bluesky.live._dynamics_text",
    "format_dynamics_flags": "xsvs_bluesky.live._dynamics_text",
    "LiveXSVSFigure": "xsvs_bluesky.live._feedback",
    "LiveXSVSTable": "xsvs_bluesky.live._feedback",
    "ProgressPrinter": "xsvs_bluesky.live._feedback",
    "QueuedCallback": "xsvs_bluesky.live._queued",
    "LiveSession": "xsvs_bluesky.live._session",
    "close_engine": "xsvs_bluesky.live._session",
    "AbortOnSignal": "xsvs_bluesky.live._signals",
    "signal_reason": "xsvs_bluesky.live._signals",
}

__all__ = [
    "NOT_YET_DETERMINED",
    "AbortOnSignal",
    "LiveSession",
    "LiveXSVSFigure",
    "LiveXSVSTable",
    "ProgressPrinter",
    "QueuedCallback",
    "close_engine",
    "diffusion_from_record",
    "format_dynamics_flags",
    "signal_reason",
]

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
