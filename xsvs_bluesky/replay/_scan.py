"""One pass over the frame files of a legacy series before it is replayed (private).

:func:`scan_inputs` reads every frame file once, in a thread pool: its bytes
are hashed (SHA-256), its EDF header is read (only the first kilobytes are
gunzipped) and a gzipped file whose trailer does not announce the size its
header implies is decoded to be sure it is whole.  So the content hash, the
acquisition times, the sample spots and the damaged files are known before
the start document of the replayed run exists.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import InputFileError
from xsvs_bluesky.legacy.config import ExposureSpec, LegacyConfig
from xsvs_bluesky.legacy.metadata import header_metadata, header_value
from xsvs_bluesky.options import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from xsvs_bluesky.legacy import LegacyInputs

__all__ = ["InputScan", "scan_inputs"]

_HEAD_BYTES = (4096, 65536)  # EDF headers take 1-4 kB: inflate no more than needed
_GZIP = b"\x1f\x8b"
_SCAN_BATCH = 32  # files hashed per thread-pool task


@dataclass(frozen=True)
class _Scanned:
    size: int
    sha256: str
    header: dict[str, str] | None
    problem: str | None = None


def _edf_header(raw: bytes) -> tuple[dict[str, str] | None, int]:
    """EDF header key/value pairs at the start of ``raw`` and the payload offset.

    ``raw`` may be gzipped: only the first kilobytes are inflated.  Returns
    ``(None, -1)`` when no complete header is found.
    """
    for size in _HEAD_BYTES:
        head = raw[:size]
        if raw[:2] == _GZIP:
            try:
                head = zlib.decompressobj(31).decompress(raw, size)
            except zlib.error:
                return None, -1
        start = head.find(b"{")
        end = head.find(b"}\n", start + 1)
        if start >= 0 and end >= 0:
            break
    else:
        return None, -1
    pairs: dict[str, str] = {}
    for item in head[start + 1 : end].split(b";"):
        key, sep, value = item.partition(b"=")
        if sep:
            pairs[key.strip().decode("ascii", "replace")] = value.strip().decode(
                "ascii", "replace"
            )
    return pairs, end + 2


def _gzip_problem(
    path: Path,
    raw: bytes,
    header: Mapping[str, str] | None,
    offset: int,
    limits: Limits,
) -> str | None:
    """Why a gzipped frame file is damaged, or None.

    The gzip trailer holds the inflated size: a truncated file almost never
    ends with the size the EDF header announces.  Files failing this cheap
    test (or without a readable header) are decoded to be sure (multi-member
    or zero-padded files are fine).
    """
    from xsvs_bluesky.legacy import read_frame

    size = header.get("EDF_BinarySize", header.get("Size")) if header else None
    try:
        expected = offset + int(float(size)) if size is not None else -1
    except ValueError:
        expected = -1
    if expected >= 0 and int.from_bytes(raw[-4:], "little") == expected % 2**32:
        return None
    try:
        read_frame(path, limits=limits)
    except InputFileError as exc:
        return str(exc).removeprefix(f"{path}: ").split("; ")[0]
    return None


def _scan_file(path: Path, limits: Limits) -> _Scanned:
    try:
        size = path.stat().st_size
        if size > limits.max_frame_bytes:
            return _Scanned(
                size,
                "",
                None,
                f"the file has {size} bytes, more than the limit of "
                f"{limits.max_frame_bytes} (Limits.max_frame_bytes)",
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        return _Scanned(-1, "", None, "file not found")
    except OSError as exc:
        return _Scanned(-1, "", None, f"cannot read the file ({exc.strerror or exc})")
    header, offset = _edf_header(raw)
    problem = (
        _gzip_problem(path, raw, header, offset, limits) if raw[:2] == _GZIP else None
    )
    return _Scanned(len(raw), hashlib.sha256(raw).hexdigest(), header, problem)


def _scan_batch(
    paths: Sequence[Path], limits: Limits = DEFAULT_LIMITS
) -> list[tuple[Path, _Scanned]]:
    return [(p, _scan_file(p, limits)) for p in paths]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class InputScan:
    """Sizes, SHA-256 and EDF headers of the frame files of a legacy series.

    Build it with :func:`scan_inputs`.  :attr:`exposures` are the exposures
    as acquired (:meth:`LegacyConfig.acquired_exposures`: in XPCS mode the
    one series, before binning).
    """

    def __init__(self, config: LegacyConfig, scanned: dict[Path, _Scanned]) -> None:
        self.config = config
        self.exposures = config.acquired_exposures()
        self._scanned = scanned
        self._skipped: dict[Path, str] = {
            p: s.problem for p, s in scanned.items() if s.problem is not None
        }
        self.ini_sha256 = _sha256(config.path)
        self.n_files = len(scanned)
        self.n_bytes = sum(max(s.size, 0) for s in scanned.values())

    def usable(self, spec: ExposureSpec) -> list[Path]:
        """Files of ``spec`` not known to be bad, in order."""
        return [p for p in spec.files if p not in self._skipped]

    def usable_files(self) -> Iterable[Path]:
        """Every file not known to be bad, in exposure order."""
        for spec in self.exposures:
            yield from self.usable(spec)

    def skip(self, path: Path, reason: str) -> None:
        """Record ``path`` as bad (left out)."""
        self._skipped.setdefault(path, reason)

    def skipped_records(self) -> list[tuple[str, str, str]]:
        """``(exposure, file, reason)`` of every file left out."""
        return [
            (spec.name, str(p), self._skipped[p])
            for spec in self.exposures
            for p in spec.files
            if p in self._skipped
        ]

    def frame_info(self, path: Path) -> tuple[float, int]:
        """``(time_of_day [s since 1970] or NaN, frame number or -1)`` of a file."""
        header = self._scanned[path].header or {}
        return _frame_time(header), _frame_number(header)

    def content_hash(self, inputs: LegacyInputs) -> str:
        """SHA-256 over the INI bytes, mask/flat-field hashes and frame files.

        Frame files count by name (not folder) and bytes, so a copied data
        set hashes the same; files left out as bad count as missing.
        """
        digest = hashlib.sha256(b"xsvs-bluesky legacy replay v1\n")
        digest.update(f"ini {self.ini_sha256}\n".encode())
        for name, _, sha in inputs.masks:
            digest.update(f"mask {name} {sha}\n".encode())
        digest.update(f"flat {inputs.flat_field_sha256}\n".encode())
        for spec in self.exposures:
            digest.update(f"[{spec.name}] {spec.exposure_time!r}\n".encode())
            for path in spec.files:
                sha = "-" if path in self._skipped else self._scanned[path].sha256
                digest.update(f"{path.name} {sha}\n".encode())
        return digest.hexdigest()

    def exposure_metadata(self, spec: ExposureSpec) -> dict[str, Any]:
        """Summarise what the EDF headers say about one exposure (plain JSON).

        ``start``/``end`` (ISO 8601 UTC) and ``start_timestamp``/
        ``end_timestamp`` of the first and last frame (``time_of_day``),
        ``frame_period`` (s, median within spots), ``spots`` (the frame
        counter restarting at 0 marks a new sample spot; else the INI's
        ``files in step``/``useful frames``), ``count_time`` when a header
        holds it and ``first_header`` (the first frame's header).
        """
        headers = [
            h
            for h in (self._scanned[p].header for p in self.usable(spec))
            if h is not None
        ]
        out: dict[str, Any] = {"section": spec.name, "n_headers": len(headers)}
        times = np.array([_frame_time(h) for h in headers], dtype=np.float64)
        numbers = [_frame_number(h) for h in headers]
        if times.size and np.isfinite(times).any():
            lo, hi = float(np.nanmin(times)), float(np.nanmax(times))
            out.update(
                start=_iso(lo), end=_iso(hi), start_timestamp=lo, end_timestamp=hi
            )
        sizes = _spot_sizes(numbers) if numbers and min(numbers) >= 0 else None
        source = "headers"
        if sizes is None and spec.files_in_step and spec.useful_frames:
            n, k = len(spec.files), spec.useful_frames
            sizes, source = [k] * (n // k) + ([n % k] if n % k else []), "ini"
        if sizes is not None:
            out["spots"] = {"source": source, "n_spots": len(sizes), "frames": sizes}
            period = _frame_period(times, sizes) if source == "headers" else None
            if period is not None:
                out["frame_period"] = period
        if headers:
            first = header_metadata(headers[0])
            if "count_time" in first:
                out["count_time"] = first["count_time"]
            out["first_header"] = first["header"]
        return out


def _frame_time(header: Mapping[str, str]) -> float:
    value = header_value(header.get("time_of_day", ""))
    return float(value) if isinstance(value, int | float) else math.nan


def _frame_number(header: Mapping[str, str]) -> int:
    for key in ("acq_frame_nb", "Image"):
        value = header_value(header.get(key, ""))
        if isinstance(value, int):
            return value
    return -1


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="microseconds")


def _spot_sizes(numbers: Sequence[int]) -> list[int]:
    """Frames per spot: a frame counter that does not increase starts a spot."""
    sizes = [1]
    for prev, cur in zip(numbers[:-1], numbers[1:], strict=True):
        if cur <= prev:
            sizes.append(1)
        else:
            sizes[-1] += 1
    return sizes


def _frame_period(times: NDArray[np.float64], sizes: Sequence[int]) -> float | None:
    steps: list[float] = []
    start = 0
    for size in sizes:
        block = times[start : start + size]
        steps.extend(float(d) for d in np.diff(block) if np.isfinite(d) and d > 0)
        start += size
    return statistics.median(steps) if steps else None


def scan_inputs(
    config: LegacyConfig,
    *,
    skip_bad: bool,
    threads: int,
    limits: Limits = DEFAULT_LIMITS,
) -> InputScan:
    """Hash every frame file and read its EDF header, in a thread pool.

    A file larger than ``limits.max_frame_bytes``, or a gzip file that
    inflates beyond it, is unusable (never read whole).

    Raises
    ------
    InputFileError
        A frame file is missing or unreadable (unless ``skip_bad``); the
        message names the INI file, the section and the file(s).
    """
    files = list(config.all_files())
    batches = [files[i : i + _SCAN_BATCH] for i in range(0, len(files), _SCAN_BATCH)]
    if threads > 0:
        with ThreadPoolExecutor(threads, thread_name_prefix="replay-scan") as pool:
            done = list(pool.map(partial(_scan_batch, limits=limits), batches))
    else:
        done = [_scan_batch(b, limits) for b in batches]
    scanned = {p: s for batch in done for p, s in batch}
    for spec in config.acquired_exposures():
        bad = [p for p in spec.files if scanned[p].problem is not None]
        if bad and not skip_bad:
            first = bad[0]
            raise InputFileError(
                f"{config.path}: [{spec.name}] {len(bad)} of {len(spec.files)} frame "
                f"files are unusable (first: {first}: {scanned[first].problem}); "
                "check the data dir, prefix, suffix and file numbers, or give "
                "--skip-bad-frames"
            )
    return InputScan(config, scanned)
