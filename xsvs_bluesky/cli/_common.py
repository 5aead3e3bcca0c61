"""Command-line pieces shared by the subcommands.

Every subcommand that reads or writes runs calls :func:`add_catalog_arguments`
on its parser and :func:`catalogs_from_args` in ``run``, so they all accept
the same ``--data-dir`` / ``--tiled-uri`` / ``--api-key`` options.  The long
jobs (analyze, replay, reanalyze) share the progress options and bar
(:func:`add_progress_arguments`, :func:`progress_bar`) and print the warnings
they record as one line each (:func:`flush_warnings`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from xsvs_bluesky.errors import OptionError, StorageError
from xsvs_bluesky.options import (
    DEFAULT_LIMITS,
    DYNAMICS_MODELS,
    ESTIMATORS,
    FLAT_FIELD_MODES,
    AnalysisOptions,
    DynamicsModel,
    Estimator,
    FlatFieldMode,
    Limits,
)

__all__ = [
    "add_any_status_argument",
    "add_catalog_arguments",
    "add_estimator_arguments",
    "add_limit_arguments",
    "limits_from_args",
    "analysis_options",
    "dynamics_model_argument",
    "finished_run",
    "partial_run_error",
    "add_progress_arguments",
    "add_uid_argument",
    "BACKUP_EXIT",
    "backup_exit",
    "catalogs_from_args",
    "flush_warnings",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "progress_bar",
    "recorded_warnings",
    "run_file_arguments",
    "say_where",
    "show_progress",
    "upload_command",
    "upload_pending",
    "warn",
    "write_from_run",
]

API_KEY_ENV = "TILED_API_KEY"


_T = TypeVar("_T")


def _option_type(parse: Callable[[str], _T], name: str) -> Callable[[str], _T]:
    """Argparse type from an options parser: its message becomes the error."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except OptionError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = name
    return convert


def _metavar(names: tuple[str, ...]) -> str:
    return "{" + ",".join(names) + "}"


def add_estimator_arguments(
    parser: argparse.ArgumentParser, *, of: str, recorded: bool = False
) -> None:
    """Add ``--estimator`` and ``--flat-field`` (analyze, replay, reanalyze).

    ``of`` names whose flat field it is ("the INI's", "the run's").  The
    values are parsed by :mod:`xsvs_bluesky.options` (no numerics loaded);
    ``--flat-field`` also takes the older name ``weighted``.  ``recorded``:
    both default to None, the settings of the latest analysis (reanalyze).
    """
    default = "the latest analysis's; without one, " if recorded else ""
    parser.add_argument(
        "--estimator",
        type=_option_type(Estimator.parse, "estimator"),
        metavar=_metavar(ESTIMATORS),
        default=None,
        help=f"contrast estimator (default: {default}mle-intensity, maximum "
        "likelihood with each pixel's mean from the flat field and the "
        "intensity's shape across the ring; mle with --flat-field divide-round)",
    )
    parser.add_argument(
        "--flat-field",
        type=_option_type(FlatFieldMode.parse, "flat-field mode"),
        metavar=_metavar(FLAT_FIELD_MODES),
        default=None if recorded else FlatFieldMode.WEIGHTS,
        help=f"how {of} flat field is used (default: {default}weights): weights "
        "(integer counts, the flat field as pixel efficiencies in the "
        "likelihood), divide-round (legacy pyxsvs frame/flat, rounded: biased), "
        "record-only (loaded and recorded, scales I(q), not used for the "
        "contrast) or none (not loaded)",
    )


_MIB = 2**20


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-partitions``, ``--max-pixels`` and ``--max-frame-mb``.

    The resource limits of :class:`xsvs_bluesky.options.Limits`, checked
    before memory is allocated (see docs/reference/limits.md).
    """
    group = parser.add_argument_group(
        "resource limits",
        "Inputs asking for more are refused before memory is allocated; raise a "
        "limit deliberately.",
    )
    group.add_argument(
        "--max-partitions",
        type=positive_int,
        metavar="N",
        default=DEFAULT_LIMITS.max_partitions,
        help="most q partitions (default %(default)s)",
    )
    group.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        default=DEFAULT_LIMITS.max_pixels,
        help="most detector pixels, rows x columns (default %(default)s)",
    )
    group.add_argument(
        "--max-frame-mb",
        type=positive_int,
        metavar="MB",
        default=DEFAULT_LIMITS.max_frame_bytes // _MIB,
        help="most MiB of one frame file, inflated (gzip) or as its EDF header "
        "announces it (default %(default)s)",
    )


def limits_from_args(args: argparse.Namespace) -> Limits:
    """Return the :class:`Limits` of the parsed command line (defaults if absent)."""
    defaults = DEFAULT_LIMITS
    frame_mb = getattr(args, "max_frame_mb", None)
    return Limits(
        max_partitions=getattr(args, "max_partitions", defaults.max_partitions),
        max_pixels=getattr(args, "max_pixels", defaults.max_pixels),
        max_frame_bytes=(
            defaults.max_frame_bytes if frame_mb is None else frame_mb * _MIB
        ),
    )


def dynamics_model_argument() -> dict[str, Any]:
    """Keyword arguments of ``add_argument`` for a dynamics-model option."""
    return {
        "type": _option_type(DynamicsModel.parse, "dynamics model"),
        "metavar": _metavar(DYNAMICS_MODELS),
        "default": DynamicsModel.EXPONENTIAL,
    }


def analysis_options(
    args: argparse.Namespace, *, dynamics: bool = True
) -> AnalysisOptions:
    """Build the :class:`AnalysisOptions` of the parsed command line.

    ``--estimator`` and ``--flat-field`` (and ``--dynamics-model`` where the
    command has it, the limits of :func:`add_limit_arguments`);
    ``dynamics=False`` records no dynamics model.
    """
    model = getattr(args, "dynamics_model", DynamicsModel.EXPONENTIAL)
    return AnalysisOptions(
        estimator=args.estimator,
        flat_field_mode=args.flat_field,
        dynamics_model=model if dynamics else None,
        limits=limits_from_args(args),
    )


def add_uid_argument(parser: argparse.ArgumentParser) -> None:
    """Add the optional positional UID naming a derived run (default: latest)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "uid",
        nargs="?",
        metavar="UID",
        help="derived-run uid (or its first >= 5 characters), raw-run uid or "
        "scan_id; default the latest derived run",
    )


def add_any_status_argument(parser: argparse.ArgumentParser, *, verb: str) -> None:
    """Add ``--any-status``: take derived runs that are open, aborted or failed."""
    parser.add_argument(
        "--any-status",
        action="store_true",
        help="let the latest run, a scan_id or a raw-run uid pick derived runs "
        f"that are still open, aborted or failed too, and {verb} such a run as "
        "it is (default: only complete, successful runs; a run named by its "
        f"own uid is refused in one line unless it is complete)",
    )


def finished_run(run: Any, args: argparse.Namespace, verb: str) -> str | None:
    """Check that the derived ``run`` may be used whole; return its exit status.

    A run without a stop document, or stopped with ``abort`` or ``fail``,
    holds partial results: refused (:class:`~xsvs_bluesky.errors.RunError`,
    one line naming the run, its status and ``--any-status``) unless
    ``args.any_status``.
    """
    from xsvs_bluesky.errors import RunError

    stop = run.metadata.get("stop") or {}
    status = stop.get("exit_status")
    if status == "success" or getattr(args, "any_status", False):
        return status
    uid = (run.metadata.get("start") or {}).get("uid", "?")
    if status is None:
        state = (
            "is still open (no stop document: its analysis is being written, or "
            "the process writing it stopped before the end)"
        )
    else:
        reason = f": {stop['reason']}" if stop.get("reason") else ""
        state = f"stopped with exit_status {status!r}{reason}"
    raise RunError(
        f"derived run {uid} {state}; its results may be partial: {verb} them as "
        "they are with --any-status"
    )


def partial_run_error(run: Any, status: str | None, err: Exception) -> Exception:
    """Return the one-line error of a partial run whose streams do not fit."""
    from xsvs_bluesky.errors import RunError

    uid = (run.metadata.get("start") or {}).get("uid", "?")
    return RunError(
        f"derived run {uid} ({status or 'open'}) has streams of different lengths "
        f"that cannot be put together ({type(err).__name__}: {err}); its partial "
        "results are readable with 'xsvs-bluesky results' and from Tiled"
    )


@contextmanager
def run_file_arguments(
    parser: argparse.ArgumentParser, *, verb: str
) -> Iterator[argparse.ArgumentParser]:
    """Frame the options of a command that writes a file from a derived run.

    Adds the UID (:func:`add_uid_argument`) before the options added inside
    the ``with`` block, ``--any-status`` (``verb`` as in its help) and the
    storage options after them; :func:`write_from_run` reads them back.
    """
    add_uid_argument(parser)
    yield parser
    add_any_status_argument(parser, verb=verb)
    add_catalog_arguments(parser, background=True)


def write_from_run(
    args: argparse.Namespace, verb: str, write: Callable[[Any], Any]
) -> int:
    """Write a file from the derived run the command line names; print its path.

    The run is found by ``args.uid`` (:func:`add_uid_argument`) and must be
    finished unless ``args.any_status`` (:func:`finished_run`, ``verb`` as in
    its message); ``write`` takes its loaded results and returns the path
    written.  A partial run whose streams do not fit together is refused in
    one line (:func:`partial_run_error`).  Returns the exit code, 0.
    """
    from xsvs_bluesky.errors import XSVSError
    from xsvs_bluesky.results import find_run, load_results

    # arrays are read while writing: the catalogs stay open until the end
    with catalogs_from_args(args, light=True, background=True) as cats:
        run = find_run(cats.processed, args.uid, any_status=args.any_status)
        status = finished_run(run, args, verb)
        try:
            path = write(load_results(run))
        except (ValueError, KeyError, IndexError) as err:
            if status == "success" or isinstance(err, XSVSError):
                raise
            raise partial_run_error(run, status, err) from err
    print(path)
    return 0


#: set (to anything but 0) to serve a data folder inside each command instead of
#: starting a background server (the tests set it: no process outlives them)
IN_PROCESS_ENV = "XSVS_BLUESKY_IN_PROCESS"


def add_catalog_arguments(
    parser: argparse.ArgumentParser, *, background: bool = False
) -> None:
    """Add ``--data-dir`` | ``--tiled-uri``, ``--api-key`` and the catalog keys.

    ``background``: the command starts a background ``serve`` of a data
    folder no server runs (:func:`catalogs_from_args`); add ``--in-process``.
    """
    group = parser.add_argument_group(
        "Tiled storage",
        "Where the runs are: a local data folder (default ./xsvs-data; its "
        "running 'xsvs-bluesky serve' is used, else Tiled serves it for the "
        "command), or a Tiled server named by address.",
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data folder (default ./xsvs-data): its running 'xsvs-bluesky "
        "serve' is used, else Tiled serves it for this command only",
    )
    where.add_argument(
        "--tiled-uri",
        metavar="URI",
        help="address of a running Tiled server, e.g. http://host:8000; the API "
        f"key comes from ${API_KEY_ENV}",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"API key for --tiled-uri (default ${API_KEY_ENV}; prefer the "
        "variable, a command line is visible to other users)",
    )
    if background:
        group.add_argument(
            "--in-process",
            action="store_true",
            help="when no server of the data folder runs, serve it inside this "
            "command only (default: start 'xsvs-bluesky serve' of it in the "
            "background, which answers this and the next commands; "
            f"${IN_PROCESS_ENV}=1 makes this the default)",
        )
    group.add_argument(
        "--backup-dir",
        metavar="DIR",
        help="local backup of the runs the Tiled server did not store (default "
        "<data-dir>/backup, with --tiled-uri ./xsvs-data/backup/HOST_PORT); "
        "'xsvs-bluesky upload' writes them",
    )
    group.add_argument(
        "--raw-catalog",
        metavar="KEY",
        default="raw",
        help="key of the catalog of raw runs (default: raw)",
    )
    group.add_argument(
        "--processed-catalog",
        metavar="KEY",
        default="processed",
        help="key of the catalog of derived runs (default: processed)",
    )


def catalogs_from_args(
    args: argparse.Namespace,
    *,
    create: bool = False,
    light: bool = False,
    background: bool = False,
    light_raw: bool = False,
) -> Any:
    """Open the catalogs named by the options of :func:`add_catalog_arguments`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.
    create : bool, optional
        Allow a new data folder (False: ``--data-dir`` must hold Tiled data
        already, so a typo does not start an empty one).
    light : bool, optional
        Read-only command: plain Tiled clients, no Bluesky classes or dask
        (``open_catalogs(light=True)``).
    background : bool, optional
        A data folder no server runs gets a background ``xsvs-bluesky
        serve`` (unless ``--in-process`` or ``$XSVS_BLUESKY_IN_PROCESS``),
        announced on stderr with how to stop it.
    light_raw : bool, optional
        With ``light``: the raw catalog too, as a plain container (``replay``
        writes through plain clients).

    Returns
    -------
    xsvs_bluesky.storage.Catalogs
        Use as a context manager (stops a server started for the command).

    Raises
    ------
    XSVSError
        If the folder holds no data (``create=False``) or the server cannot
        be reached.
    """
    from xsvs_bluesky.storage import DEFAULT_DATA_DIR, open_catalogs

    names = {"raw": args.raw_catalog, "processed": args.processed_catalog}
    backup = getattr(args, "backup_dir", None)
    if args.tiled_uri is not None:
        key = args.api_key or os.environ.get(API_KEY_ENV)
        return open_catalogs(
            tiled_uri=args.tiled_uri,
            api_key=key,
            light=light,
            light_raw=light_raw,
            backup_dir=backup,
            **names,
        )
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    if not create and not (data_dir / "tiled").is_dir():
        raise StorageError(
            f"{data_dir} holds no Tiled data; give --data-dir of an earlier "
            "analysis or --tiled-uri of a server"
        )
    background = say_where(data_dir, background and use_background(args))
    return open_catalogs(
        data_dir=data_dir,
        api_key=args.api_key,
        light=light,
        light_raw=light_raw,
        background=background,
        backup_dir=backup,
        **names,
    )


#: exit code of a command whose runs Tiled did not store (kept in the backup)
BACKUP_EXIT = 3


def upload_command(args: argparse.Namespace, cats: Any) -> str:
    """Return the ``xsvs-bluesky upload`` command writing the backup of ``cats``."""
    where = f"--data-dir {cats.data_dir}"
    if cats.data_dir is None:
        where = f"--tiled-uri {cats.uri} --backup-dir {cats.backup_dir}"
    elif getattr(args, "backup_dir", None):
        where += f" --backup-dir {cats.backup_dir}"
    return f"xsvs-bluesky upload {where}"


def backup_exit(prog: str, args: argparse.Namespace, cats: Any, runs: Any) -> int:
    """Say in one line which runs Tiled did not store, and where they are.

    ``runs`` are :class:`~xsvs_bluesky.storage.BackedUpRun`; returns
    :data:`BACKUP_EXIT` (0 when there are none).
    """
    runs = list(runs)
    if not runs:
        return 0
    first = runs[0]
    names = [r.describe() for r in runs]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and "
    listed += names[-1] if len(names) > 1 else ""
    print(
        f"{prog}: error: the Tiled server at {first.server} failed "
        f"({first.cause}); {listed} {'are' if len(runs) > 1 else 'is'} kept in "
        f"{first.path.parent}; '{upload_command(args, cats)}' writes "
        f"{'them' if len(runs) > 1 else 'it'} when the server answers",
        file=sys.stderr,
    )
    return BACKUP_EXIT


def upload_pending(prog: str, cats: Any) -> None:
    """Write the runs of the backup into Tiled before a command writes its own.

    One line on stderr per run written; a failure is one warning line (the
    backups stay).  Backups another process is writing are left alone.
    """
    from xsvs_bluesky.storage import backup_files, upload_backups

    if cats.backup_dir is None or not backup_files(cats.backup_dir):
        return
    report = upload_backups(cats.client, cats.backup_dir)
    for done in report.uploaded:
        print(f"{prog}: {done.describe()}", file=sys.stderr)
    for path, cause in report.failed:
        warn(prog, f"{path} stays in the backup: {cause}")


def use_background(args: argparse.Namespace) -> bool:
    """Whether a background server is allowed (no ``--in-process``, no env)."""
    if getattr(args, "in_process", False):
        return False
    return os.environ.get(IN_PROCESS_ENV, "0") in ("", "0")


def say_where(data_dir: Path, background: bool = False) -> bool:
    """Say on stderr which server will serve the folder.

    Returns whether a background server is to be started (``background``
    and none runs).
    """
    from xsvs_bluesky.storage import find_server

    running = find_server(data_dir)
    if running is not None:
        print(f"using the Tiled server at {running.describe()}", file=sys.stderr)
        return False
    if background:
        print(
            f"starting 'xsvs-bluesky serve' of {data_dir} in the background for "
            "this and the next commands; stop it with: xsvs-bluesky serve --stop "
            f"--data-dir {data_dir}",
            file=sys.stderr,
        )
        return True
    print(
        f"serving {data_dir} with Tiled for this command (a running "
        "'xsvs-bluesky serve' of it answers faster)",
        file=sys.stderr,
    )
    return False


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress``/``--no-progress`` (default: a bar when stderr is a tty)."""
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress bar (default: shown when stderr is a terminal)",
    )
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw the bar: the option, else whether stderr is a terminal."""
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def progress_bar(show: bool, total: int | None, unit: str) -> Any:
    """Make a tqdm bar on stderr (or None) and its ``progress(done, total)``."""
    if not show:
        return None, None
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        unit=unit,
        file=sys.stderr,
        desc=f"{unit}s",
        dynamic_ncols=True,
        mininterval=0.5,
    )

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def warn(prog: str, message: str) -> None:
    """Print a one-line warning on stderr."""
    print(f"{prog}: warning: {' '.join(message.split())}", file=sys.stderr)


#: messages printed so far by each open :func:`recorded_warnings`, by id of its list
_SAID: dict[int, set[str]] = {}


def flush_warnings(prog: str, caught: list[warnings.WarningMessage]) -> None:
    """Print the user-facing warnings recorded so far, one line each, once.

    A message printed before from the same :func:`recorded_warnings` (the
    same check made twice, a refit warning again) is not printed again.
    """
    said = _SAID.get(id(caught), set())
    for item in caught:
        if issubclass(item.category, UserWarning):
            text = " ".join(str(item.message).split())
            if text not in said:
                said.add(text)
                warn(prog, text)
    caught.clear()


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings (every UserWarning, each time) for :func:`flush_warnings`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.simplefilter("always", UserWarning)
        assert caught is not None
        _SAID[id(caught)] = set()
        try:
            yield caught
        finally:
            _SAID.pop(id(caught), None)


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def positive_float(unit: str) -> Callable[[str], float]:
    """Argparse type: a number > 0, in ``unit`` (named in the message)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{value} must be > 0 ({unit})")
        return value

    return parse


def nonnegative_int(text: str) -> int:
    """Argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value
