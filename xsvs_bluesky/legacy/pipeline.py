"""Stream the frames of a legacy series as stacks, one exposure after another.

:class:`SeriesReader` decodes every frame file of a list of exposures in
one background thread pool (:class:`~xsvs_bluesky.legacy.FrameSeries`, zlib
releases the GIL) while the caller histograms the previous stack in its own
thread.  Stacks never mix exposures; exposures whose frames are binned
(pyxsvs XPCS mode, ``ExposureSpec.bin_factor > 1``) are summed over
non-overlapping groups of consecutive files.  Exposures made of the same
files (XPCS mode: one per binning factor) share one decode of each file.

Errors name the INI file and the exposure section, e.g.
``xsvs_input.txt: [Exp_3] .../f_0777.edf.gz: truncated gzip stream ...``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.core.histogram import FrameBinner
from xsvs_bluesky.errors import InputFileError, OptionError
from xsvs_bluesky.legacy.config import ExposureSpec
from xsvs_bluesky.legacy.edf import read_frame
from xsvs_bluesky.legacy.frames import FrameSeries, check_files_exist
from xsvs_bluesky.options import DEFAULT_LIMITS, Limits

__all__ = ["SeriesReader", "SkippedFile"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedFile:
    """A frame file left out with ``skip_bad=True``.

    Attributes
    ----------
    exposure : str
        Exposure section name, e.g. ``"Exp_3"``.
    path : Path
        The file.
    reason : str
        Why it was skipped (missing, truncated, corrupt, other shape).
    """

    exposure: str
    path: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        """Plain JSON types."""
        return {
            "exposure": self.exposure,
            "path": str(self.path),
            "reason": self.reason,
        }


class SeriesReader:
    """Frames of several exposures as ``(exposure index, stack)`` pairs.

    Parameters
    ----------
    exposures : sequence of ExposureSpec
        The exposures, in analysis order.
    where : str, optional
        Prefix of error messages (the INI file).
    frames_per_exposure : int, optional
        Use at most this many (binned) frames per exposure: the first ones.
    skip_bad : bool, optional
        False (default): a missing, truncated, corrupt or mis-shaped file
        raises :class:`~xsvs_bluesky.errors.InputFileError`.  True: such
        files are left out and listed in :attr:`skipped`.
    threads : int, optional
        Decoding threads (default 2; 0 decodes in the calling thread).
    chunk_size : int, optional
        Frames per stack (default 64).

    Attributes
    ----------
    files : tuple of tuple of Path
        The files of each exposure (after ``frames_per_exposure``).
    skipped : list of SkippedFile
        Files left out by the last :meth:`stacks` (``skip_bad=True``).
    files_read : int
        Files decoded so far by :meth:`stacks` (for progress reports).

    Raises
    ------
    InputFileError
        Frame files are missing (unless ``skip_bad``), naming the section.
    ValueError
        On a non-positive ``frames_per_exposure`` or ``chunk_size``.
    """

    def __init__(
        self,
        exposures: Sequence[ExposureSpec],
        *,
        where: str = "",
        frames_per_exposure: int | None = None,
        skip_bad: bool = False,
        threads: int = 2,
        chunk_size: int = 64,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        self.first_path: Path | None = None
        """The file :meth:`first_frame` read."""
        if frames_per_exposure is not None and frames_per_exposure < 1:
            raise OptionError(
                f"frames_per_exposure = {frames_per_exposure}; give an integer >= 1"
            )
        if chunk_size < 1:
            raise OptionError(f"chunk_size = {chunk_size}; give an integer >= 1")
        self.exposures = tuple(exposures)
        self.where = where
        self.skip_bad = skip_bad
        self.threads = threads
        self.chunk_size = chunk_size
        self.skipped: list[SkippedFile] = []
        self.files_read = 0
        self.files: tuple[tuple[Path, ...], ...] = tuple(
            spec.files
            if frames_per_exposure is None
            else spec.files[: frames_per_exposure * spec.bin_factor]
            for spec in self.exposures
        )
        # exposures listing the same files (XPCS: one per binning factor)
        # share one decode: group them by their full file list
        groups: dict[tuple[Path, ...], list[int]] = {}
        for i, spec in enumerate(self.exposures):
            groups.setdefault(spec.files, []).append(i)
        self._groups = [
            (members, max((self.files[i] for i in members), key=len))
            for members in groups.values()
        ]
        for members, files in self._groups:
            try:
                check_files_exist(files)
            except InputFileError as exc:
                if not skip_bad:
                    raise self._error(members, str(exc)) from None
                # FrameSeries logs and records them when the frames are read

    def _section(self, members: Sequence[int]) -> str:
        if len(members) > 1 or self.exposures[members[0]].bin_factor > 1:
            return "Exp_bins"  # pyxsvs XPCS mode: one section, several exposures
        return self.exposures[members[0]].name

    def _error(self, members: Sequence[int], message: str) -> InputFileError:
        prefix = f"{self.where}: " if self.where else ""
        return InputFileError(f"{prefix}[{self._section(members)}] {message}")

    @property
    def n_files(self) -> int:
        """Number of frame files to decode (files shared by exposures once)."""
        return sum(len(files) for _, files in self._groups)

    @property
    def n_frames(self) -> tuple[int, ...]:
        """Expected (binned) frames per exposure, before any file is skipped."""
        return tuple(
            len(f) // spec.bin_factor
            for spec, f in zip(self.exposures, self.files, strict=True)
        )

    def first_frame(self) -> NDArray[np.generic]:
        """Decode the first readable frame (its shape and dtype set the series').

        Raises
        ------
        InputFileError
            If the first file is damaged (unless ``skip_bad``) or no file at
            all can be read.
        """
        for members, files in self._groups:
            for path in files:
                try:
                    frame = read_frame(path, limits=self.limits)
                    self.first_path = path
                    return frame
                except InputFileError as exc:
                    if not self.skip_bad:
                        raise self._error(members, str(exc)) from None
                    logger.debug("no frame shape from %s: %s", path, exc)
        prefix = f"{self.where}: " if self.where else ""
        raise InputFileError(
            f"{prefix}no readable frame file in any exposure; check the data dir "
            "and the frame files"
        )

    def stacks(
        self, shape: Sequence[int], dtype: np.dtype
    ) -> Iterator[tuple[int, NDArray[np.generic]]]:
        """Iterate over ``(exposure index, frames)``, file by file.

        Parameters
        ----------
        shape : sequence of int
            Frame shape (rows, columns); other shapes are bad frames.
        dtype : numpy.dtype
            Frame dtype; other dtypes are bad frames.

        Yields
        ------
        index : int
            Position of the exposure in ``exposures``.
        frames : numpy.ndarray
            ``(n, rows, cols)`` stack of up to ``chunk_size`` frames (binned
            when the exposure has ``bin_factor > 1``).  It may be a view of a
            buffer reused for the next stack: use it before asking for more.

        Raises
        ------
        InputFileError
            A damaged or mis-shaped file (unless ``skip_bad``), naming the
            INI file, the exposure section and the frame file.
        """
        order = [
            (g, k, path)
            for g, (_, files) in enumerate(self._groups)
            for k, path in enumerate(files)
        ]
        series = FrameSeries(
            [path for _, _, path in order],
            skip_bad=self.skip_bad,
            threads=self.threads,
            expected_shape=shape,
            expected_dtype=dtype,
            limits=self.limits,
        )
        self.files_read = 0
        self.skipped = []
        buffer = np.empty((self.chunk_size, *shape), dtype=dtype)
        where = np.empty(self.chunk_size, dtype=np.int64)  # group positions
        fill = 0
        group = 0
        binners = self._binners(0)
        position = 0  # next entry of ``order`` not yet seen
        items = series.items()
        while True:
            try:
                path, frame = next(items)
            except StopIteration:
                break
            except InputFileError as exc:
                members = self._groups[order[min(position, len(order) - 1)][0]][0]
                raise self._error(members, str(exc)) from None
            # files skipped by the series do not come out: advance to this one
            while order[position][2] != path:
                self._skip(order[position], series)
                position += 1
            g, k, _ = order[position]
            position += 1
            self.files_read += 1
            if g != group or fill == self.chunk_size:
                yield from self._emit(group, buffer[:fill], where[:fill], binners)
                if g != group:
                    self._end_group(group, binners)
                    group, binners = g, self._binners(g)
                fill = 0
            buffer[fill] = frame
            where[fill] = k
            fill += 1
        yield from self._emit(group, buffer[:fill], where[:fill], binners)
        self._end_group(group, binners)
        for entry in order[position:]:
            self._skip(entry, series)

    def _binners(self, group: int) -> dict[int, FrameBinner]:
        members, _ = self._groups[group]
        return {
            i: FrameBinner(self.exposures[i].bin_factor)
            for i in members
            if self.exposures[i].bin_factor > 1
        }

    def _emit(
        self,
        group: int,
        frames: NDArray[np.generic],
        where: NDArray[np.int64],
        binners: dict[int, FrameBinner],
    ) -> Iterator[tuple[int, NDArray[np.generic]]]:
        """Yield the frames of a group's stack to every member exposure."""
        if frames.shape[0] == 0:
            return
        for i in self._groups[group][0]:
            # not the files beyond this exposure's own limit (frames_per_exposure)
            own = frames[: int(np.searchsorted(where, len(self.files[i])))]
            binner = binners.get(i)
            out = own if binner is None else binner.push(own)
            if out.shape[0]:
                yield i, out

    def _end_group(self, group: int, binners: dict[int, FrameBinner]) -> None:
        for i, binner in binners.items():
            if binner.pending:
                logger.info(
                    "[%s] %d frame files left over after binning by %d are not used",
                    self.exposures[i].name,
                    binner.pending,
                    binner.n,
                )

    def _skip(self, entry: tuple[int, int, Path], series: FrameSeries) -> None:
        group, _, path = entry
        reasons = dict(series.skipped)
        members = self._groups[group][0]
        self.skipped.append(
            SkippedFile(
                ",".join(self.exposures[i].name for i in members),
                path,
                reasons.get(path, "unread"),
            )
        )
