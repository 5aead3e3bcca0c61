"""Documents of a stored raw run, fed to a new analysis (private).

Helpers of :mod:`xsvs_bluesky.reanalyze`:

- :func:`fetch_documents` and :func:`rebuild_documents`: the run's documents
  from the Tiled server, or rebuilt here from its metadata and data sources;
- :func:`split_datums`: StreamDatums cut into smaller reads of the files;
- :func:`via_tiled`: StreamResource/StreamDatum replaced by EventPages of
  frames read through Tiled's HTTP API;
- :func:`local_files` and :func:`n_frames`: the frame files the documents
  reference, and the frames one document carries.
"""

from __future__ import annotations

import copy
import logging
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
    """Paths of the frame files the StreamResources reference.

    A URI that names no local file gives a path that does not exist.
    """
    from xsvs_bluesky.callback import uri_to_path

    out = []
    for name, doc in docs:
        if name == "stream_resource":
            try:
                out.append(uri_to_path(str(doc["uri"])))
            except XSVSError:
                out.append(Path("/nonexistent") / str(doc["uri"]))
    return out


def via_tiled(run: Any, docs: list[Doc], size: int) -> Iterator[Doc]:
    """Replace StreamResource/StreamDatum by EventPages of frames read via Tiled."""
    resources = {d["uid"]: d for n, d in docs if n == "stream_resource"}
    streams = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    for name, doc in docs:
        if name == "descriptor":
            doc = copy.deepcopy(doc)
            for key in {r["data_key"] for r in resources.values()}:
                doc["data_keys"].get(key, {}).pop("external", None)
            yield name, doc
        elif name == "stream_datum":
            key = resources[doc["stream_resource"]]["data_key"]
            array = run[streams[doc["descriptor"]]][key]
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
        elif name != "stream_resource":
            yield name, doc


def n_frames(name: str, doc: Mapping[str, Any]) -> int:
    """Frames carried by an ``event_page`` or a ``stream_datum`` document."""
    if name == "event_page":
        return len(doc["seq_num"])
    return int(doc["indices"]["stop"]) - int(doc["indices"]["start"])
