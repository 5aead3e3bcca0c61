"""Documents from NATS JetStream, through a durable consumer (private).

``bluesky-nats``'s ``NATSPublisher`` publishes each document to the subject
``<subject>.<document name>`` of a JetStream stream, msgpack-encoded
(ormsgpack), with a ``run_id`` header (the start uid).  Its dispatcher reads
them with an ordered, ephemeral consumer and acknowledges each on receipt: a
consumer that is down misses documents, one that dies mid-run loses the run.
:func:`listen_nats` instead binds a DURABLE pull consumer (explicit acks):

- the messages of a run are acknowledged only when the run's derived run is
  stored in Tiled (its stop document read back); until then the listener
  tells the server every ``ack_wait / 3`` that it is still working on them
  (``+WPI``), so a run may last hours with a short ``ack_wait``;
- documents published while the listener is down wait in the stream; at
  start, a consumer left with unacknowledged messages (a listener killed
  mid-run) is re-created from its acknowledgement floor, so the interrupted
  run is analysed again from its start document at once, not after
  ``ack_wait``;
- on SIGINT/SIGTERM the open run's derived run is marked ``abort`` and its
  messages are negatively acknowledged (analysed again at the next start).

Runs are assumed to follow each other on the subject (one RunEngine): the
acknowledgement floor is then exactly the first message of the open run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from xsvs_bluesky.errors import XSVSError
from xsvs_bluesky.listen._listener import Listener, RunNotStoredError, RunOutcome
from xsvs_bluesky.listen._wire import (
    PickleRefusedError,
    WireFormatError,
    decode_payload,
)

__all__ = ["JetStreamSettings", "listen_nats"]

logger = logging.getLogger(__name__)

DELIVER_CHOICES = ("new", "all")


@dataclass(frozen=True)
class JetStreamSettings:
    """Where and how the durable consumer reads documents.

    Parameters
    ----------
    url : str
        NATS server, e.g. ``nats://localhost:4222``.
    subject : str
        The publisher's subject prefix (``NATSPublisher(subject_factory=...)``);
        the consumer reads ``<subject>.>``.
    stream : str, optional
        JetStream stream (default: the one that holds the subject).
    durable : str
        Name of the durable consumer (one per analysis service).
    deliver : {"new", "all"}
        When the consumer is created: only documents published from now on,
        or everything the stream holds.
    ack_wait_s : float
        Seconds the server waits for an acknowledgement (or a progress
        heartbeat) before it redelivers a message.
    max_ack_pending : int
        Messages delivered and not yet acknowledged, at most: the documents
        of the longest run (a step scan has one per frame).
    create_stream : bool
        Create a file-backed stream for ``<subject>.>`` if none holds it.
    batch : int
        Messages fetched per request.
    """

    url: str
    subject: str
    stream: str | None = None
    durable: str = "xsvs-listen"
    deliver: str = "new"
    ack_wait_s: float = 30.0
    max_ack_pending: int = 100_000
    create_stream: bool = False
    batch: int = 64

    @property
    def filter_subject(self) -> str:
        """The subjects read: ``<subject>.>``."""
        subject = self.subject.rstrip(".")
        return subject if subject.endswith(">") else f"{subject}.>"


class _RunOf:
    """Which raw run a document belongs to (when the header does not say)."""

    def __init__(self) -> None:
        self._parents: dict[str, str] = {}

    def __call__(self, name: str, doc: dict[str, Any], header: str | None) -> str:
        run = header or ""
        if name == "start":
            run = run or str(doc.get("uid", ""))
        elif name in ("descriptor", "stop", "stream_resource", "resource"):
            run = run or str(doc.get("run_start", ""))
            if name != "stop" and "uid" in doc:
                self._parents[str(doc["uid"])] = run
        elif not run:
            parent = doc.get("descriptor") or doc.get("resource") or ""
            run = self._parents.get(str(parent), "")
        return run


async def _consumer(js: Any, settings: JetStreamSettings) -> str:
    """Find the stream, create or re-create the durable consumer; the stream."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    filter_subject = settings.filter_subject
    stream = settings.stream
    if stream is None:
        try:
            stream = str(await js.find_stream_name_by_subject(filter_subject))
        except NotFoundError:
            if not settings.create_stream:
                raise XSVSError(
                    f"no JetStream stream holds the subjects {filter_subject!r} on "
                    f"{settings.url}; create one (nats stream add) or give "
                    "--create-stream"
                ) from None
            stream = "xsvs-" + "".join(
                c if c.isalnum() else "-" for c in settings.subject.rstrip(".>")
            )
            await js.add_stream(name=stream, subjects=[filter_subject])
            logger.info("created JetStream stream %r for %s", stream, filter_subject)
    config = ConsumerConfig(
        durable_name=settings.durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=float(settings.ack_wait_s),
        max_ack_pending=int(settings.max_ack_pending),
        max_deliver=-1,
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.ALL
        if settings.deliver == "all"
        else DeliverPolicy.NEW,
    )
    try:
        info = await js.consumer_info(stream, settings.durable)
    except NotFoundError:
        await js.add_consumer(stream, config)
        return stream
    if info.num_ack_pending:
        # a listener died mid-run: start again at the first message not
        # acknowledged (the open run's start document) without waiting ack_wait
        floor = int(info.ack_floor.stream_seq if info.ack_floor else 0)
        logger.info(
            "consumer %r has %d unacknowledged messages: re-reading from stream "
            "sequence %d",
            settings.durable,
            info.num_ack_pending,
            floor + 1,
        )
        await js.delete_consumer(stream, settings.durable)
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = floor + 1
        await js.add_consumer(stream, config)
    return stream


async def listen_nats(
    listener: Listener,
    settings: JetStreamSettings,
    *,
    stop: threading.Event,
    on_outcome: Callable[[RunOutcome], None],
    ready: Callable[[], None] | None = None,
) -> list[RunOutcome]:
    """Analyse the documents of a JetStream stream until ``stop`` is set.

    Parameters
    ----------
    listener : Listener
        Runs the analysis and stores the derived runs.
    settings : JetStreamSettings
        Server, subject, consumer.
    stop : threading.Event
        Set it (e.g. from a signal handler) to end: the open run is aborted
        (its derived run ``abort``, its messages analysed again next time).
    on_outcome : callable
        Called with each run's :class:`RunOutcome`.
    ready : callable, optional
        Called once the consumer is bound.

    Returns
    -------
    list of RunOutcome
        The runs aborted at the end.

    Raises
    ------
    XSVSError
        The server cannot be reached, no stream holds the subject, or a
        derived run could not be stored (its messages stay on the bus).
    PickleRefusedError
        A message is a pickle.
    """
    import nats

    async def on_error(err: Exception) -> None:
        logger.warning("NATS: %s", err)

    try:
        nc = await nats.connect(
            settings.url,
            name="xsvs-bluesky listen",
            connect_timeout=5,
            max_reconnect_attempts=-1,
            error_cb=on_error,
        )
    except Exception as err:
        raise XSVSError(
            f"cannot connect to NATS at {settings.url} ({type(err).__name__}: {err})"
        ) from None
    loop = asyncio.get_running_loop()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xsvs-listen")
    held: dict[str, list[Any]] = {}
    heartbeat: asyncio.Task[None] | None = None
    aborted: list[RunOutcome] = []
    try:
        js = nc.jetstream()
        stream = await _consumer(js, settings)
        sub = await js.pull_subscribe_bind(durable=settings.durable, stream=stream)
        heartbeat = asyncio.create_task(_heartbeat(held, settings.ack_wait_s / 3))
        if ready is not None:
            ready()
        run_of = _RunOf()
        last_seq = 0
        while not stop.is_set():
            try:
                msgs = await sub.fetch(settings.batch, timeout=0.5)
            except TimeoutError:
                continue
            for msg in msgs:
                seq = int(msg.metadata.sequence.stream)
                name = msg.subject.rsplit(".", 1)[-1]
                try:
                    doc = decode_payload(msg.data, where=f"NATS subject {msg.subject}")
                except PickleRefusedError:
                    await msg.term()
                    raise
                except WireFormatError as err:
                    logger.warning("%s (dropped)", err)
                    await msg.term()
                    continue
                run = run_of(name, doc, (msg.headers or {}).get("run_id"))
                if name == "start":
                    held[run] = []
                if run not in held:  # a run that started before this consumer
                    await msg.ack()
                    continue
                held[run].append(msg)
                if seq <= last_seq:  # redelivered while held: fed already
                    continue
                last_seq = seq
                outcome = await loop.run_in_executor(worker, listener.feed, name, doc)
                if outcome is None:
                    continue
                on_outcome(outcome)
                if not outcome.stored:
                    raise RunNotStoredError(
                        f"the derived run {outcome.derived_uid} of raw run "
                        f"{outcome.raw_uid} is not stored in Tiled; its documents "
                        "stay on the bus (not acknowledged): fix the storage and "
                        "start the listener again"
                    )
                for m in held.pop(run, []):
                    await m.ack()
                await nc.flush()
        open_runs = list(held)
        if open_runs:
            reason = (
                "the listener stopped before the raw run ended; its documents were "
                "not acknowledged and are analysed again when it restarts"
            )
            aborted = await loop.run_in_executor(worker, listener.close, reason)
            for outcome in aborted:
                on_outcome(outcome)
            for run in open_runs:
                for m in held.pop(run, []):
                    await m.nak()
            await nc.flush()
        return aborted
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
        worker.shutdown(wait=True)
        try:
            await asyncio.wait_for(nc.drain(), timeout=5)
        except Exception as err:  # closing: log only
            logger.debug("NATS drain: %s", err)


async def _heartbeat(held: dict[str, list[Any]], every_s: float) -> None:
    """Tell the server the held messages are being worked on (``+WPI``)."""
    while True:
        await asyncio.sleep(max(every_s, 0.5))
        for msgs in list(held.values()):
            for msg in list(msgs):
                try:
                    await msg.in_progress()
                except Exception as err:  # e.g. a reconnect under way
                    logger.debug("in_progress: %s", err)
