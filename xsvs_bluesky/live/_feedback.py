"""The implementation of :mod:`xsvs_bluesky.live` (private; see its docstring)."""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from xsvs_bluesky.live._base import DerivedRunRouter
from xsvs_bluesky.live._dynamics_text import format_dynamics_flags
from xsvs_bluesky.results import as_text, pm_text

__all__ = ["LiveXSVSFigure", "LiveXSVSTable", "ProgressPrinter"]

logger = logging.getLogger(__name__)


class ProgressPrinter(DerivedRunRouter):
    """Print a line per progress event: exposure, frames so far, frames/s.

    Parameters
    ----------
    file : text stream, optional
        Where to write (default ``sys.stdout`` at the time of writing).
    interval_s : float, optional
        Minimum wall-clock time between two lines of one exposure (the first
        event of each exposure is always printed).
    q_index : int, optional
        Partition whose current ``beta`` is shown.
    """

    def __init__(
        self, file: IO[str] | None = None, *, interval_s: float = 2.0, q_index: int = 0
    ) -> None:
        super().__init__()
        self.file = file
        self.interval_s = float(interval_s)
        self.q_index = int(q_index)
        self._printed: tuple[int | None, float] = (None, -math.inf)

    def write(self, text: str) -> None:
        """Write one line to :attr:`file` and flush it."""
        out = self.file if self.file is not None else sys.stdout
        out.write(text + "\n")
        out.flush()

    def on_progress(self, index: int) -> None:  # noqa: D102
        now = time.monotonic()
        last_index, last_time = self._printed
        if index == last_index and now - last_time < self.interval_s:
            return
        self._printed = (index, now)
        self.write(self.progress_line(index))

    def progress_line(self, index: int) -> str:
        """One progress line of exposure ``index``."""
        snap = self.snapshots[index]
        j = self.q_index
        beta = np.asarray(snap.get("beta", [math.nan]), dtype=np.float64)
        err = np.asarray(snap.get("beta_err", [math.nan]), dtype=np.float64)
        b = float(beta[j]) if j < beta.size else math.nan
        e = float(err[j]) if j < err.size else math.nan
        rate = f"{self.rate:.0f} frames/s" if math.isfinite(self.rate) else "-"
        return (
            f"[xsvs] exposure {index} (t_e {as_text(snap['exposure_time'], '{:.3g}')}"
            f" s): {int(snap['n_frames'])} frames, {rate}, beta(q{j}) = {pm_text(b, e)}"
        )


class LiveXSVSTable(ProgressPrinter):
    """Print a table per exposure (q, kbar, beta +- err) as each one completes.

    An exposure is complete when the next one starts or its results event
    arrives.  The dynamics fit (``Gamma``, ``beta0``, their flags, then
    ``D`` or why it is not given) is printed when it arrives: early refits
    on two exposures show "not yet determined" for rates whose error is as
    large as the rate.  A closing line at the stop document.

    Parameters
    ----------
    file : text stream, optional
        Where to write (default ``sys.stdout``).
    progress : bool, optional
        Also print the progress lines of :class:`ProgressPrinter`.
    interval_s, q_index : optional
        See :class:`ProgressPrinter`.
    """

    def __init__(
        self,
        file: IO[str] | None = None,
        *,
        progress: bool = True,
        interval_s: float = 2.0,
        q_index: int = 0,
    ) -> None:
        super().__init__(file, interval_s=interval_s, q_index=q_index)
        self.progress = bool(progress)
        self._shown: set[int] = set()
        self._current: int | None = None

    def on_start(self) -> None:  # noqa: D102
        self._shown = set()
        self._current = None
        self.write(f"[xsvs] {self.run_label}: analysis started")

    def on_progress(self, index: int) -> None:  # noqa: D102
        if self._current is not None and index != self._current:
            self._show(self._current)
        self._current = index
        if self.progress:
            super().on_progress(index)

    def on_result(self, index: int) -> None:  # noqa: D102
        self._show(index)

    def on_dynamics(self) -> None:  # noqa: D102
        if self._current is not None:  # the refit includes the exposure just done
            self._show(self._current)
        if self.dynamics is not None:
            n_exp = int(self._n_points)
            self.write(
                f"[xsvs] dynamics over {n_exp} exposures, "
                "beta(t_e) = beta0 k(Gamma t_e):"
            )
            self.write(format_dynamics_flags(self.dynamics, self.diffusion))

    def on_stop(self, doc: Mapping[str, Any]) -> None:  # noqa: D102
        for index in sorted(self.snapshots):
            self._show(index)
        status = doc.get("exit_status", "?")
        reason = f" ({doc['reason']})" if doc.get("reason") else ""
        self.write(f"[xsvs] {self.run_label}: {status}{reason}")

    def _show(self, index: int) -> None:
        if index in self._shown or index not in self.snapshots:
            return
        self._shown.add(index)
        self.write(self.exposure_table(index))

    def exposure_table(self, index: int) -> str:
        """Text table of one exposure: q, kbar, beta +- err per partition."""
        snap = self.snapshots[index]
        q = np.asarray(snap.get("q", []), dtype=np.float64)
        kbar = np.asarray(snap.get("kbar", np.full(q.size, np.nan)), float)
        beta = np.asarray(snap.get("beta", np.full(q.size, np.nan)), float)
        err = np.asarray(snap.get("beta_err", np.full(q.size, np.nan)), float)
        t_e = as_text(float(snap.get("exposure_time", math.nan)), "{:.4g}")
        lines = [
            f"[xsvs] exposure {index}: t_e = {t_e} s, "
            f"{int(snap.get('n_frames', 0))} frames",
            f"  {'q [1/A]':>10} {'kbar':>9} {'beta +- err':>19}",
        ]
        for j in range(q.size):
            lines.append(
                f"  {as_text(q[j], '{:.3e}'):>10} {as_text(kbar[j], '{:.4g}'):>9} "
                f"{pm_text(beta[j], err[j]):>19}"
            )
        return "\n".join(lines)


def _qt_teleporter() -> Any:
    """Bluesky's Qt teleporter when a Qt backend is in use, else None."""
    import matplotlib

    if "qt" not in str(matplotlib.rcParams["backend"]).lower():
        return None
    from bluesky.callbacks.mpl_plotting import _get_teleporter

    return _get_teleporter()


class LiveXSVSFigure(DerivedRunRouter):
    """A live figure of a derived run, saved as PNG when ``save_path`` is set.

    While frames arrive: left, ``beta`` at ``q_index`` against the frames
    analysed, per exposure (convergence); right, ``beta`` against ``t_e``
    per q shifted by ``0.1 x`` index.  When the results arrive the left
    panel becomes ``P(k)`` with the negative-binomial fits (the pyxsvs
    summary figure) and the dynamics fits are added to the right panel.

    Parameters
    ----------
    fig : matplotlib.figure.Figure, optional
        Figure to draw into.  Default: a pyplot figure when pyplot is
        imported with an interactive backend (IPython after ``%matplotlib``),
        else a headless figure.
    save_path : path, optional
        PNG written (atomically) at every redraw and at the end of the run.
    q_index : int, optional
        Partition of the left panel.
    redraw_interval_s : float, optional
        Minimum wall-clock time between two redraws on progress events.

    Notes
    -----
    With a Qt backend, documents arriving on the RunEngine's thread are
    handed to the main thread through bluesky's Qt teleporter (call
    ``bluesky.callbacks.mpl_plotting.initialize_qt_teleporter()`` from the
    main thread first).
    """

    def __init__(
        self,
        *,
        fig: Any = None,
        save_path: str | os.PathLike[str] | None = None,
        q_index: int = 0,
        redraw_interval_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_path = None if save_path is None else Path(save_path)
        self.q_index = int(q_index)
        self.redraw_interval_s = float(redraw_interval_s)
        self.fig = fig if fig is not None else self._new_figure()
        self._teleporter = _qt_teleporter() if fig is None else None
        self._drawn = -math.inf
        self.n_redraws = 0

    @staticmethod
    def _new_figure() -> Any:
        import matplotlib

        if "matplotlib.pyplot" in sys.modules:
            from matplotlib import pyplot as plt
            from matplotlib.backends import BackendFilter, backend_registry

            backend = str(matplotlib.rcParams["backend"]).lower()
            builtin = backend_registry.list_builtin(BackendFilter.INTERACTIVE)
            interactive = {b.lower() for b in builtin}
            if (backend in interactive or "ipympl" in backend) and plt.isinteractive():
                return plt.figure(figsize=(12, 4.5), layout="constrained")
        from matplotlib.figure import Figure

        return Figure(figsize=(12, 4.5), layout="constrained")

    def __call__(
        self,
        name: str,
        doc: dict[str, Any],
        validate: bool = False,
        *,
        escape: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        """Route a document (through the Qt main thread when needed)."""
        if (
            not escape
            and self._teleporter is not None
            and threading.current_thread() is not threading.main_thread()
        ):
            self._teleporter.name_doc_escape.emit(name, doc, self)
            return name, doc
        return super().__call__(name, doc, validate)

    def on_start(self) -> None:  # noqa: D102
        self._drawn = -math.inf

    def on_progress(self, index: int) -> None:  # noqa: D102
        if time.monotonic() - self._drawn >= self.redraw_interval_s:
            self.redraw()

    def on_dynamics(self) -> None:  # noqa: D102
        self.redraw()

    def on_stop(self, doc: Mapping[str, Any]) -> None:  # noqa: D102
        self.redraw(status=str(doc.get("exit_status", "")))

    def redraw(self, status: str = "") -> None:
        """Redraw both panels from the documents so far; save the PNG if asked."""
        try:
            self._draw(status)
            canvas = self.fig.canvas
            canvas.draw_idle()
            if self.save_path is not None:
                from xsvs_bluesky.plots import save_figure

                save_figure(self.fig, self.save_path)
            elif hasattr(canvas, "flush_events"):
                canvas.flush_events()
        except Exception:
            logger.exception("live XSVS figure: redraw failed")
        self._drawn = time.monotonic()
        self.n_redraws += 1

    def _draw(self, status: str) -> None:
        from xsvs_bluesky.plots import draw_beta, draw_histograms

        self.fig.clear()
        left, right = self.fig.subplots(1, 2)
        order = sorted(self.snapshots)
        snaps = [self.snapshots[i] for i in order]
        if not snaps:
            return
        n_q = max(np.asarray(s.get("q", [])).size for s in snaps)
        q = np.asarray(snaps[-1].get("q", np.full(n_q, np.nan)), dtype=float)
        t_e = np.array([float(s.get("exposure_time", math.nan)) for s in snaps])

        def stack(key: str) -> np.ndarray:
            return np.array(
                [np.asarray(s.get(key, np.full(n_q, np.nan)), float) for s in snaps]
            )

        draw_beta(
            right, t_e, stack("beta"), stack("beta_err"), q, dynamics=self.dynamics
        )
        j = min(self.q_index, n_q - 1)
        if order and all(
            i in self.final and "probability" in self.snapshots[i] for i in order
        ):
            # each exposure has its own number of bins: pad with P(k) = 0
            hists = [np.asarray(s["probability"], float)[j] for s in snaps]
            n_k = max(h.size for h in hists)
            draw_histograms(
                left,
                [np.pad(h, (0, n_k - h.size)) for h in hists],
                stack("kbar")[:, j],
                stack("M")[:, j],
                t_e,
                n_bins=[int(s.get("n_bins", 0)) for s in snaps],
                q=float(q[j]),
            )
        else:
            for k, index in enumerate(order):
                hist = self.history.get(index, [])
                frames = [n for n, _ in hist]
                values = [b[j] if j < b.size else math.nan for _, b in hist]
                left.plot(frames, values, marker=".", color=f"C{k % 10}", lw=1.0)
            left.set_xlabel("frames analysed")
            left.set_ylabel(rf"$\beta$ at $q$ = {q[j]:.3g}")
            left.set_title("convergence while frames arrive")
        rate = f", {self.rate:.0f} frames/s" if math.isfinite(self.rate) else ""
        done = f": {status}" if status else rate
        self.fig.suptitle(f"XSVS {self.run_label}{done}", fontsize="medium")
