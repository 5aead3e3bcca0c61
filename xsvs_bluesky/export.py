"""Export a derived run to files: CSV records or a NeXus-like HDF5 file.

Files are written atomically: to a temporary file next to the target, then
renamed, so a reader never sees half a file and a failed export leaves
nothing behind.

HDF5 layout (NeXus base classes in ``NX_class`` attributes; units in
``units`` attributes)::

    /entry                   NXentry: run_uid, raw_uid, title, start_time,
                             end_time, exit_status, program_name
      sample                 NXsample: name
      metadata               NXcollection: start, stop, xsvs (JSON text)
      beta                   NXdata (default): beta[E,Q] + beta_errors, kbar,
                             M (+ _errors), n_pixels, flags (+ flag_names),
                             n_frames[E], exposure_time[E], q[Q]
      histograms             NXdata: probability[E,Q,K], probability_std,
                             counts, n_bins[E], k[K]
      trace                  NXdata: trace[E,F,Q], frame[F]
      images                 NXdata: mean_image[E,R,C] (when present)
      intensity              NXdata: intensity[E,Q] + intensity_errors
      dynamics               NXdata: gamma[Q] + gamma_errors, beta0, exponent,
                             chi2, dof, flags; D, D_errors, ... (when present)
      streams/<name>/<key>   NXcollection: every array of every stream as
                             stored in the derived run

``E`` exposures, ``Q`` partitions, ``K`` bins, ``F`` frames, ``R x C``
detector pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xsvs_bluesky._version import __version__
from xsvs_bluesky.errors import OptionError, StorageError
from xsvs_bluesky.results import to_csv

if TYPE_CHECKING:
    import h5py

    from xsvs_bluesky.results import RunResults

__all__ = [
    "EXPORT_FORMATS",
    "default_export_path",
    "export_csv",
    "export_hdf5",
    "export_results",
    "write_atomic",
]

EXPORT_FORMATS: dict[str, str] = {"csv": ".csv", "hdf5": ".h5"}
"""Export formats and their default file suffix."""

_COMPRESS_ABOVE = 4096  # elements; smaller datasets are stored uncompressed


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Parameters
    ----------
    path : path
        Target file; its folder is created if needed.
    data : bytes or str
        Content (str is written as UTF-8).

    Returns
    -------
    pathlib.Path
        The resolved target.

    Raises
    ------
    StorageError
        If the folder or the file cannot be written (no file is left).
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as handle:
            handle.write(payload)

    return _replace_atomic(path, write)


def _replace_atomic(
    path: str | os.PathLike[str], write: Callable[[Path], None]
) -> Path:
    """Create ``path`` whole or not at all: ``write`` fills a new temporary file.

    ``write`` is given a path next to the target that does not exist yet; the
    file it creates there is renamed to the target.  On any error the
    temporary file is removed; an :class:`OSError` becomes a
    :class:`StorageError` naming the target.
    """
    target = Path(path).resolve()
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, target)
    except OSError as err:
        _remove(tmp)
        raise StorageError(f"cannot write {target}: {err}") from err
    except BaseException:
        _remove(tmp)
        raise
    return target


def _remove(tmp: Path) -> None:
    """Remove a partly written file, if there is one (its folder may not be)."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def default_export_path(results: RunResults, fmt: str) -> Path:
    """``xsvs-<first 8 characters of the uid><suffix>`` in the working folder."""
    return Path(f"xsvs-{results.uid[:8]}{EXPORT_FORMATS[fmt]}")


def export_csv(results: RunResults, path: str | os.PathLike[str]) -> Path:
    """Write the result records (``RunResults.table``) as CSV.

    Columns are :data:`xsvs_bluesky.results.RECORD_KEYS`; ``flags`` joined
    with ``;``.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    return write_atomic(path, to_csv(results.table))


def _iso(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float):
        return ""
    return datetime.fromtimestamp(float(timestamp), tz=UTC).isoformat()


def _dataset(
    group: h5py.Group, name: str, value: Any, units: str | None = None, **attrs: Any
) -> None:
    import h5py

    arr = np.asarray(value)
    if arr.dtype.kind in "UO":
        arr = np.asarray(arr, dtype=object).astype(str).astype(object)
        dset = group.create_dataset(name, data=arr, dtype=h5py.string_dtype())
    elif arr.size > _COMPRESS_ABOVE:
        dset = group.create_dataset(
            name, data=arr, compression="gzip", compression_opts=4, shuffle=True
        )
    else:
        dset = group.create_dataset(name, data=arr)
    if units:
        dset.attrs["units"] = units
    for key, val in attrs.items():
        dset.attrs[key] = val


def _nxdata(
    parent: h5py.Group, name: str, signal: str, axes: list[str], **indices: int
) -> h5py.Group:
    group = parent.create_group(name)
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = axes
    for axis, index in indices.items():
        group.attrs[f"{axis}_indices"] = index
    return group


def _write_entry(entry: h5py.Group, res: RunResults) -> None:
    start, stop = res.start, res.stop or {}
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "beta"
    for key, value in (
        ("run_uid", res.uid),
        ("raw_uid", res.raw_uid or ""),
        ("title", f"XSVS analysis {res.uid}"),
        ("start_time", _iso(start.get("time"))),
        ("end_time", _iso(stop.get("time"))),
        ("exit_status", str(stop.get("exit_status", ""))),
        ("reason", str(stop.get("reason", ""))),
    ):
        _dataset(entry, key, value)
    _dataset(entry, "program_name", "xsvs_bluesky", version=__version__)
    sample = entry.create_group("sample")
    sample.attrs["NX_class"] = "NXsample"
    _dataset(sample, "name", str(start.get("sample_name", "")))
    meta = entry.create_group("metadata")
    meta.attrs["NX_class"] = "NXcollection"
    for key, doc in (("start", start), ("stop", stop), ("xsvs", res.metadata)):
        _dataset(meta, key, json.dumps(doc, default=str))

    t, q = res.exposure_times, res.q
    table = res.table
    beta = _nxdata(entry, "beta", "beta", ["exposure_time", "q"], exposure_time=0, q=1)
    beta.attrs["estimator"] = str(res.metadata.get("estimator", ""))
    _dataset(beta, "exposure_time", t, "s")
    _dataset(beta, "q", q, "1/angstrom")
    _dataset(beta, "exposure_index", res.histograms["exposure"].values)
    _dataset(beta, "n_frames", res.n_frames)
    for key, units in (("kbar", "counts/pixel/frame"), ("beta", None), ("M", None)):
        _dataset(beta, key, res.matrix(key).astype(np.float64), units)
        _dataset(beta, f"{key}_errors", res.matrix(f"{key}_err").astype(float), units)
    _dataset(beta, "n_pixels", res.matrix("n_pixels").astype(np.int64))
    flags = [";".join(f) for f in table["flags"]]
    _dataset(beta, "flags", np.asarray(flags, dtype=object).reshape(t.size, q.size))

    hist = _nxdata(
        entry,
        "histograms",
        "probability",
        ["exposure_time", "q", "k"],
        exposure_time=0,
        q=1,
        k=2,
    )
    _dataset(hist, "probability", res.histograms.values)
    _dataset(hist, "probability_std", res.histograms_std.values)
    _dataset(hist, "counts", res.counts.values)
    _dataset(hist, "n_bins", res.histograms["n_bins"].values)
    _dataset(hist, "exposure_time", t, "s")
    _dataset(hist, "q", q, "1/angstrom")
    _dataset(hist, "k", res.histograms["k"].values, "counts")

    trace = _nxdata(
        entry,
        "trace",
        "trace",
        ["exposure_time", "frame", "q"],
        exposure_time=0,
        frame=1,
        q=2,
    )
    _dataset(trace, "trace", res.trace.values, "counts/pixel/frame")
    _dataset(trace, "frame", res.trace["frame"].values)
    _dataset(trace, "n_frames", res.n_frames)
    _dataset(trace, "exposure_time", t, "s")
    _dataset(trace, "q", q, "1/angstrom")

    if res.images is not None:
        img = _nxdata(entry, "images", "mean_image", ["exposure_time", ".", "."])
        img.attrs["exposure_time_indices"] = 0
        _dataset(img, "mean_image", res.images.values, "counts/pixel/frame")
        _dataset(img, "exposure_time", t, "s")

    inten = _nxdata(
        entry, "intensity", "intensity", ["exposure_time", "q"], exposure_time=0, q=1
    )
    _dataset(inten, "intensity", res.intensity.values, "counts/pixel/frame")
    _dataset(inten, "intensity_errors", res.intensity_err.values, "counts/pixel/frame")
    _dataset(inten, "exposure_time", t, "s")
    _dataset(inten, "q", q, "1/angstrom")

    if res.dynamics is not None:
        _write_dynamics(entry, res)
    streams = entry.create_group("streams")
    streams.attrs["NX_class"] = "NXcollection"
    for name, arrays in res.streams.items():
        group = streams.create_group(name)
        group.attrs["NX_class"] = "NXcollection"
        for key, array in arrays.items():
            _dataset(group, key, array)


def _write_dynamics(entry: h5py.Group, res: RunResults) -> None:
    dyn = res.dynamics
    assert dyn is not None
    group = _nxdata(entry, "dynamics", "gamma", ["q"], q=0)
    group.attrs["model"] = str(dyn["model"].iloc[0]) if len(dyn) else ""
    _dataset(group, "q", dyn["q"].to_numpy(float), "1/angstrom")
    _dataset(group, "partition", dyn["partition"].to_numpy(np.int64))
    for key, units in (
        ("gamma", "1/s"),
        ("beta0", None),
        ("exponent", None),
    ):
        if key in dyn:
            _dataset(group, key, dyn[key].to_numpy(float), units)
            _dataset(group, f"{key}_errors", dyn[f"{key}_err"].to_numpy(float), units)
    for key in ("chi2", "dof"):
        if key in dyn:
            _dataset(group, key, dyn[key].to_numpy())
    if "flags" in dyn:
        _dataset(group, "flags", [";".join(f) for f in dyn["flags"]])
    diffusion: Mapping[str, Any] = res.diffusion or {
        "D": dyn["D"].iloc[0],
        "D_err": dyn["D_err"].iloc[0],
    }
    for key, value in diffusion.items():
        name = "D_errors" if key == "D_err" else key
        _dataset(group, name, value, "angstrom^2/s" if key in ("D", "D_err") else None)


def export_hdf5(results: RunResults, path: str | os.PathLike[str]) -> Path:
    """Write every array of the run to a NeXus-like HDF5 file (layout above).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    XSVSError
        If the file cannot be written.
    """
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w-") as handle:
            handle.attrs["default"] = "entry"
            handle.attrs["creator"] = f"xsvs_bluesky {__version__}"
            handle.attrs["file_time"] = datetime.now(UTC).isoformat()
            _write_entry(handle.create_group("entry"), results)

    return _replace_atomic(path, write)


def export_results(
    results: RunResults, fmt: str, path: str | os.PathLike[str] | None = None
) -> Path:
    """Export a run as ``"csv"`` or ``"hdf5"``.

    Parameters
    ----------
    results : RunResults
        The run.
    fmt : {"csv", "hdf5"}
        File format.
    path : path, optional
        Target file; default :func:`default_export_path`.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    XSVSError
        On an unknown format or a file that cannot be written.
    """
    if fmt not in EXPORT_FORMATS:
        raise OptionError(f"export format {fmt!r} is unknown; give one of csv, hdf5")
    out = default_export_path(results, fmt) if path is None else Path(path)
    if fmt == "csv":
        return export_csv(results, out)
    return export_hdf5(results, out)
