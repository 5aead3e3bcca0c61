"""The analysis of one exposure: frames in, contrast per q partition out.

:class:`ExposureAnalysis` is the one object both the live callback
(:class:`xsvs_bluesky.callback.XSVSCallback`) and the offline ``analyze``
command feed with frames.  It histograms every frame as it arrives (one
:meth:`HistogramAccumulator.update` per stack), keeps the time-averaged image
and fits the contrast only when asked (:meth:`ExposureAnalysis.result`), so
the cost per frame stays that of a histogram.

This module imports no bluesky, tiled or I/O library.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core.estimators import (
    ContrastEstimate,
    check_estimator,
    estimate_contrast,
)
from xsvs_bluesky.core.geometry import Geometry, Partitions, PixelGroups, combine_masks
from xsvs_bluesky.core.histogram import Backend, HistogramAccumulator
from xsvs_bluesky.core.images import ImageAverager, radial_profile
from xsvs_bluesky.errors import GeometryError, XSVSError

__all__ = [
    "DEFAULT_EXTRA_ESTIMATORS",
    "FLAG_FIT_FAILED",
    "FLAT_FIELD_MODES",
    "AnalysisSetup",
    "ExposureAnalysis",
    "ExposureResult",
    "LabelledArray",
    "array_identity",
    "default_estimator",
]

logger = logging.getLogger(__name__)

DEFAULT_EXTRA_ESTIMATORS: tuple[str, ...] = ("moments", "low-count", "r-1")
"""Cheap closed-form estimators reported next to the main one."""

FLAT_FIELD_MODES: tuple[str, ...] = ("weighted", "divide-round", "record-only")
"""How a flat field is used (see :class:`ExposureAnalysis`)."""

FLAG_FIT_FAILED = "fit-failed"
"""Flag of an estimate whose estimator raised (values are NaN)."""

_GROUPED_ESTIMATORS = frozenset({"mle-weighted"})
_FRAME_ESTIMATORS = frozenset({"mle-frames", "pyxsvs-lsq"})
_LEGACY_MEAN_FRAMES = 200  # pyxsvs chose its bins from the first 200 frames


def default_estimator(flat_field: object | None) -> str:
    """Return the default estimator: "mle-weighted" with a flat field, else "mle"."""
    return "mle" if flat_field is None else "mle-weighted"


def _column(estimates: Sequence[ContrastEstimate], name: str) -> NDArray[np.float64]:
    return np.array([getattr(e, name) for e in estimates], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ExposureResult:
    """Contrast of one exposure, per q partition (arrays indexed ``[q]``).

    Parameters
    ----------
    stream : str
        Name of the raw stream the frames came from.
    exposure_time : float
        Exposure time of one frame in s (NaN when unknown).
    final : bool
        True for the result at the end of the exposure, False for a progress
        snapshot (which carries no ``extra_estimates``).
    n_frames : int
        Frames analysed.
    q : numpy.ndarray
        Partition centres in 1/Angstrom.
    q_half_width : float
        Partition half-width in 1/Angstrom.
    n_pixels : numpy.ndarray
        Pixels per partition (int64).
    estimator : str
        Name of the main estimator.
    estimates : tuple of ContrastEstimate
        Main estimate per partition.
    extra_estimates : mapping
        Other estimators' results, ``{name: tuple of ContrastEstimate}``.
    counts : numpy.ndarray
        ``[q, k]`` int64 sum over frames of the per-frame histograms.
    probability : numpy.ndarray
        ``[q, k]`` mean over frames of the per-frame ``P(k)``.
    probability_std : numpy.ndarray
        ``[q, k]`` per-frame standard deviation of ``P(k)`` (legacy
        ``histStdDev``).
    trace : numpy.ndarray
        ``[frame, q]`` mean count per pixel of each frame (legacy ``trace``).
    mean_image : numpy.ndarray or None
        Averaged frame, counts per pixel and frame (raw counts, before any
        flat-field correction).
    intensity, intensity_err : numpy.ndarray
        ``I(q)``: mean over each partition of the averaged image (divided by
        the flat field when one is given) and its standard error, counts per
        pixel and frame.
    source : str
        Where the frames came from (raw run uid, file), free text.
    """

    stream: str
    exposure_time: float
    final: bool
    n_frames: int
    q: NDArray[np.float64]
    q_half_width: float
    n_pixels: NDArray[np.int64]
    estimator: str
    estimates: tuple[ContrastEstimate, ...]
    extra_estimates: Mapping[str, tuple[ContrastEstimate, ...]]
    counts: NDArray[np.int64]
    probability: NDArray[np.float64]
    probability_std: NDArray[np.float64]
    trace: NDArray[np.float64]
    mean_image: NDArray[np.float64] | None
    intensity: NDArray[np.float64]
    intensity_err: NDArray[np.float64]
    source: str = ""

    @property
    def n_bins(self) -> int:
        """Number of histogram bins ``K`` (counts ``k = 0 .. K-1``)."""
        return int(self.probability.shape[1]) if self.probability.ndim == 2 else 0

    @property
    def kbar(self) -> NDArray[np.float64]:
        """Mean count per pixel and frame, per partition."""
        return _column(self.estimates, "kbar")

    @property
    def kbar_err(self) -> NDArray[np.float64]:
        """Standard error of :attr:`kbar`."""
        return _column(self.estimates, "kbar_err")

    @property
    def kbar_frame_std(self) -> NDArray[np.float64]:
        """Standard deviation of the trace over frames (legacy "K error")."""
        if self.trace.shape[0] == 0:
            return np.full(self.q.shape, np.nan)
        return np.asarray(np.std(self.trace, axis=0), dtype=np.float64)

    @property
    def beta(self) -> NDArray[np.float64]:
        """Speckle contrast ``beta = 1/M`` per partition."""
        return _column(self.estimates, "beta")

    @property
    def beta_err(self) -> NDArray[np.float64]:
        """Standard error of :attr:`beta`."""
        return _column(self.estimates, "beta_err")

    @property
    def M(self) -> NDArray[np.float64]:
        """Number of coherent modes per partition."""
        return _column(self.estimates, "M")

    @property
    def M_err(self) -> NDArray[np.float64]:
        """Standard error of :attr:`M`."""
        return _column(self.estimates, "M_err")

    @property
    def flags(self) -> tuple[tuple[str, ...], ...]:
        """Estimator flags per partition."""
        return tuple(tuple(e.flags) for e in self.estimates)


def _failed_estimates(
    n: int, estimator: str, kbar: NDArray[np.float64]
) -> tuple[ContrastEstimate, ...]:
    nan = math.nan
    return tuple(
        ContrastEstimate(
            beta=nan,
            beta_err=nan,
            M=nan,
            M_err=nan,
            kbar=float(kbar[j]) if j < kbar.size else nan,
            kbar_err=nan,
            estimator=estimator,
            flags=(FLAG_FIT_FAILED,),
            n_samples=0,
        )
        for j in range(n)
    )


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
        default :func:`default_estimator`.
    extra_estimators : sequence of str, optional
        Estimators also evaluated at the end of the exposure.
    flat_field : array_like, optional
        Pixel efficiency map (mean 1) of the detector shape.
    flat_field_mode : {"weighted", "divide-round", "record-only"}
        ``"weighted"`` (default): counts stay integer; with the
        ``"mle-weighted"`` estimator each partition is split into
        ``n_groups`` efficiency groups.  ``"divide-round"``: the legacy
        pyxsvs correction, each frame divided by the flat field and rounded
        (biased; to reproduce old results).  ``"record-only"``: the flat
        field only scales ``I(q)``.
    groups : PixelGroups, optional
        Efficiency groups to use instead of splitting ``partitions``.
    n_groups : int, optional
        Efficiency groups per partition in ``"weighted"`` mode.
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
        If the flat field's shape differs from the partitions'.
    ValueError
        On an unknown ``flat_field_mode``.
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
        flat_field_mode: str = "weighted",
        groups: PixelGroups | None = None,
        n_groups: int = 16,
        n_bins: int = 32,
        backend: Backend = "auto",
        estimator_options: Mapping[str, Any] | None = None,
        keep_image: bool = True,
        source: str = "",
    ) -> None:
        if flat_field_mode not in FLAT_FIELD_MODES:
            raise ValueError(
                f"flat_field_mode = {flat_field_mode!r}; give one of {FLAT_FIELD_MODES}"
            )
        self.partitions = partitions
        self.stream = str(stream)
        self.exposure_time = float(exposure_time)
        self.estimator = check_estimator(estimator or default_estimator(flat_field))
        self.extra_estimators = tuple(
            check_estimator(e) for e in extra_estimators if e != self.estimator
        )
        self.estimator_options = dict(estimator_options or {})
        self.source = source
        self.flat_field_mode = flat_field_mode
        self._flat = _checked_flat(flat_field, partitions.shape)
        self._acc = HistogramAccumulator(
            partitions,
            n_bins=n_bins,
            backend=backend,
            keep_frame_histograms=self.estimator in _FRAME_ESTIMATORS,
        )
        # a second accumulator over efficiency groups for the flat-field aware
        # estimator; the partition one keeps P(k) and the trace per partition
        self._group_acc: HistogramAccumulator | None = None
        if (
            self._flat is not None
            and flat_field_mode == "weighted"
            and self.estimator in _GROUPED_ESTIMATORS
        ):
            if groups is None:
                groups = partitions.split_by(self._flat, n_groups=n_groups)
            self._group_acc = HistogramAccumulator(
                groups, n_bins=n_bins, backend=backend
            )
        self._image = ImageAverager(partitions.shape) if keep_image else None
        # legacy bins: mean of frame / flat (not rounded) over the first frames
        self._legacy_sum: NDArray[np.float64] | None = None
        if (
            self.estimator == "pyxsvs-lsq"
            and self._flat is not None
            and flat_field_mode == "divide-round"
            and "legacy_mean" not in self.estimator_options
        ):
            self._legacy_sum = np.zeros(partitions.shape)
        self._legacy_n = 0

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
                raise XSVSError(
                    f"frames of dtype {arr.dtype} hold non-integer values; give "
                    "photon counts"
                )
            arr = rounded.astype(np.int64)
        if self._image is not None:
            self._image.update(arr)
        counts = arr
        if self._flat is not None and self.flat_field_mode == "divide-round":
            divided = arr / self._flat
            take = min(arr.shape[0], _LEGACY_MEAN_FRAMES - self._legacy_n)
            if self._legacy_sum is not None and take > 0:
                self._legacy_sum += divided[:take].sum(axis=0)
                self._legacy_n += take
            counts = np.rint(divided).astype(np.int64)
        self._acc.update(counts)
        if self._group_acc is not None:
            self._group_acc.update(counts)
        return int(arr.shape[0])

    def _estimate(self, estimator: str, *, quiet: bool) -> tuple[ContrastEstimate, ...]:
        acc = self._acc
        if estimator in _GROUPED_ESTIMATORS and self._group_acc is not None:
            acc = self._group_acc
        options = dict(self.estimator_options) if estimator == self.estimator else {}
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
            return _failed_estimates(n, estimator, np.asarray(self._acc.kbar, float))
        if len(out) != n:
            raise XSVSError(
                f"estimator {estimator!r} returned {len(out)} estimates for "
                f"{n} partitions"
            )
        return out

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
        estimates = self._estimate(self.estimator, quiet=not final)
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
        )


def _checked_flat(
    flat_field: ArrayLike | None, shape: tuple[int, int]
) -> NDArray[np.float64] | None:
    if flat_field is None:
        return None
    flat = np.asarray(flat_field, dtype=np.float64)
    if flat.shape != tuple(shape):
        raise GeometryError(
            f"flat field has shape {flat.shape} but the detector has shape "
            f"{tuple(shape)}; give a flat field of the detector shape"
        )
    return flat


def array_identity(
    name: str, array: ArrayLike, file_sha256: str | None = None
) -> dict[str, Any]:
    """Identity of a mask or flat field: name, checksum, shape and dtype.

    Parameters
    ----------
    name : str
        A label, e.g. the file name.
    array : array_like
        The data as used.
    file_sha256 : str, optional
        Checksum of the file it was read from, recorded as given.

    Returns
    -------
    dict
        ``name``, ``sha256`` (of the C-order bytes of the array), ``shape``,
        ``dtype`` and ``file_sha256`` when given (plain JSON types).
    """
    arr = np.ascontiguousarray(array)
    out: dict[str, Any] = {
        "name": str(name),
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
        "shape": [int(s) for s in arr.shape],
        "dtype": arr.dtype.str,
    }
    if file_sha256:
        out["file_sha256"] = str(file_sha256)
    return out


LabelledArray = ArrayLike | tuple[str, ArrayLike] | tuple[str, ArrayLike, str]
"""An array, ``(name, array)`` or ``(name, array, file_sha256)``."""


def _labelled(item: Any, default: str) -> tuple[str, NDArray[Any], str | None]:
    if isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], str):
        return item[0], np.asarray(item[1]), (item[2] if len(item) == 3 else None)
    return default, np.asarray(item), None


@dataclass(frozen=True, eq=False)
class AnalysisSetup:
    """Everything an analysis needs besides the frames, and its description.

    Build it with :meth:`build`; make one :class:`ExposureAnalysis` per
    exposure with :meth:`new_exposure`; :attr:`description` is the plain-JSON
    record of how results were made (the derived run's ``xsvs`` dict).
    """

    partitions: Partitions
    geometry: Geometry | None
    estimator: str
    extra_estimators: tuple[str, ...]
    estimator_options: Mapping[str, Any]
    flat_field: NDArray[np.float64] | None
    flat_field_mode: str
    groups: PixelGroups | None
    n_bins: int
    backend: Backend
    description: Mapping[str, Any]

    @classmethod
    def build(
        cls,
        *,
        partitions: Partitions | Mapping[str, Any],
        geometry: Geometry | None = None,
        masks: Sequence[LabelledArray] = (),
        flat_field: LabelledArray | None = None,
        flat_field_mode: str = "weighted",
        estimator: str | None = None,
        extra_estimators: Sequence[str] = DEFAULT_EXTRA_ESTIMATORS,
        estimator_options: Mapping[str, Any] | None = None,
        n_bins: int = 32,
        n_groups: int = 16,
        backend: Backend = "auto",
    ) -> AnalysisSetup:
        """Build the partitions (when given as parameters) and the description.

        Parameters
        ----------
        partitions : Partitions or mapping
            Partitions, or ``{"q1", "q2", "qs", "dq"}`` / ``{"centers",
            "dq"}`` in 1/Angstrom, built on ``geometry`` with the union of
            ``masks`` excluded.
        geometry : Geometry, optional
            Required when ``partitions`` is a mapping.
        masks, flat_field : see :class:`xsvs_bluesky.callback.XSVSCallback`.
        flat_field_mode, estimator, extra_estimators, estimator_options,
        n_bins, n_groups, backend : see :class:`ExposureAnalysis`.

        Raises
        ------
        GeometryError
            On missing or inconsistent geometry, partitions, masks or flat
            field.
        ValueError
            On an unknown ``flat_field_mode``.
        """
        if flat_field_mode not in FLAT_FIELD_MODES:
            raise ValueError(
                f"flat_field_mode = {flat_field_mode!r}; give one of {FLAT_FIELD_MODES}"
            )
        labelled = [_labelled(m, f"mask{i}") for i, m in enumerate(masks)]
        spec: dict[str, Any] = {}
        if isinstance(partitions, Partitions):
            parts = partitions
        else:
            if geometry is None:
                raise GeometryError(
                    "q partition parameters need a geometry; give a Geometry or a "
                    "Partitions object"
                )
            spec = dict(partitions)
            mask = combine_masks(*(a for _, a, _ in labelled), shape=geometry.shape)
            try:
                if "centers" in spec:
                    centers = [float(c) for c in spec["centers"]]
                    parts = Partitions.from_centers(
                        geometry.q_map(), centers, spec["dq"], mask=mask
                    )
                    spec["centers"] = centers
                else:
                    parts = Partitions.from_range(
                        geometry.q_map(),
                        spec["q1"],
                        spec["q2"],
                        spec["qs"],
                        spec["dq"],
                        mask=mask,
                    )
            except KeyError as err:
                raise GeometryError(
                    f"q partition parameters {sorted(spec)} lack {err}; give q1, q2, "
                    "qs, dq or centers, dq (1/Angstrom)"
                ) from None
        for name, arr, _ in labelled:
            if arr.shape != tuple(parts.shape):
                raise GeometryError(
                    f"mask {name!r} has shape {arr.shape} but the detector has "
                    f"shape {parts.shape}; give masks of the detector shape"
                )
        flat = None
        flat_md = None
        if flat_field is not None:
            name, raw, sha = _labelled(flat_field, "flat_field")
            flat = _checked_flat(raw, parts.shape)
            assert flat is not None
            flat_md = array_identity(name, raw, sha)
            finite = flat[np.isfinite(flat)]
            flat_md.update(
                mode=flat_field_mode,
                mean=float(finite.mean()) if finite.size else math.nan,
                variance=float(finite.var()) if finite.size else math.nan,
            )
        main = check_estimator(estimator or default_estimator(flat))
        for name in extra_estimators:
            check_estimator(name)
        groups = None
        if (
            flat is not None
            and flat_field_mode == "weighted"
            and main in _GROUPED_ESTIMATORS
        ):
            groups = parts.split_by(flat, n_groups=n_groups)
        description = {
            "estimator": main,
            "extra_estimators": [e for e in extra_estimators if e != main],
            "estimator_options": dict(estimator_options or {}),
            "geometry": None if geometry is None else geometry.to_dict(),
            "partitions": {
                "centers": [float(c) for c in parts.centers],
                "half_width": float(parts.half_width),
                "n_pixels": [int(n) for n in parts.n_pixels],
                **spec,
            },
            "masks": [array_identity(n, a, s) for n, a, s in labelled],
            "flat_field": flat_md,
            "n_groups": len(groups) if groups is not None else None,
        }
        return cls(
            partitions=parts,
            geometry=geometry,
            estimator=main,
            extra_estimators=tuple(e for e in extra_estimators if e != main),
            estimator_options=MappingProxyType(dict(estimator_options or {})),
            flat_field=flat,
            flat_field_mode=flat_field_mode,
            groups=groups,
            n_bins=int(n_bins),
            backend=backend,
            description=MappingProxyType(description),
        )

    def new_exposure(
        self, stream: str, exposure_time: float = math.nan, *, source: str = ""
    ) -> ExposureAnalysis:
        """Make a fresh :class:`ExposureAnalysis` with these settings."""
        return ExposureAnalysis(
            self.partitions,
            stream=stream,
            exposure_time=exposure_time,
            estimator=self.estimator,
            extra_estimators=self.extra_estimators,
            flat_field=self.flat_field,
            flat_field_mode=self.flat_field_mode,
            groups=self.groups,
            n_bins=self.n_bins,
            backend=self.backend,
            estimator_options=self.estimator_options,
            source=source,
        )
