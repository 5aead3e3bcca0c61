"""Accumulation of the frames of one exposure: :class:`ExposureAnalysis`.

Public names are re-exported by :mod:`xsvs_bluesky.analysis`.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.analysis._result import ExposureResult, failed_estimates
from xsvs_bluesky.core.estimators import (
    INTENSITY_ESTIMATOR,
    ContrastEstimate,
    IntensityGroups,
    check_estimator,
    estimate_contrast,
    fit_intensity,
    intensity_groups,
)
from xsvs_bluesky.core.geometry import Partitions, PixelGroups
from xsvs_bluesky.core.histogram import Backend, HistogramAccumulator
from xsvs_bluesky.core.images import ImageAverager, radial_profile
from xsvs_bluesky.errors import (
    EstimatorError,
    FrameDataError,
    GeometryError,
    OptionError,
    XSVSError,
)
from xsvs_bluesky.options import (
    DEFAULT_EXTRA_ESTIMATORS,
    FlatFieldMode,
    default_estimator,
)

__all__ = [
    "GROUPED_ESTIMATORS",
    "ExposureAnalysis",
    "checked_flat",
    "estimator_groups",
]

logger = logging.getLogger(__name__)

GROUPED_ESTIMATORS = frozenset({"mle-weighted", INTENSITY_ESTIMATOR})
"""Estimators fitted on pixel groups of a partition (not its pooled histogram)."""
_FRAME_ESTIMATORS = frozenset({"mle-frames", "pyxsvs-lsq"})
INTENSITY_SUB_RINGS = 4
"""Radial sub-rings per partition of the ``mle-intensity`` groups."""
_LEGACY_MEAN_FRAMES = 200  # pyxsvs chose its bins from the first 200 frames


class ExposureAnalysis:
    """Accumulate the frames of one exposure and estimate the contrast.

    Build it directly or with :meth:`AnalysisSetup.new_exposure`.

    Parameters
    ----------
    partitions : Partitions
        q partitions (masked pixels already excluded).
    stream : str, optional
        Raw stream name, carried into the results.
    exposure_time : float, optional
        Exposure time of one frame in s (NaN when unknown).
    estimator : str, optional
        Main estimator (see ``xsvs_bluesky.core.estimators.estimate_contrast``);
        default :func:`default_estimator` (``mle-intensity`` when ``q_map``
        or intensity groups are given).
    extra_estimators : sequence of str, optional
        Estimators also evaluated at the end of the exposure.
    flat_field : array_like, optional
        Pixel efficiency map (mean 1) of the detector shape.
    flat_field_mode : FlatFieldMode or str
        ``"weights"`` (default): counts stay integer; the efficiencies
        enter ``"mle-intensity"`` (its groups are split by efficiency) and
        ``"mle-weighted"`` (each partition split into ``n_groups``
        efficiency groups).  ``"divide-round"``: the legacy
        pyxsvs correction, each frame divided by the flat field and rounded
        (biased; to reproduce old results).  ``"record-only"``: the flat
        field only scales ``I(q)``.  ``"none"``: ``flat_field`` is ignored.
        Older names are accepted (:meth:`FlatFieldMode.parse`).
    groups : PixelGroups, optional
        Groups to use instead of splitting ``partitions``: efficiency groups
        for ``"mle-weighted"``, or the
        :func:`~xsvs_bluesky.core.estimators.intensity_groups` of
        ``"mle-intensity"`` (then shared by ``"mle-weighted"``).
    q_map : array_like, optional
        q of every pixel (1/Angstrom), the map ``partitions`` were built on;
        ``"mle-intensity"`` (main or extra) needs it unless ``groups`` are
        intensity groups.  Its groups (:func:`estimator_groups`) are built
        here, before any frame, from the q map and (``"weights"`` mode) the
        flat field only.
    n_groups : int, optional
        Groups per partition: efficiency groups of ``"mle-weighted"``, or
        (sub-rings) x (efficiency groups) of ``"mle-intensity"``.
    n_bins : int, optional
        Initial number of histogram bins (they grow, nothing is dropped).
    backend : str, optional
        Histogram backend, ``"auto"``, ``"numba"`` or ``"numpy"``.
    estimator_options : mapping, optional
        Extra keyword arguments for the main estimator.
    keep_image : bool, optional
        Keep the time-averaged image (default True).
    source : str, optional
        Free text carried into the results (raw run uid, file name).

    Raises
    ------
    GeometryError
        If the flat field's shape differs from the partitions', or
        ``"mle-intensity"`` is asked for without a q map.
    OptionError
        On an unknown ``flat_field_mode`` (also a ValueError).
    """

    def __init__(
        self,
        partitions: Partitions,
        *,
        stream: str = "primary",
        exposure_time: float = math.nan,
        estimator: str | None = None,
        extra_estimators: Sequence[str] = DEFAULT_EXTRA_ESTIMATORS,
        flat_field: ArrayLike | None = None,
        flat_field_mode: FlatFieldMode | str = FlatFieldMode.WEIGHTS,
        groups: PixelGroups | None = None,
        q_map: ArrayLike | None = None,
        n_groups: int = 16,
        n_bins: int = 32,
        backend: Backend = "auto",
        estimator_options: Mapping[str, Any] | None = None,
        keep_image: bool = True,
        source: str = "",
    ) -> None:
        mode = FlatFieldMode.parse(flat_field_mode)
        if mode is FlatFieldMode.NONE:
            flat_field = None
        self.partitions = partitions
        self.stream = str(stream)
        self.exposure_time = float(exposure_time)
        has_q = q_map is not None or isinstance(groups, IntensityGroups)
        self.estimator = check_estimator(
            estimator
            or default_estimator(flat_field is not None, mode, has_q_map=has_q)
        )
        self.extra_estimators = tuple(
            check_estimator(e) for e in extra_estimators if e != self.estimator
        )
        self.estimator_options = dict(estimator_options or {})
        self.source = source
        self.flat_field_mode = mode
        self._flat = checked_flat(flat_field, partitions.shape)
        self._q_eff: NDArray[np.float64] | None = None  # of the last fit
        # the grouped estimators need histograms per pixel group; when the
        # groups tile the partitions, their accumulator also sums the
        # partition histograms (P(k), its per-frame std, the trace) in the
        # same pass over the pixels, else a second accumulator does
        self._group_acc: HistogramAccumulator | None = None
        groups = estimator_groups(
            partitions,
            (self.estimator, *self.extra_estimators),
            flat_field=self._flat if mode is FlatFieldMode.WEIGHTS else None,
            q_map=q_map,
            groups=groups,
            n_groups=n_groups,
        )
        if groups is not None:
            # a frame estimator keeps per-frame histograms of the partitions:
            # those of the groups would be G/Q times larger, so apart
            nested = self.estimator not in _FRAME_ESTIMATORS
            self._group_acc = _group_accumulator(
                groups, partitions if nested else None, n_bins, backend
            )
        if self._group_acc is not None and self._group_acc.parents is not None:
            self._acc = self._group_acc.parents
        else:
            self._acc = HistogramAccumulator(
                partitions,
                n_bins=n_bins,
                backend=backend,
                keep_frame_histograms=self.estimator in _FRAME_ESTIMATORS,
            )
        self._image = ImageAverager(partitions.shape) if keep_image else None
        # legacy bins: mean of frame / flat (not rounded) over the first frames
        self._legacy_sum: NDArray[np.float64] | None = None
        if (
            self.estimator == "pyxsvs-lsq"
            and self._flat is not None
            and mode is FlatFieldMode.DIVIDE_ROUND
            and "legacy_mean" not in self.estimator_options
        ):
            self._legacy_sum = np.zeros(partitions.shape)
        self._legacy_n = 0

    def spawn(
        self, stream: str, exposure_time: float = math.nan, *, source: str = ""
    ) -> ExposureAnalysis:
        """Return a fresh analysis with these settings and no frame yet.

        Constant work is shared, not redone: partitions, flat field,
        efficiency groups and the pixel layouts of the histograms.

        Parameters
        ----------
        stream, exposure_time, source : see :class:`ExposureAnalysis`.

        Returns
        -------
        ExposureAnalysis
        """
        new = copy.copy(self)  # every mutable attribute is replaced below
        new.stream = str(stream)
        new.exposure_time = float(exposure_time)
        new.source = source
        new.estimator_options = dict(self.estimator_options)
        new._group_acc = None if self._group_acc is None else self._group_acc.spawn()
        if new._group_acc is not None and new._group_acc.parents is not None:
            new._acc = new._group_acc.parents
        else:
            new._acc = self._acc.spawn()
        if self._image is not None:
            new._image = ImageAverager(self.partitions.shape)
        if self._legacy_sum is not None:
            new._legacy_sum = np.zeros(self.partitions.shape)
        new._legacy_n = 0
        return new

    @property
    def n_frames(self) -> int:
        """Frames accumulated so far."""
        return int(self._acc.n_frames)

    @property
    def accumulator(self) -> HistogramAccumulator:
        """The per-partition histogram accumulator."""
        return self._acc

    def update(self, frames: ArrayLike) -> int:
        """Add one frame ``(rows, cols)`` or a stack ``(n, rows, cols)``.

        Parameters
        ----------
        frames : array_like
            Photon counts.  Floating-point frames must hold whole numbers.

        Returns
        -------
        int
            Number of frames added.

        Raises
        ------
        GeometryError
            If the frame shape differs from the detector shape.
        XSVSError
            If floating-point frames hold non-integer counts.
        """
        arr = np.asarray(frames)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != self.partitions.shape:
            raise GeometryError(
                f"frames of shape {arr.shape} do not match the detector shape "
                f"{self.partitions.shape}; give (n, rows, cols) photon counts"
            )
        if arr.shape[0] == 0:
            return 0
        if arr.dtype.kind not in "iu":
            rounded = np.rint(arr)
            if not np.array_equal(rounded, arr):
                raise FrameDataError(
                    f"frames of dtype {arr.dtype} hold non-integer values; give "
                    "photon counts"
                )
            arr = rounded.astype(np.int64)
        if self._image is not None:
            self._image.update(arr)
        counts = arr
        if (
            self._flat is not None
            and self.flat_field_mode is FlatFieldMode.DIVIDE_ROUND
        ):
            divided = arr / self._flat
            take = min(arr.shape[0], _LEGACY_MEAN_FRAMES - self._legacy_n)
            if self._legacy_sum is not None and take > 0:
                self._legacy_sum += divided[:take].sum(axis=0)
                self._legacy_n += take
            counts = np.rint(divided).astype(np.int64)
        if self._group_acc is None or self._group_acc.parents is not self._acc:
            self._acc.update(counts)
        if self._group_acc is not None:
            self._group_acc.update(counts)  # and the partitions when nested
        return int(arr.shape[0])

    @property
    def partial_refusal(self) -> str:
        """Why :meth:`to_arrays` cannot make a partial; empty when it can.

        Only the legacy ``pyxsvs-lsq`` bins in ``divide-round`` mode cannot:
        they come from a floating-point mean over the first 200 frames, whose
        rounding depends on how the frames were blocked.
        """
        if self._legacy_sum is None:
            return ""
        return (
            "the pyxsvs-lsq bins of the divide-round flat-field mode are a "
            "floating-point mean over the first frames, not an exact sum; give "
            "estimator_options legacy_mean or analyse in one process"
        )

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """Return what the frames so far added, as plain numpy arrays.

        A partial analysis: a fresh analysis spawned from the same setup fed
        one block of frames (in a worker process) returns this, and
        :meth:`absorb` appends it, exactly, to the analysis of the frames
        before the block.  Keys: ``hist_*`` (partition histograms, unless the
        efficiency groups carry them as their parents), ``groups_*``
        (efficiency groups, with parents ``groups_parents_*``), ``image_sum``
        and ``image_frames`` (when the image is kept); all int64 but the
        float64 image sum of integer counts.

        Raises
        ------
        OptionError
            If :attr:`partial_refusal` is not empty.
        """
        if self.partial_refusal:
            raise OptionError(f"no partial analysis: {self.partial_refusal}")
        out: dict[str, NDArray[Any]] = {}
        if self._group_acc is not None:
            out.update(
                {f"groups_{k}": v for k, v in self._group_acc.to_arrays().items()}
            )
        if self._group_acc is None or self._group_acc.parents is not self._acc:
            out.update({f"hist_{k}": v for k, v in self._acc.to_arrays().items()})
        if self._image is not None and self._image.n_frames:
            out["image_sum"] = np.array(self._image.sum)
            out["image_frames"] = np.array(self._image.n_frames, dtype=np.int64)
        return out

    def absorb(self, arrays: Mapping[str, NDArray[Any]]) -> int:
        """Append a partial analysis of the next frames (:meth:`to_arrays`).

        Absorbing, in acquisition order, the partials of consecutive blocks
        of an exposure gives the analysis of the whole exposure bit for bit:
        histograms and per-frame sums are integers, the image sum of integer
        counts is exact in float64.

        Parameters
        ----------
        arrays : mapping of str to numpy.ndarray
            :meth:`to_arrays` of an analysis spawned from the same setup.

        Returns
        -------
        int
            Number of frames added.

        Raises
        ------
        GeometryError
            If the partial was made with other groups or settings.
        OptionError
            If :attr:`partial_refusal` is not empty.
        """
        if self.partial_refusal:
            raise OptionError(f"no partial analysis: {self.partial_refusal}")
        groups = _strip(arrays, "groups_")
        hist = _strip(arrays, "hist_")
        nested = self._group_acc is not None and self._group_acc.parents is self._acc
        if bool(groups) != (self._group_acc is not None) or bool(hist) == nested:
            raise GeometryError(
                f"absorb(): a partial with keys {sorted(arrays)} was not made "
                "with the settings of this analysis"
            )
        n_new = int(np.shape((groups or hist)["sums"])[0])
        has_image = "image_sum" in arrays
        if self._image is not None and n_new and not has_image:
            raise GeometryError("absorb(): the partial has no image sum")
        if self._group_acc is not None:
            self._group_acc.absorb(groups)
        if not nested:
            self._acc.absorb(hist)
        if self._image is not None and has_image:
            self._image.absorb(arrays["image_sum"], int(arrays["image_frames"]))
        return n_new

    def _estimate(self, estimator: str, *, quiet: bool) -> tuple[ContrastEstimate, ...]:
        acc = self._acc
        if estimator in GROUPED_ESTIMATORS and self._group_acc is not None:
            acc = self._group_acc
        options = dict(self.estimator_options) if estimator == self.estimator else {}
        if estimator == INTENSITY_ESTIMATOR:
            return self._estimate_intensity(acc, quiet=quiet)
        if (
            estimator == "pyxsvs-lsq"
            and self._legacy_sum is not None
            and self._legacy_n
        ):
            image = (self._legacy_sum / self._legacy_n).ravel()
            options["legacy_mean"] = [
                float(image[p].mean()) if p.size else np.nan
                for p in self.partitions.pixels
            ]
        n = len(self.partitions)
        try:
            with np.errstate(all="ignore"):
                out = tuple(estimate_contrast(acc, estimator, **options))
        except XSVSError as err:
            log = logger.debug if quiet else logger.warning
            log("estimator %r failed on stream %r: %s", estimator, self.stream, err)
            return failed_estimates(n, estimator, np.asarray(self._acc.kbar, float))
        if len(out) != n:
            raise EstimatorError(
                f"estimator {estimator!r} returned {len(out)} estimates for "
                f"{n} partitions"
            )
        return out

    def _estimate_intensity(
        self, acc: HistogramAccumulator, *, quiet: bool
    ) -> tuple[ContrastEstimate, ...]:
        """``mle-intensity`` of every partition; keeps each ring's ``q_eff``."""
        n = len(self.partitions)
        self._q_eff = np.full(n, np.nan)
        try:
            with np.errstate(all="ignore"):
                fits = fit_intensity(acc)
        except XSVSError as err:
            log = logger.debug if quiet else logger.warning
            log(
                "estimator %r failed on stream %r: %s",
                INTENSITY_ESTIMATOR,
                self.stream,
                err,
            )
            return failed_estimates(
                n, INTENSITY_ESTIMATOR, np.asarray(self._acc.kbar, float)
            )
        self._q_eff = np.array([f.q_eff for f in fits], dtype=np.float64)
        return tuple(f.estimate for f in fits)

    def result(self, *, final: bool = True) -> ExposureResult:
        """Estimate the contrast from the frames so far.

        Parameters
        ----------
        final : bool, optional
            True (default): the full result, with the extra estimators.
            False: a progress snapshot, main estimator only (estimator
            failures on few frames are logged at debug level only).

        Returns
        -------
        ExposureResult
        """
        acc = self._acc
        n_q = len(self.partitions)
        self._q_eff = None
        estimates = self._estimate(self.estimator, quiet=not final)
        q_eff = self._q_eff
        extra: dict[str, tuple[ContrastEstimate, ...]] = {}
        if final:
            for name in self.extra_estimators:
                extra[name] = self._estimate(name, quiet=False)
        if acc.n_frames:
            prob, prob_std = acc.probability()
        else:
            prob = np.zeros((n_q, acc.n_bins))
            prob_std = prob.copy()
        q = np.array(self.partitions.centers, dtype=np.float64)
        mean_image = None
        intensity = np.full(q.shape, np.nan)
        intensity_err = np.full(q.shape, np.nan)
        if self._image is not None and self._image.n_frames:
            mean_image = self._image.mean()
            corrected = mean_image if self._flat is None else mean_image / self._flat
            with np.errstate(all="ignore"):
                _, intensity, intensity_err = radial_profile(corrected, self.partitions)
        return ExposureResult(
            stream=self.stream,
            exposure_time=self.exposure_time,
            final=final,
            n_frames=self.n_frames,
            q=q,
            q_half_width=float(self.partitions.half_width),
            n_pixels=np.asarray(self.partitions.n_pixels, dtype=np.int64),
            estimator=self.estimator,
            estimates=estimates,
            extra_estimates=MappingProxyType(extra),
            counts=np.asarray(acc.counts, dtype=np.int64).reshape(n_q, -1),
            probability=np.asarray(prob, dtype=np.float64).reshape(n_q, -1),
            probability_std=np.asarray(prob_std, dtype=np.float64).reshape(n_q, -1),
            trace=np.asarray(acc.trace, dtype=np.float64).reshape(self.n_frames, n_q),
            mean_image=mean_image,
            intensity=np.asarray(intensity, dtype=np.float64),
            intensity_err=np.asarray(intensity_err, dtype=np.float64),
            source=self.source,
            q_eff=q_eff,
        )


def _strip(arrays: Mapping[str, NDArray[Any]], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def estimator_groups(
    partitions: Partitions,
    estimators: Sequence[str],
    *,
    flat_field: NDArray[np.float64] | None,
    q_map: ArrayLike | None,
    groups: PixelGroups | None = None,
    n_groups: int = 16,
) -> PixelGroups | None:
    """Return the pixel groups that the grouped ``estimators`` need.

    ``mle-intensity`` gets :func:`intensity_groups` from ``q_map`` and
    ``flat_field``: :data:`INTENSITY_SUB_RINGS` sub-rings, each split into
    up to ``n_groups // INTENSITY_SUB_RINGS`` efficiency groups, so a
    partition has at most ``n_groups`` groups as with ``mle-weighted`` (the
    same histogram cost); ``mle-weighted`` then shares them; ``mle-weighted`` alone gets
    ``split_by`` efficiency groups when there is a flat field.  Geometry
    and flat field only: the groups are fixed before any frame and the same
    in every worker.

    Parameters
    ----------
    partitions : Partitions
    estimators : sequence of str
        Main and extra estimators.
    flat_field : numpy.ndarray or None
        Efficiencies used as weights (``weights`` mode), else None.
    q_map : array_like or None
        q of every pixel (1/Angstrom).
    groups : PixelGroups, optional
        Groups given by the caller: used when of the right kind.
    n_groups : int
        Groups per partition (``AnalysisOptions.n_groups``, default 16).

    Returns
    -------
    PixelGroups or None
        None when no grouped estimator needs groups.

    Raises
    ------
    GeometryError
        ``mle-intensity`` without ``q_map`` (nor intensity ``groups``).
    """
    if INTENSITY_ESTIMATOR in estimators:
        if isinstance(groups, IntensityGroups):
            return groups
        if q_map is None:
            raise GeometryError(
                f"estimator {INTENSITY_ESTIMATOR!r} needs the q of every pixel: "
                "give q_map= (or a Geometry to AnalysisSetup.build), or choose "
                "another estimator"
            )
        return intensity_groups(
            partitions,
            q_map,
            flat_field=flat_field,
            n_rings=INTENSITY_SUB_RINGS,
            n_groups=max(1, n_groups // INTENSITY_SUB_RINGS),
        )
    if "mle-weighted" in estimators and flat_field is not None:
        if groups is None or isinstance(groups, IntensityGroups):
            groups = partitions.split_by(flat_field, n_groups=n_groups)
        return groups
    return None


def _group_accumulator(
    groups: PixelGroups,
    partitions: Partitions | None,
    n_bins: int,
    backend: Backend,
) -> HistogramAccumulator:
    """Accumulator over pixel groups, with the partitions as parents.

    Without parents when ``partitions`` is None or the groups do not tile
    the partitions exactly (groups given by the caller); the partitions are
    then histogrammed separately.
    """
    if partitions is None:
        return HistogramAccumulator(groups, n_bins=n_bins, backend=backend)
    try:
        return HistogramAccumulator(
            groups, n_bins=n_bins, backend=backend, parents=partitions
        )
    except GeometryError as err:
        logger.debug("groups histogrammed apart from the partitions: %s", err)
        return HistogramAccumulator(groups, n_bins=n_bins, backend=backend)


def checked_flat(
    flat_field: ArrayLike | None, shape: tuple[int, int]
) -> NDArray[np.float64] | None:
    """Return the flat field as float64 (None stays None).

    Raises
    ------
    GeometryError
        If its shape is not the detector ``shape``.
    """
    if flat_field is None:
        return None
    flat = np.asarray(flat_field, dtype=np.float64)
    if flat.shape != tuple(shape):
        raise GeometryError(
            f"flat field has shape {flat.shape} but the detector has shape "
            f"{tuple(shape)}; give a flat field of the detector shape"
        )
    return flat
