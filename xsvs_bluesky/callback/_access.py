"""Where a callback may read the frame files a StreamResource names (private).

A callback fed from a network (``xsvs-bluesky listen``) receives file paths
written by another host: they may be mounted elsewhere here (a *path map*),
they must not let a document point the analysis at any file of this host
(*allowed roots*), and when they cannot be read the frames of that datum can
still come from the raw run stored in Tiled (a *fallback*).  A producer in
the callback's own process that still holds the frames it just wrote (the
replay of a legacy series) can hand them over without a read back
(*held frames*).  :class:`FrameAccess` holds these rules; :class:`FallbackReader` reads
the frames of one StreamResource through the fallback.  Re-exported by
:mod:`xsvs_bluesky.callback`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import XSVSError

__all__ = [
    "FallbackReader",
    "FrameAccess",
    "FrameFallback",
    "HeldFrames",
    "parse_path_map",
]

FrameFallback = Callable[[str, str, str, int, int], Any]
"""``fallback(raw_uid, stream, data_key, start, stop)``: the frames of datum
indices ``[start, stop)`` of a stored raw run (array-like), None when not
stored yet; may raise (the reason is recorded)."""

HeldFrames = Callable[[str, int, int], "NDArray[Any] | None"]
"""``held(stream_resource_uid, start, stop)``: the frames of datum indices
``[start, stop)`` that the producer in this process wrote last and still
holds in memory (``(n, rows, cols)``, valid until the producer writes again),
None when it does not hold them all (they are then read from the file)."""


def parse_path_map(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Parse ``SOURCE=TARGET`` path prefixes (``/beamline/data=/mnt/data``).

    Raises
    ------
    XSVSError
        An item without ``=``, or a prefix that is not an absolute path.
    """
    pairs = []
    for item in items:
        source, sep, target = str(item).partition("=")
        if not sep or not source.startswith("/") or not target.strip():
            raise XSVSError(
                f"path map {item!r}: give SOURCE=TARGET with an absolute SOURCE "
                "prefix, e.g. /beamline/data=/mnt/data"
            )
        pairs.append((source.rstrip("/") or "/", target.strip()))
    # the longest prefix wins
    return tuple(sorted(pairs, key=lambda p: len(p[0]), reverse=True))


@dataclass(frozen=True)
class FrameAccess:
    """How frame files named by StreamResource documents are found and checked.

    Parameters
    ----------
    path_map : sequence of (source, target)
        Path prefixes: a file under ``source`` (as the acquisition host
        names it) is read under ``target`` here; the longest prefix wins.
    allowed_roots : sequence of path or None
        Folders under which files may be read (after mapping and resolving
        symbolic links); None allows any file (a callback in the RunEngine's
        own process).  A file elsewhere is refused.
    fallback : callable, optional
        Reads the frames of a datum whose file is refused or not readable
        here from the stored raw run (see :data:`FrameFallback`).
    fallback_timeout_s : float
        At the end of a run, how long the fallback is retried (the raw run
        may not be stored yet), s.
    fallback_frames : int
        Frames asked of the fallback at a time.
    held : callable, optional
        Frames the producer in this process still holds (see
        :data:`HeldFrames`), used instead of reading back the file it just
        wrote; a datum they do not cover is read from the file.
    """

    path_map: tuple[tuple[str, str], ...] = ()
    allowed_roots: tuple[Path, ...] | None = None
    fallback: FrameFallback | None = field(default=None, compare=False)
    fallback_timeout_s: float = 60.0
    fallback_frames: int = 256
    held: HeldFrames | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        *,
        path_map: Iterable[str] | Mapping[str, str] = (),
        allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
        fallback: FrameFallback | None = None,
        fallback_timeout_s: float = 60.0,
    ) -> FrameAccess:
        """Build from ``SOURCE=TARGET`` strings (or a mapping) and root folders.

        With ``allowed_roots=None`` and a path map, the map's targets are the
        allowed roots; pass ``allowed_roots=[]`` to refuse every file.
        """
        if isinstance(path_map, Mapping):
            pairs = parse_path_map(f"{k}={v}" for k, v in path_map.items())
        else:
            pairs = parse_path_map(path_map)
        roots: tuple[Path, ...] | None
        if allowed_roots is None:
            roots = tuple(Path(t).resolve() for _, t in pairs) or None
        else:
            roots = tuple(Path(r).resolve() for r in allowed_roots)
        return cls(
            path_map=pairs,
            allowed_roots=roots,
            fallback=fallback,
            fallback_timeout_s=float(fallback_timeout_s),
        )

    def map(self, path: Path) -> Path:
        """Return the path of ``path`` on this host (the first matching prefix)."""
        text = str(PurePosixPath(path))
        for source, target in self.path_map:
            if text == source or text.startswith(source.rstrip("/") + "/"):
                rest = text[len(source) :].lstrip("/")
                return Path(target) / rest if rest else Path(target)
        return path

    def check(self, path: Path) -> str:
        """Why ``path`` (already mapped) may not be read; empty when it may."""
        if self.allowed_roots is None:
            return ""
        resolved = path.resolve()
        if any(resolved.is_relative_to(root) for root in self.allowed_roots):
            return ""
        roots = ", ".join(str(r) for r in self.allowed_roots) or "none"
        return (
            f"{path} is outside the allowed roots ({roots}); allow its folder "
            "(--allow-root) or map it (--path-map SOURCE=TARGET)"
        )


def unreadable_reason(path: Path) -> str:
    """Why the frames of ``path`` could not be read (for a failure message)."""
    if not path.exists():
        return f"{path} not found on this host"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable here (permissions)"
    return f"the frames were not in {path} in time"


class FallbackReader:
    """Frames of one StreamResource read through a :data:`FrameFallback`.

    Same interface as the HDF5 reader (``read``, ``frames_per_index``,
    ``close``); a failed attempt is retried at most every ``retry_s``.

    Parameters
    ----------
    fallback : callable
        The frame source.
    raw_uid, stream, data_key : str
        Which frames: run, stream name and data key.
    frame_shape : tuple of int
        ``(rows, cols)`` of a frame.
    frames_per_index : int
        Frames per datum index.
    why : str
        Why the file itself is not read (kept in :meth:`problem`).
    retry_s : float
        Minimum time between two attempts, s.
    """

    refused = False

    def __init__(
        self,
        fallback: FrameFallback,
        *,
        raw_uid: str,
        stream: str,
        data_key: str,
        frame_shape: tuple[int, int],
        frames_per_index: int,
        why: str,
        retry_s: float = 1.0,
    ) -> None:
        self._fallback = fallback
        self._where = (raw_uid, stream, data_key)
        self.frame_shape = frame_shape
        self.frames_per_index = frames_per_index
        self.why = why
        self.error = ""
        self._retry_s = retry_s
        self._next = 0.0

    def read(
        self, start: int, stop: int, *, partial: bool = False
    ) -> NDArray[Any] | None:
        """Frames of datum indices ``[start, stop)``, None if not available yet."""
        now = time.monotonic()
        if now < self._next:
            return None
        try:
            frames = self._fallback(*self._where, start, stop)
        except Exception as err:  # recorded: the derived run says why
            self.error = f"{type(err).__name__}: {err}"
            frames = None
        else:
            if frames is None:
                self.error = "the raw run's frames are not in Tiled (yet)"
        if frames is None:
            self._next = now + self._retry_s
            return None
        out = np.asarray(frames)
        return out.reshape(-1, *self.frame_shape)

    def problem(self) -> str:
        """Why frames are missing: the file's reason and the fallback's."""
        raw_uid, stream, key = self._where
        return (
            f"{self.why}; reading them through Tiled (raw run {raw_uid}, stream "
            f"{stream!r}, key {key!r}) failed: {self.error or 'timed out'}"
        )

    def close(self) -> None:
        """Nothing to close."""


class RefusedReader:
    """A StreamResource whose frames cannot be read at all (no fallback)."""

    refused = True

    def __init__(self, why: str, frames_per_index: int) -> None:
        self.why = why
        self.frames_per_index = frames_per_index

    def read(
        self, start: int, stop: int, *, partial: bool = False
    ) -> NDArray[Any] | None:
        """Never any frames."""
        return None

    def problem(self) -> str:
        """Why the frames are not read."""
        return self.why

    def close(self) -> None:
        """Nothing to close."""
