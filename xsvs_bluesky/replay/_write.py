"""Writing the frames of a replayed series (private; see :mod:`.replay`).

:func:`write_series` starts the raw run, decodes each exposure's frame files,
writes the frames into that exposure's HDF5 file (an
:class:`~xsvs_bluesky.replay._docs.ExposureFile`) in blocks of
``frames_per_datum`` frames and announces each block with a StreamDatum
document of the :class:`~xsvs_bluesky.replay._docs.RawRunComposer`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from xsvs_bluesky.legacy.config import ExposureSpec, LegacyConfig
from xsvs_bluesky.options import AnalysisOptions
from xsvs_bluesky.replay._docs import ExposureFile, RawRunComposer
from xsvs_bluesky.replay._scan import InputScan

__all__ = ["Progress", "SeriesJob", "write_series"]

Progress = Callable[[int, int], None]
"""``progress(files_done, files_total)``."""


class SeriesJob(Protocol):
    """What :func:`write_series` reads of a replay (a ``LegacyReplay`` has it)."""

    config: LegacyConfig
    exposures: tuple[ExposureSpec, ...]
    scan: InputScan
    shape: tuple[int, int]
    dtype: np.dtype
    skip_bad: bool
    threads: int
    frames_per_datum: int
    compression: str
    options: AnalysisOptions


def write_series(
    job: SeriesJob,
    composer: RawRunComposer,
    run_dir: Path,
    progress: Progress | None,
) -> list[int]:
    """Start the raw run, then write and announce the frames of every exposure.

    Parameters
    ----------
    job : SeriesJob
        The checked series (config, scan, shape, dtype and writing options),
        e.g. a :class:`~xsvs_bluesky.replay.LegacyReplay`.
    composer : RawRunComposer
        The documents of the raw run; it is started here, not stopped.
    run_dir : Path
        Existing folder of the run's HDF5 files, one per exposure named by
        its stream.
    progress : callable or None
        ``progress(files_done, files_total)`` after every datum and exposure.

    Returns
    -------
    list of int
        Frames written per exposure.

    Raises
    ------
    InputFileError
        A frame file is missing, damaged or mis-shaped (unless
        ``job.skip_bad``, which leaves it out and records it in
        ``composer.skipped``).
    """
    from xsvs_bluesky.legacy import FrameSeries

    composer.start()
    total = sum(len(e.files) for e in job.exposures)
    done = 0
    n_frames: list[int] = []
    for index, spec in enumerate(job.exposures):
        out = ExposureFile(
            run_dir / f"{composer.streams[index]}.h5",
            job.shape,
            job.dtype,
            exposure_time=spec.exposure_time,
            chunk_frames=job.frames_per_datum,
            compression=job.compression,
            attrs={"ini_file": str(job.config.path), "section": spec.name},
        )
        try:
            composer.begin_exposure(index, out)
            series = FrameSeries(
                job.scan.usable(spec),
                skip_bad=job.skip_bad,
                threads=job.threads,
                expected_shape=job.shape,
                expected_dtype=job.dtype,
                limits=job.options.limits,
            )
            for path, frame in series.items():
                if out.add(frame, path.name, job.scan.frame_info(path)):
                    composer.datum(index, out.flush())
                    if progress is not None:
                        progress(done + out.n_frames, total)
            if out.pending:
                composer.datum(index, out.flush())
        finally:
            out.close()
        for path, reason in series.skipped:
            job.scan.skip(path, reason)
        done += len(spec.files)
        n_frames.append(out.n_frames)
        if progress is not None:
            progress(done, total)
    composer.skipped.extend(job.scan.skipped_records())
    return n_frames
