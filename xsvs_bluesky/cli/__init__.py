"""The ``xsvs-bluesky`` command line.

One console script with subcommands. Each subcommand lives in its own module,
imported only when that subcommand is named on the command line, and imports
its heavy dependencies (numba, bluesky, tiled, matplotlib) only when it runs:
``--help``, ``--version`` and argument errors load none of them
(``tests/unit/cli/test_cli_light.py``, ``benchmarks/bench_cli.py``).

Exit codes: 0 success, 1 unexpected internal error, 2 bad input (a one-line
message on stderr, no traceback), 3 runs not stored (the Tiled server
failed while writing them: one line naming the server, the cause and the
local backup that keeps them for ``xsvs-bluesky upload``), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM: raised as :class:`Terminated`, a
KeyboardInterrupt, in the main thread, so it ends a command the way Ctrl-C
does: open runs marked abort).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .._version import __version__
from ..errors import XSVSError

__all__ = ["EXTRAS", "Interrupted", "Terminated", "main"]

log = logging.getLogger(__name__)

#: subcommand name -> (module under xsvs_bluesky.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {}


def _register(name: str, module: str, summary: str) -> None:
    SUBCOMMANDS[name] = (module, summary)


_register("demo", "demo", "simulated XSVS acquisition analysed live into Tiled")
_register("analyze", "analyze", "analyse a legacy pyxsvs INI/EDF series offline")
_register("results", "results", "show the beta(t_e, q) table of a derived run")
_register("export", "export", "export a derived run to CSV or NeXus-like HDF5")
_register("report", "report", "write a self-contained HTML report of a derived run")
_register("replay", "replay", "replay a legacy series into Tiled as raw + derived runs")
_register("reanalyze", "reanalyze", "analyse a raw run from Tiled again, new settings")
_register("serve", "serve", "serve a data folder with Tiled for other processes")
_register("listen", "listen", "analyse runs published on a 0MQ proxy or NATS JetStream")
_register("upload", "upload", "write the runs of the local backup into Tiled")

#: loggers a command sums up in its own last line when the Tiled server fails
#: (one line per failure, retry and node otherwise), and the least level each
#: still shows; all of it with -v.  TiledWriter logs at ERROR, with a
#: traceback, every stream it could not close: the run goes to the backup,
#: which the last line names.
_SUMMED_UP = {
    "xsvs_bluesky.storage._spool": logging.ERROR,
    "bluesky_tiled_plugins": logging.CRITICAL,
}


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that imports its module on first use.

    The top-level parser lists every subcommand with its one-line summary;
    the module (its description, its options, its ``run``) is imported only
    when argparse hands the remaining arguments to this parser.
    """

    def __init__(self, *args: Any, module: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module

    def load(self) -> None:
        """Import the subcommand's module and add its options (once)."""
        if not self._module:
            return
        mod = importlib.import_module(f"{__name__}.{self._module}")
        self._module = ""
        self.description = mod.__doc__
        mod.add_arguments(self)
        self.set_defaults(_run=mod.run)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.load()
        return super().parse_known_args(args, namespace)


#: library argument -> the option that sets it, as error messages should say it
_OPTION_NAMES = {
    "skip_bad=True": "--skip-bad-frames",
    "Limits.max_partitions": "--max-partitions",
    "Limits.max_pixels": "--max-pixels",
    "Limits.max_frame_bytes": "--max-frame-mb",
}


def error_line(command: str, exc: BaseException) -> str:
    """Return the one line printed for a user error (the CLI's option names)."""
    text = " ".join(str(exc).split())
    for argument, option in _OPTION_NAMES.items():
        text = text.replace(argument, option)
    return f"xsvs-bluesky {command}: error: {text}"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="xsvs-bluesky",
        description=(
            "X-ray Speckle Visibility Spectroscopy analysis for Bluesky/Tiled: "
            "per-q photon-count histograms, speckle contrast beta(t_e) and "
            "dynamics, live on the bluesky document stream or offline from "
            "legacy pyxsvs INI/EDF series. Results are stored as derived "
            "bluesky runs in Tiled."
        ),
        epilog="Run 'xsvs-bluesky COMMAND --help' for the options of a command.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output"
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_SubcommandParser
    )
    for name, (module, summary) in SUBCOMMANDS.items():
        sub.add_parser(name, help=summary, module=module)
    return parser


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal after storing what it had.

    Raised by a command that handled SIGINT itself (``demo``); ``detail``
    (what became of its runs) ends the one line printed.
    """

    detail: str = ""


class Terminated(Interrupted):
    """SIGTERM received: ends a command as Ctrl-C does (runs marked abort)."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise :class:`Terminated` in the main thread on SIGTERM, meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _OnceFilter(logging.Filter):
    """Let a warning (or worse) through the first time its text is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextmanager
def _each_warning_once() -> Iterator[None]:
    """Meanwhile, log lines of warnings and errors are printed once each.

    A live refit after every exposure repeats its warnings; the user needs
    each once.
    """
    once = _OnceFilter()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(once)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(once)


@contextmanager
def _summed_up(verbose: int) -> Iterator[None]:
    """Meanwhile, show only errors of the loggers in :data:`_SUMMED_UP`."""
    loggers = [logging.getLogger(name) for name in _SUMMED_UP]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg, least in zip(loggers, _SUMMED_UP.values(), strict=True):
            lg.setLevel(least)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


#: top-level module of an optional dependency -> the extra that installs it
#: (``[project.optional-dependencies]`` in pyproject.toml)
EXTRAS: dict[str, str] = {
    "tiled": "tiled",
    "bluesky_tiled_plugins": "tiled",
    "bluesky": "tiled",
    "ophyd": "sim",
    "ophyd_async": "sim",
    "matplotlib": "plots",
}


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """Return the extra that installs the module ``exc`` misses, or None."""
    name = (exc.name or "").split(".")[0]
    return EXTRAS.get(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    code = _main(argv)
    if argv is None:  # the program itself, about to exit
        # The interpreter's last garbage collection walks every object left
        # (~700 000 after a demo: bluesky, tiled, pandas, numba): 2 s of CPU
        # for memory the system reclaims anyway.  Frozen objects are skipped.
        import gc

        gc.freeze()
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with _sigterm_as_interrupt(), _each_warning_once(), _summed_up(args.verbose):
            return int(args._run(args) or 0)
    except XSVSError as exc:
        print(error_line(args.command, exc), file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = _missing_extra(exc)
        if extra is None:
            raise  # not an optional dependency: a bug, keep the traceback
        print(
            f"xsvs-bluesky {args.command}: error: this command needs "
            f"{exc.name!r}, which is not installed: python3 -m pip install "
            f"'xsvs-bluesky[{extra}]' (or '[all]' for every extra)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        word = "terminated (SIGTERM)" if terminated else "interrupted"
        detail = getattr(exc, "detail", "")
        line = f"xsvs-bluesky {args.command}: {word}"
        print(f"{line}; {detail}" if detail else line, file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
