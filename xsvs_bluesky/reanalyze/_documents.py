"""Documents of a stored raw run, fed to a new analysis (private).

Helpers of :mod:`xsvs_bluesky.reanalyze`:

- :func:`fetch_documents` and :func:`rebuild_documents`: the run's documents
  from the Tiled server, or rebuilt here from its metadata and data sources;
- :func:`split_datums`: StreamDatums cut into smaller reads of the files;
- :func:`via_tiled`: StreamResource/StreamDatum, or legacy Resource/Datum
  and the Events that reference them, replaced by EventPages of frames read
  through Tiled's HTTP API;
- :func:`local_files` and :func:`n_frames`: the frame files the documents
  reference, and the frames one document carries.

Legacy Resource/Datum documents are what runs kept in MongoDB hold (ophyd
area detectors before StreamResource); a Tiled server over such a catalog
(databroker's ``MongoAdapter``) exports them as they were stored.
"""

from __future__ import annotations

import copy
import logging
import posixpath
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xsvs_bluesky.errors import XSVSError

__all__ = [
    "Doc",
    "fetch_documents",
    "local_files",
    "n_frames",
    "rebuild_documents",
    "split_datums",
    "via_tiled",
]

logger = logging.getLogger(__name__)

Doc = tuple[str, dict[str, Any]]
"""One ``(name, document)`` pair of the bluesky document stream."""


def fetch_documents(run: Any) -> list[Doc]:
    """Fetch the documents of a stored run from the server, or rebuild them here.

    ``run.documents()`` needs the json-seq exporter on the server; when it
    is missing (or fails) the documents are rebuilt from the run's metadata
    and data sources (:func:`rebuild_documents`).
    """
    try:
        docs = [(str(name), dict(doc)) for name, doc in run.documents()]
    except Exception as exc:  # the exporter is optional on a server
        logger.info("run.documents() failed (%s); rebuilding the documents", exc)
        return rebuild_documents(run)
    if not docs or docs[0][0] != "start":
        return rebuild_documents(run)
    return docs


def rebuild_documents(run: Any) -> list[Doc]:
    """Start, per stream descriptor(s) + StreamResource/StreamDatum, stop.

    Works with any Tiled server: only the run's metadata, its streams'
    metadata and the data sources of external (``STREAM:``) data keys are
    read.  Inline Event data are not rebuilt (replayed and fly-scanned runs
    have none).
    """
    from bluesky_tiled_plugins.exporters import build_descriptor_docs

    start = dict(run.metadata["start"])
    docs: list[Doc] = [("start", start)]
    for stream in run:
        node = run[stream]
        meta = dict(node.metadata)
        descriptors = build_descriptor_docs(meta, stream, run_start_uid=start["uid"])
        docs.extend(("descriptor", d) for d in descriptors)
        for key, data_key in meta.get("data_keys", {}).items():
            if not str(data_key.get("external", "")).upper().startswith("STREAM"):
                continue
            array = node[key]
            source = array.data_sources()[0]
            uris = [a.data_uri for a in sorted(source.assets, key=lambda a: a.num or 0)]
            n = int(array.shape[0])
            uid = f"sr-{descriptors[0]['uid']}-{key}"
            docs.append(
                (
                    "stream_resource",
                    {
                        "uid": uid,
                        "data_key": key,
                        "mimetype": source.mimetype,
                        "uri": uris[0],
                        "parameters": dict(source.parameters),
                        "run_start": start["uid"],
                    },
                )
            )
            docs.append(("stream_datum", _datum(uid, descriptors[0]["uid"], 0, n)))
    docs.append(("stop", dict(run.metadata.get("stop") or {})))
    return docs


def _datum(resource: str, descriptor: str, start: int, stop: int) -> dict[str, Any]:
    return {
        "uid": f"{resource}/{start}",
        "stream_resource": resource,
        "descriptor": descriptor,
        "indices": {"start": start, "stop": stop},
        "seq_nums": {"start": start + 1, "stop": stop + 1},
    }


def split_datums(docs: list[Doc], size: int) -> Iterator[Doc]:
    """Split StreamDatums into ones of at most ``size`` indices (smaller reads)."""
    for name, doc in docs:
        if name != "stream_datum":
            yield name, doc
            continue
        lo, hi = int(doc["indices"]["start"]), int(doc["indices"]["stop"])
        seq0 = int(doc["seq_nums"]["start"]) - lo
        for a in range(lo, hi, size):
            part = _datum(
                doc["stream_resource"], doc["descriptor"], a, min(a + size, hi)
            )
            part["seq_nums"] = {"start": a + seq0, "stop": min(a + size, hi) + seq0}
            yield name, part


def local_files(docs: list[Doc]) -> list[Path]:
    """Paths of the frame files the StreamResources and legacy Resources name.

    A URI that names no local file gives a path that does not exist.
    """
    from xsvs_bluesky.callback import uri_to_path

    out = []
    for name, doc in docs:
        if name not in ("stream_resource", "resource"):
            continue
        uri = str(doc["uri"]) if name == "stream_resource" else _resource_file(doc)
        try:
            out.append(uri_to_path(uri))
        except XSVSError:
            out.append(Path("/nonexistent") / uri)
    return out


def _resource_file(doc: Mapping[str, Any]) -> str:
    """Return the file a legacy Resource names: its ``root`` joined with its path."""
    path = str(doc.get("resource_path", ""))
    root = str(doc.get("root") or "")
    return posixpath.join(root, path.lstrip("/")) if root else path


def via_tiled(run: Any, docs: list[Doc], size: int) -> Iterator[Doc]:
    """Replace external frame references by EventPages of frames read via Tiled.

    StreamResource/StreamDatum pairs become EventPages of at most ``size``
    frames each.  Legacy Resource/Datum documents are dropped, and the
    Events of a stream whose data keys reference them become EventPages of
    at most ``size`` events, the referenced arrays read through Tiled (the
    server fills them with its handlers), just before the stop document.
    """
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    streams = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    stream_keys = {r["data_key"] for r in resources.values()}
    legacy: dict[str, list[str]] = {}  # descriptor uid -> keys of legacy data
    events: dict[str, list[dict[str, Any]]] = {}  # of those descriptors
    for name, doc in docs:
        if name == "descriptor":
            keys = _legacy_keys(doc)
            if keys:
                legacy[doc["uid"]] = keys
                events[doc["uid"]] = []
            doc = copy.deepcopy(doc)
            for key in stream_keys | set(keys):
                doc["data_keys"].get(key, {}).pop("external", None)
            yield name, doc
        elif name == "stream_datum":
            key = resources[doc["stream_resource"]]["data_key"]
            array = _stream_array(run, streams[doc["descriptor"]], key)
            lo, hi = int(doc["indices"]["start"]), int(doc["indices"]["stop"])
            for a in range(lo, hi, size):
                frames = np.asarray(array[a : min(a + size, hi)])
                n = frames.shape[0]
                now = time.time()
                yield (
                    "event_page",
                    {
                        "descriptor": doc["descriptor"],
                        "uid": [f"{doc['uid']}-{a + i}" for i in range(n)],
                        "seq_num": list(range(a + 1, a + n + 1)),
                        "time": [now] * n,
                        "data": {key: frames},
                        "timestamps": {key: [now] * n},
                        "filled": {},
                    },
                )
        elif name in ("event", "event_page") and doc["descriptor"] in legacy:
            events[doc["descriptor"]].extend(_unpack(name, doc))
        elif name == "stop":
            for uid, keys in legacy.items():
                yield from _legacy_pages(run, streams[uid], keys, events[uid], size)
            yield name, doc
        elif name not in ("stream_resource", "resource", "datum", "datum_page"):
            yield name, doc


def _legacy_keys(descriptor: Mapping[str, Any]) -> list[str]:
    """Return the data keys whose values are legacy Datum references."""
    return sorted(
        key
        for key, data_key in descriptor.get("data_keys", {}).items()
        if data_key.get("external")
        and not str(data_key["external"]).upper().startswith("STREAM")
    )


def _unpack(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the Events of an ``event`` or ``event_page`` document."""
    if name == "event":
        return [doc]
    from event_model import unpack_event_page

    page: Any = doc  # a plain dict, not event_model's TypedDict
    return [dict(e) for e in unpack_event_page(page)]


def _stream_array(run: Any, stream: str, key: str) -> Any:
    """Return the array of ``key`` in a stream, in either Tiled layout of runs.

    Catalogs written by ``TiledWriter`` hold the key in the stream node;
    databroker's MongoDB adapter serves it under the stream's ``data`` node.
    """
    node = run[stream]
    try:
        return node[key]
    except KeyError:
        return node["data"][key]


def _legacy_pages(
    run: Any, stream: str, keys: list[str], events: list[dict[str, Any]], size: int
) -> Iterator[Doc]:
    """EventPages of a stream's events with their legacy data read via Tiled.

    Row ``seq_num - 1`` of a key's array in Tiled is the value of the event
    with that ``seq_num``; consecutive events are read ``size`` at a time.
    """
    events = sorted(events, key=lambda e: int(e["seq_num"]))
    arrays = {key: _stream_array(run, stream, key) for key in keys}
    i = 0
    while i < len(events):
        j = i + 1
        first = int(events[i]["seq_num"])
        while (
            j < len(events)
            and j - i < size
            and int(events[j]["seq_num"]) == first + (j - i)
        ):
            j += 1
        block = events[i:j]
        data: dict[str, Any] = {
            k: [e["data"][k] for e in block] for k in block[0]["data"]
        }
        stamps = {k: [e["timestamps"].get(k) for e in block] for k in data}
        for key, array in arrays.items():
            data[key] = np.asarray(array[first - 1 : first - 1 + len(block)])
        yield (
            "event_page",
            {
                "descriptor": block[0]["descriptor"],
                "uid": [e["uid"] for e in block],
                "seq_num": [int(e["seq_num"]) for e in block],
                "time": [e["time"] for e in block],
                "data": data,
                "timestamps": stamps,
                "filled": {},
            },
        )
        i = j


def n_frames(name: str, doc: Mapping[str, Any]) -> int:
    """Frames carried by an ``event_page`` or a ``stream_datum`` document."""
    if name == "event_page":
        return len(doc["seq_num"])
    return int(doc["indices"]["stop"]) - int(doc["indices"]["start"])
