"""Analyse a raw run stored in Tiled again, with other settings.

:func:`reanalyze` fetches the documents of a raw run from Tiled
(``run.documents()`` when the server exports ``application/json-seq``,
otherwise rebuilt from the run's metadata and data sources by
:func:`rebuild_documents`), feeds them to a NEW
:class:`~xsvs_bluesky.callback.XSVSCallback` configured with the new
estimator, partitions or flat-field use, and writes the new derived run to
the processed catalog.  Its ``original_run_uid`` is the same raw run, so
every analysis of one raw run is found with
``processed.search(Key("original_run_uid") == raw_uid)``.

Frames are read from the HDF5 files the run references when this host can
read them (fast), else through Tiled's HTTP API (``frames="tiled"``).
Masks and flat field come from the files named in the start document
(``xsvs_masks``, ``xsvs_flat_field``), checked against their recorded
SHA-256.

Examples
--------
>>> from xsvs_bluesky.reanalyze import reanalyze  # doctest: +SKIP
>>> out = reanalyze(cats, "5d80f3d5", estimator="moments")  # doctest: +SKIP
>>> out.derived_uid  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import InputFileError, XSVSError

__all__ = [
    "FRAME_SOURCES",
    "ReanalysisResult",
    "fetch_documents",
    "find_raw_run",
    "read_calibration",
    "reanalyze",
    "rebuild_documents",
]

logger = logging.getLogger(__name__)

FRAME_SOURCES: tuple[str, ...] = ("auto", "file", "tiled")
"""Where frames are read: the HDF5 files when readable here (``auto``), the
files only, or through Tiled's HTTP API."""
_FLAT_MODES = {
    "weights": "weighted",
    "divide-round": "divide-round",
    "none": "weighted",
}
_BIG_BATCH = 1_000_000
Doc = tuple[str, dict[str, Any]]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, eq=False)
class ReanalysisResult:
    """A new analysis of a stored raw run.

    Attributes
    ----------
    raw_uid : str
        The raw run analysed.
    derived_uid : str or None
        The new derived run (None if the analysis produced none).
    exit_status : str
        The new derived run's exit status; ``reason`` says why it failed.
    reason : str
    results : tuple of ExposureResult
        One per exposure.
    frames : str
        Where the frames were read: ``"file"`` or ``"tiled"``.
    seconds : float
        Wall time, s.
    """

    raw_uid: str
    derived_uid: str | None
    exit_status: str
    reason: str
    results: tuple[Any, ...]
    frames: str
    seconds: float


def find_raw_run(raw_catalog: Any, key: str) -> Any:
    """Find the raw run named by ``key``: uid, unique uid prefix, scan_id or -1.

    Raises
    ------
    XSVSError
        No such run, an ambiguous prefix, or a derived run.
    """
    text = str(key).strip()
    lookup: int | str = text
    if text.lstrip("-").isdigit() and len(text) < 5:
        lookup = int(text)
    try:
        run = raw_catalog[lookup]
    except (KeyError, IndexError, ValueError) as exc:
        raise XSVSError(
            f"no raw run {text!r} in the raw catalog ({exc}); give a uid, a unique "
            "uid prefix of >= 5 characters, a scan_id or -1 (latest)"
        ) from None
    start = run.metadata.get("start", {})
    if "original_run_uid" in start:
        raise XSVSError(
            f"run {start.get('uid')} is a derived run of raw run "
            f"{start['original_run_uid']}; give the raw run's uid"
        )
    return run


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


def _split_datums(docs: list[Doc], size: int) -> Iterator[Doc]:
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


def _local_files(docs: list[Doc]) -> list[Path]:
    from xsvs_bluesky._frames import uri_to_path

    out = []
    for name, doc in docs:
        if name == "stream_resource":
            try:
                out.append(uri_to_path(str(doc["uri"])))
            except XSVSError:
                out.append(Path("/nonexistent") / str(doc["uri"]))
    return out


def _via_tiled(run: Any, docs: list[Doc], size: int) -> Iterator[Doc]:
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


def read_calibration(
    start: Mapping[str, Any], shape: tuple[int, int], *, use_flat: bool = True
) -> tuple[list[tuple[str, NDArray[np.bool_], str]], Any]:
    """Masks and flat field named by a replayed run's start document.

    Returns
    -------
    masks : list of (name, excluded pixels, sha256)
    flat_field : (name, float64 array, sha256) or None

    Raises
    ------
    InputFileError
        A file is missing, unreadable, of another shape, or changed since
        the replay (SHA-256 differs).
    """
    from xsvs_bluesky._offline_inputs import file_sha256
    from xsvs_bluesky.core.geometry import check_mask_polarity
    from xsvs_bluesky.legacy import read_flat_field, read_mask

    uid = start.get("uid")

    def checked(entry: Mapping[str, Any], what: str) -> Path:
        path = Path(str(entry.get("path", "")))
        if not path.is_file():
            raise InputFileError(
                f"raw run {uid}: {what} {str(path)!r} not found; restore it (the "
                "analysis needs the same file) or replay the series again"
            )
        sha = file_sha256(path)
        if entry.get("sha256") and sha != entry["sha256"]:
            raise InputFileError(
                f"raw run {uid}: {what} {path} changed since the replay (sha256 "
                f"{sha[:12]}... != {str(entry['sha256'])[:12]}...); restore it or "
                "replay the series again with --force"
            )
        return path

    masks = []
    union = np.zeros(shape, dtype=bool)
    for entry in start.get("xsvs_masks") or []:
        path = checked(entry, f"mask ({entry.get('key', 'mask')})")
        excluded = read_mask(path, shape, one_is_bad=bool(entry.get("one_is_bad", 1)))
        check_mask_polarity(excluded, name=str(path))
        masks.append((path.name, excluded, str(entry.get("sha256", ""))))
        union |= excluded
    flat = None
    entry = start.get("xsvs_flat_field")
    if use_flat and isinstance(entry, Mapping):
        path = checked(entry, "flat field")
        values = read_flat_field(path, shape, mask=union)
        values[~(np.isfinite(values) & (values > 0))] = 1.0  # masked pixels only
        flat = (path.name, values, str(entry.get("sha256", "")))
    return masks, flat


def reanalyze(
    catalogs: Any,
    raw_uid: str,
    *,
    estimator: str | None = None,
    partitions: Mapping[str, Any] | None = None,
    flat_field: str = "weights",
    frames: str = "auto",
    frames_per_datum: int = 90,
    progress: Progress | None = None,
) -> ReanalysisResult:
    """Analyse raw run ``raw_uid`` again into a new derived run.

    Parameters
    ----------
    catalogs : xsvs_bluesky.storage.Catalogs
        ``raw`` (read) and ``processed`` (written) catalogs.
    raw_uid : str
        uid, unique uid prefix, scan_id or -1 (see :func:`find_raw_run`).
    estimator : str, optional
        Main estimator (default ``mle-weighted`` with a flat field used as
        weights, else ``mle``).
    partitions : mapping, optional
        q partition parameters (1/Angstrom) replacing those of the run:
        ``q1``, ``q2``, ``qs``, ``dq`` (any subset; the others are kept) or
        ``centers`` and ``dq``.
    flat_field : {"weights", "divide-round", "none"}
        How the run's flat field is used (as ``analyze``).
    frames : {"auto", "file", "tiled"}
        Where frames are read (see :data:`FRAME_SOURCES`).
    frames_per_datum : int, optional
        Frames read and histogrammed at a time.
    progress : callable, optional
        ``progress(frames_done, frames_total)``.

    Returns
    -------
    ReanalysisResult

    Raises
    ------
    XSVSError
        Unknown run or option, a run without geometry or partitions, frame
        files not readable here with ``frames="file"``.
    InputFileError
        Masks or flat field missing or changed.
    """
    import hdf5plugin  # noqa: F401  (registers the Blosc filter of replayed files)

    from xsvs_bluesky.callback import XSVSCallback
    from xsvs_bluesky.core.estimators import check_estimator
    from xsvs_bluesky.core.geometry import Geometry
    from xsvs_bluesky.offline import default_estimator
    from xsvs_bluesky.storage import make_tiled_writer

    t0 = time.perf_counter()
    if flat_field not in _FLAT_MODES or frames not in FRAME_SOURCES:
        raise XSVSError(
            f"flat field {flat_field!r} / frames {frames!r}: give one of "
            f"{', '.join(_FLAT_MODES)} / {', '.join(FRAME_SOURCES)}"
        )
    if estimator is not None:
        check_estimator(estimator)
    run = find_raw_run(catalogs.raw, raw_uid)
    start = run.metadata["start"]
    uid = str(start["uid"])
    stop = run.metadata.get("stop") or {}
    if stop.get("exit_status") != "success":
        raise XSVSError(
            f"raw run {uid} did not finish (exit_status "
            f"{stop.get('exit_status')!r}: {stop.get('reason', '')}); analyse a "
            "complete run"
        )
    if not isinstance(start.get("xsvs_geometry"), Mapping):
        raise XSVSError(f"raw run {uid} has no xsvs_geometry; cannot analyse it")
    geometry = Geometry.from_dict(start["xsvs_geometry"])
    spec = _partitions(start, partitions)
    masks, flat = read_calibration(start, geometry.shape, use_flat=flat_field != "none")
    writer = make_tiled_writer(catalogs.processed, batch_size=_BIG_BATCH)
    callback = XSVSCallback(
        geometry=geometry,
        partitions=spec,
        masks=masks,
        flat_field=flat,
        flat_field_mode=_FLAT_MODES[flat_field],
        estimator=estimator or default_estimator(flat is not None, flat_field),
        emit=writer,
    )
    docs = fetch_documents(run)
    source = frames
    if frames != "tiled":
        missing = [p for p in _local_files(docs) if not p.is_file()]
        if missing and frames == "file":
            raise XSVSError(
                f"raw run {uid}: {len(missing)} frame file(s) not readable here "
                f"(first: {missing[0]}); use frames='tiled' (--frames tiled)"
            )
        source = "tiled" if missing else "file"
    stream = (
        _via_tiled(run, docs, frames_per_datum)
        if source == "tiled"
        else _split_datums(docs, frames_per_datum)
    )
    total = int(start.get("num_points") or 0)
    done = 0
    for name, doc in stream:
        callback(name, doc)
        if progress is not None and name in ("stream_datum", "event_page"):
            done += _n_frames(name, doc)
            progress(done, max(total, done))
    record = callback.records.get(uid)
    if record is None:
        raise XSVSError(f"raw run {uid}: no frames were analysed")
    return ReanalysisResult(
        raw_uid=uid,
        derived_uid=record.derived_uid,
        exit_status=record.exit_status,
        reason=record.reason,
        results=tuple(record.results),
        frames=source,
        seconds=time.perf_counter() - t0,
    )


def _n_frames(name: str, doc: Mapping[str, Any]) -> int:
    if name == "event_page":
        return len(doc["seq_num"])
    return int(doc["indices"]["stop"]) - int(doc["indices"]["start"])


def _partitions(
    start: Mapping[str, Any], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Merge the run's partition parameters with the ``given`` ones."""
    spec = dict(start.get("xsvs_partitions") or start.get("partitions") or {})
    new = {k: v for k, v in (given or {}).items() if v is not None}
    if "centers" in new:
        spec = {"dq": spec.get("dq")}
    elif any(k in new for k in ("q1", "q2", "qs")):
        spec.pop("centers", None)
    spec.update(new)
    keys = ("centers", "dq") if "centers" in spec else ("q1", "q2", "qs", "dq")
    missing = [k for k in keys if spec.get(k) is None]
    if missing:
        raise XSVSError(
            f"raw run {start.get('uid')}: q partitions lack {', '.join(missing)}; "
            "give them (--q1 --q2 --qs --dq, 1/Angstrom)"
        )
    return {k: spec[k] for k in keys}
