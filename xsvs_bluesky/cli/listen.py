r"""Analyse the runs a RunEngine publishes on a document bus, on this host.

A long-running consumer: the XSVS analysis of every raw run (its start
document carries xsvs_partitions, unless --all-runs) received from bluesky's
0MQ proxy (--zmq HOST:PORT, the proxy's output; JSON or msgpack documents, a
pickle-speaking publisher is refused) or from NATS JetStream (--nats URL
--subject PREFIX, the message format of bluesky-nats) through a durable
consumer: documents published while the listener is down are analysed when
it comes back, and a run's messages are acknowledged only once its derived
run is stored in Tiled. Derived runs go to the processed catalog of the
embedded server (--data-dir) or of --tiled-uri. One line per run on stdout:
raw uid, status, frames, frames/s, derived uid.

Frames: StreamResource files are read under this host's path for them
(--path-map SOURCE=TARGET, repeatable) and only under the allowed roots
(--allow-root; default the path-map targets and the data folder); a file
refused or not readable is read through Tiled from the raw run (the raw
catalog of the same server) unless --no-tiled-frames; when neither works the
derived run fails and names the path and the reason.

Beyond one core: --dask SCHEDULER (tcp://HOST:PORT) or --dask local:N hands
the frames of each StreamDatum to Dask distributed workers (they read the
files themselves, under the path map) and merges their partial histograms
in order: the derived run equals a one-process analysis.

SIGINT/SIGTERM stop it: a run being stored is finished, a run still
receiving documents gets a derived run marked abort (on NATS its documents
are analysed again at the next start).

When the Tiled server fails (down, or not answering within the writer's
retry time: $XSVS_BLUESKY_RETRY_S, default 10 s), the analysis goes on. Over
0MQ a derived run the server did not store is kept in the local backup
(<data-dir>/backup, with --tiled-uri ./xsvs-data/backup/HOST_PORT, or
--backup-dir; its line says KEPT IN THE BACKUP) and written when the server
answers again (before the next run, at the end, or by 'xsvs-bluesky
upload'). Over NATS its messages are not acknowledged and it is analysed
again when the listener restarts (no backup: it is not written twice).

Exit codes: 0 stopped by a signal or after --max-runs, 1 a derived run could
not be stored (NATS), 2 bad input (address, no stream, pickle publisher), 3
derived runs left in the backup at the end (one line naming the server, the
cause and the backup).

Typical commands:
  xsvs-bluesky listen --zmq localhost:5578 --tiled-uri http://tiled:8000
  xsvs-bluesky listen --nats nats://bus:4222 --subject beamline.xsvs \
      --path-map /beamline/data=/mnt/data --data-dir /srv/xsvs-data
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from xsvs_bluesky.cli._common import (
    add_catalog_arguments,
    backup_exit,
    catalogs_from_args,
    positive_float,
    positive_int,
    upload_pending,
)

__all__ = ["add_arguments", "run"]

_PROG = "xsvs-bluesky listen"


_seconds = positive_float("s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``xsvs-bluesky listen`` to ``parser``."""
    from xsvs_bluesky.core.estimators import ESTIMATORS
    from xsvs_bluesky.listen import DELIVER_CHOICES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    bus = parser.add_argument_group("document bus (give one)")
    where = bus.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--zmq",
        metavar="HOST:PORT",
        help="output address of a bluesky 0MQ proxy (documents in JSON or msgpack)",
    )
    where.add_argument(
        "--nats",
        metavar="URL",
        help="NATS server with JetStream, e.g. nats://host:4222",
    )
    bus.add_argument(
        "--subject",
        help="NATS: the publisher's subject prefix (documents on PREFIX.<name>)",
    )
    bus.add_argument("--stream", help="NATS: JetStream stream (default: by subject)")
    bus.add_argument(
        "--durable",
        default="xsvs-listen",
        help="NATS: name of the durable consumer (default xsvs-listen)",
    )
    bus.add_argument(
        "--deliver",
        choices=DELIVER_CHOICES,
        default="new",
        help="NATS, when the consumer is created: documents from now on (new, "
        "default) or all the stream holds",
    )
    bus.add_argument(
        "--ack-wait",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="NATS: seconds before an unacknowledged message is redelivered; the "
        "listener renews it every S/3 while a run lasts (default 30)",
    )
    bus.add_argument(
        "--max-ack-pending",
        type=positive_int,
        default=100_000,
        metavar="N",
        help="NATS: messages delivered and not acknowledged at most; >= the "
        "documents of the longest run (default 100000)",
    )
    bus.add_argument(
        "--create-stream",
        action="store_true",
        help="NATS: create a stream for PREFIX.> when none holds it",
    )
    bus.add_argument(
        "--prefix", default="", help="0MQ: only messages of this publisher prefix"
    )
    frames = parser.add_argument_group("frames")
    frames.add_argument(
        "--path-map",
        action="append",
        default=[],
        metavar="SOURCE=TARGET",
        help="a file under SOURCE (as the acquisition host names it) is read under "
        "TARGET here; repeatable, the longest prefix wins",
    )
    frames.add_argument(
        "--allow-root",
        action="append",
        default=None,
        metavar="DIR",
        help="read StreamResource files only under DIR (repeatable; default the "
        "path-map targets and the data folder); others are refused",
    )
    frames.add_argument(
        "--no-tiled-frames",
        dest="tiled_frames",
        action="store_false",
        help="never read frames through Tiled from the raw run (default: when "
        "the file is refused or not readable here)",
    )
    frames.add_argument(
        "--frames-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="at a run's end, how long to wait for its frames in Tiled (default 60)",
    )
    frames.add_argument(
        "--read-timeout",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="at a run's end, how long to wait for frames not yet in their file "
        "(default 5)",
    )
    scale = parser.add_argument_group("scale-out (Dask distributed)")
    scale.add_argument(
        "--dask",
        metavar="SCHEDULER",
        help="analyse each StreamDatum's frames on Dask workers: a scheduler "
        "address (tcp://HOST:PORT; the workers must see the files under the "
        "--path-map targets) or local:N for N worker processes on this host",
    )
    scale.add_argument(
        "--dask-memory",
        default="1GiB",
        metavar="SIZE",
        help="memory limit of each local:N worker (default 1GiB)",
    )
    parser.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=None,
        help="contrast estimator (default mle)",
    )
    parser.add_argument(
        "--all-runs",
        action="store_true",
        help="analyse every run (default: runs whose start has xsvs_partitions)",
    )
    parser.add_argument(
        "--max-runs",
        type=positive_int,
        metavar="N",
        help="stop after N runs (default: until SIGINT/SIGTERM)",
    )
    add_catalog_arguments(parser)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM (main thread only), restore afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        print(f"{_PROG}: {name}: finishing", file=sys.stderr, flush=True)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _access(args: argparse.Namespace, cats: Any) -> Any:
    from xsvs_bluesky.callback import FrameAccess, parse_path_map

    pairs = parse_path_map(args.path_map)
    roots: list[Any]
    if args.allow_root is not None:
        roots = list(args.allow_root)
    else:
        roots = [t for _, t in pairs]
        roots += [p for p in (cats.data_dir, cats.external_dir) if p is not None]
    if not roots:
        print(
            f"{_PROG}: no allowed roots (give --allow-root or --path-map): every "
            "frame is read through Tiled",
            file=sys.stderr,
        )
    access = FrameAccess.build(
        path_map=args.path_map,
        allowed_roots=roots,
        fallback_timeout_s=args.frames_timeout,
    )
    return access


def run(args: argparse.Namespace) -> int:
    """Run ``xsvs-bluesky listen``; return the exit code."""
    from xsvs_bluesky.errors import OptionError
    from xsvs_bluesky.listen import (
        RunOutcome,
        zmq_address,
    )

    if args.nats is not None and not args.subject:
        raise OptionError("--nats needs --subject (the publisher's subject prefix)")
    if args.zmq is not None:
        zmq_address(args.zmq)  # a bad address fails before Tiled starts
    from xsvs_bluesky.callback import parse_path_map

    parse_path_map(args.path_map)  # likewise a bad path map
    shards = None
    if args.dask is not None:
        from xsvs_bluesky.callback import DaskShards

        try:
            shards = DaskShards.connect(
                args.dask, memory_limit=args.dask_memory, read_timeout_s=30.0
            )
        except OSError as err:
            why = f"--dask {args.dask!r}: no scheduler there: {err}"
            raise OptionError(why) from None
        workers = shards.n_workers
        print(f"{_PROG}: Dask: {workers} workers at {args.dask}", file=sys.stderr)
    stop = threading.Event()
    count = [0]

    def on_outcome(outcome: RunOutcome) -> None:
        print(outcome.line(), flush=True)
        if outcome.exit_status != "abort":
            count[0] += 1
        if args.max_runs is not None and count[0] >= args.max_runs:
            stop.set()

    def ready() -> None:
        source = args.zmq or f"{args.nats} {args.subject}"
        print(f"{_PROG}: listening on {source}", file=sys.stderr, flush=True)

    options: dict[str, Any] = {
        "estimator": args.estimator,
        "read_timeout_s": args.read_timeout,
    }
    if not args.all_runs:
        options["accept"] = lambda start: "xsvs_partitions" in start
    if shards is not None:
        options["shards"] = shards
    try:
        return _listen(args, options, stop, on_outcome, ready)
    finally:
        if shards is not None:
            shards.close()


def _listen(
    args: argparse.Namespace,
    options: dict[str, Any],
    stop: threading.Event,
    on_outcome: Any,
    ready: Any,
) -> int:
    from xsvs_bluesky.listen import (
        JetStreamSettings,
        Listener,
        RunNotStoredError,
        listen_nats,
        listen_zmq,
    )

    with _stop_on_signals(stop), catalogs_from_args(args, create=True) as cats:
        upload_pending(_PROG, cats)
        # 0MQ sends nothing again: a derived run the server fails stays in
        # the backup until written; NATS sends the run's documents again
        listener = Listener(
            cats,
            access=_access(args, cats),
            tiled_fallback=args.tiled_frames,
            options=options,
            keep_backups=args.zmq is not None,
        )
        try:
            if args.zmq is not None:
                try:
                    listen_zmq(
                        listener,
                        args.zmq,
                        stop=stop,
                        on_outcome=on_outcome,
                        prefix=args.prefix.encode(),
                        ready=ready,
                    )
                finally:
                    reason = "the listener stopped before the raw run ended"
                    for outcome in listener.close(reason):
                        on_outcome(outcome)
            else:
                settings = JetStreamSettings(
                    url=args.nats,
                    subject=args.subject,
                    stream=args.stream,
                    durable=args.durable,
                    deliver=args.deliver,
                    ack_wait_s=args.ack_wait,
                    max_ack_pending=args.max_ack_pending,
                    create_stream=args.create_stream,
                )
                asyncio.run(
                    listen_nats(
                        listener,
                        settings,
                        stop=stop,
                        on_outcome=on_outcome,
                        ready=ready,
                    )
                )
        except RunNotStoredError as err:
            print(f"{_PROG}: error: {err}", file=sys.stderr)
            return 1
        finally:
            left = listener.finish()
    return backup_exit(_PROG, args, cats, left)
