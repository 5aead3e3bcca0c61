"""Everything an analysis needs besides the frames: :class:`AnalysisSetup`.

Also the identity of input arrays (masks, flat field) recorded with the
results.  Public names are re-exported by :mod:`xsvs_bluesky.analysis`.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.analysis._exposure import (
    ExposureAnalysis,
    checked_flat,
    estimator_groups,
)
from xsvs_bluesky.core.estimators import IntensityGroups
from xsvs_bluesky.core.geometry import (
    Geometry,
    Partitions,
    PixelGroups,
    combine_masks,
    partition_centers,
)
from xsvs_bluesky.errors import GeometryError
from xsvs_bluesky.options import AnalysisOptions, Estimator, FlatFieldMode

__all__ = [
    "AnalysisSetup",
    "EmptyPartitionWarning",
    "LabelledArray",
    "array_identity",
    "FLAT_FIELD_RANGE",
    "CENTER_RANGE",
]

FLAT_FIELD_RANGE = 100.0
"""A flat field is refused when a used value is over this many times its
median over the used pixels, or under the median divided by it."""
CENTER_RANGE = 100
"""A beam centre farther outside the detector than this many detector sizes
(the larger of rows and columns) is refused."""


class EmptyPartitionWarning(UserWarning):
    """Some q partitions hold no pixel: their results are NaN, flagged no-data."""


def _check_center(geometry: Geometry) -> None:
    rows, cols = geometry.shape
    shift = 1.0 if geometry.one_based else 0.0
    span = CENTER_RANGE * max(rows, cols)
    for name, value, size in (
        ("center_x", geometry.center_x, cols),
        ("center_y", geometry.center_y, rows),
    ):
        outside = max(shift - value, value - (size - 1 + shift), 0.0)
        if outside > span:
            raise GeometryError(
                f"beam centre {name} = {value:g} px is {outside:g} px outside the "
                f"detector of shape {geometry.shape} (more than {CENTER_RANGE} "
                "detector sizes): no pixel would be near any q partition; check "
                "the beam centre (cenx, ceny in an INI file) and its units (px)"
            )


def _check_coverage(
    parts: Partitions,
    q_map: NDArray[np.float64] | None,
    mask: NDArray[Any] | None,
) -> None:
    """Refuse partitions that are all empty; warn about some empty ones."""
    empty = [j for j, pix in enumerate(parts.pixels) if pix.size == 0]
    if not empty:
        return
    centres = parts.centers
    span = (
        f"the partitions span q = {centres.min() - parts.half_width:.4g} .. "
        f"{centres.max() + parts.half_width:.4g} 1/A"
    )
    if len(empty) < len(parts):
        listed = ", ".join(f"{centres[j]:.4g}" for j in empty[:5])
        more = ", ..." if len(empty) > 5 else ""
        warnings.warn(
            f"{len(empty)} of {len(parts)} q partitions hold no pixel (centres "
            f"{listed}{more} 1/A): their results are NaN, flagged no-data; "
            "narrow the q range or check the masks",
            EmptyPartitionWarning,
            stacklevel=3,
        )
        return
    why = "no q partition holds a pixel"
    if mask is not None and bool(np.all(mask)):
        raise GeometryError(
            f"{why}: the masks exclude every pixel of the detector (polarity "
            "inverted? nonzero = excluded); check the masks"
        )
    if q_map is not None:
        valid = np.isfinite(q_map) if mask is None else (mask == 0) & np.isfinite(q_map)
        if valid.any():
            q = q_map[valid]
            raise GeometryError(
                f"{why}: the unmasked pixels cover q = {q.min():.4g} .. "
                f"{q.max():.4g} 1/A but {span}; check q1/q2 (1/Angstrom), the "
                "beam centre, the distance and the masks"
            )
    raise GeometryError(f"{why} ({span}); check the partitions and the masks")


def _check_flat_range(name: str, flat: NDArray[np.float64], parts: Partitions) -> None:
    """Refuse a flat field with implausible values on pixels of a partition."""
    used = np.zeros(flat.size, dtype=bool)
    for pix in parts.pixels:
        used[pix] = True
    index = np.flatnonzero(used)  # sorted, each pixel once
    if not index.size:
        return
    values = flat.ravel()[index]
    good = np.isfinite(values) & (values > 0)
    median = float(np.median(values[good])) if good.any() else math.nan
    bad = ~good
    if math.isfinite(median):
        bad |= (values > FLAT_FIELD_RANGE * median) | (
            values < median / FLAT_FIELD_RANGE
        )
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        row, col = divmod(int(index[first]), parts.shape[1])
        raise GeometryError(
            f"flat field {name!r}: {int(bad.sum())} of {index.size} pixels used "
            f"by the q partitions are not finite, <= 0 or outside "
            f"1/{FLAT_FIELD_RANGE:g} .. {FLAT_FIELD_RANGE:g} times their median "
            f"{median:.4g} (first at row {row}, column {col}: "
            f"{float(values[first]):.6g}); a flat field holds relative pixel "
            "efficiencies near 1: check the file, or mask those pixels"
        )


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
    :attr:`options` has the main estimator resolved.
    """

    partitions: Partitions
    geometry: Geometry | None
    options: AnalysisOptions
    flat_field: NDArray[np.float64] | None
    groups: PixelGroups | None
    description: Mapping[str, Any]

    @property
    def estimator(self) -> Estimator:
        """The main estimator."""
        assert self.options.estimator is not None  # resolved by build()
        return self.options.estimator

    @property
    def extra_estimators(self) -> tuple[Estimator, ...]:
        """The other estimators reported per exposure (not the main one)."""
        return self.options.extra_estimators

    @property
    def flat_field_mode(self) -> FlatFieldMode:
        """How the flat field is used."""
        return self.options.flat_field_mode

    @classmethod
    def build(
        cls,
        *,
        partitions: Partitions | Mapping[str, Any],
        geometry: Geometry | None = None,
        masks: Sequence[LabelledArray] = (),
        flat_field: LabelledArray | None = None,
        options: AnalysisOptions | None = None,
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
            ``flat_field`` is left out (neither used nor recorded) in the
            ``none`` flat-field mode.
        options : AnalysisOptions, optional
            Estimators, flat-field mode, histogram settings (default
            ``AnalysisOptions()``).

        Warns
        -----
        EmptyPartitionWarning
            When some (not all) partitions hold no pixel; their results are
            NaN and flagged ``no-data``.

        Raises
        ------
        GeometryError
            On missing or inconsistent geometry, partitions, masks or flat
            field; on a beam centre more than :data:`CENTER_RANGE` detector
            sizes outside the detector; when no partition holds a pixel (the
            message says why: masks, q range); on a flat field whose values
            on the partitions' pixels are not finite and positive or lie
            outside 1/:data:`FLAT_FIELD_RANGE` .. :data:`FLAT_FIELD_RANGE`
            times their median.
        LimitError
            On a detector of more than ``options.limits.max_pixels`` or more
            than ``options.limits.max_partitions`` partitions, before the q
            map or the partitions are made.
        """
        options = AnalysisOptions() if options is None else options
        mode = options.flat_field_mode
        if mode is FlatFieldMode.NONE:
            flat_field = None
        labelled = [_labelled(m, f"mask{i}") for i, m in enumerate(masks)]
        spec: dict[str, Any] = {}
        q_map = mask = None
        if isinstance(partitions, Partitions):
            parts = partitions
        else:
            if geometry is None:
                raise GeometryError(
                    "q partition parameters need a geometry; give a Geometry or a "
                    "Partitions object"
                )
            spec = dict(partitions)
            limits = options.limits
            limits.check_pixels(geometry.shape, "the detector geometry")
            _check_center(geometry)
            mask = combine_masks(*(a for _, a, _ in labelled), shape=geometry.shape)
            try:
                if "centers" in spec:
                    centers = [float(c) for c in spec["centers"]]
                    limits.check_partitions(len(centers), f"{len(centers)} centres")
                    q_map = geometry.q_map()
                    parts = Partitions.from_centers(
                        q_map, centers, spec["dq"], mask=mask, limits=limits
                    )
                    spec["centers"] = centers
                else:
                    partition_centers(  # checks the limit before the q map
                        spec["q1"], spec["q2"], spec["qs"], limits=limits
                    )
                    q_map = geometry.q_map()
                    parts = Partitions.from_range(
                        q_map,
                        spec["q1"],
                        spec["q2"],
                        spec["qs"],
                        spec["dq"],
                        mask=mask,
                        limits=limits,
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
        _check_coverage(parts, q_map, mask)
        if geometry is not None and q_map is None:
            q_map = geometry.q_map()
        flat = None
        flat_md = None
        if flat_field is not None:
            name, raw, sha = _labelled(flat_field, "flat_field")
            flat = checked_flat(raw, parts.shape)
            assert flat is not None
            _check_flat_range(name, flat, parts)
            flat_md = array_identity(name, raw, sha)
            finite = flat[np.isfinite(flat)]
            flat_md.update(
                mode=mode.value,
                mean=float(finite.mean()) if finite.size else math.nan,
                variance=float(finite.var()) if finite.size else math.nan,
            )
        main = options.main_estimator(flat is not None, has_q_map=geometry is not None)
        options = options.replace(
            estimator=main,
            extra_estimators=tuple(e for e in options.extra_estimators if e != main),
        )
        groups = estimator_groups(
            parts,
            (main, *options.extra_estimators),
            flat_field=flat if mode is FlatFieldMode.WEIGHTS else None,
            q_map=q_map,
            n_groups=options.n_groups,
        )
        del q_map
        description = {
            **options.to_metadata(),
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
            options=options,
            flat_field=flat,
            groups=groups,
            description=MappingProxyType(description),
        )

    def new_exposure(
        self, stream: str, exposure_time: float = math.nan, *, source: str = ""
    ) -> ExposureAnalysis:
        """Make a fresh :class:`ExposureAnalysis` with these settings.

        The constant work (histogram pixel layouts, ...) is done once per
        setup, at the first call; later exposures share it.
        """
        return self._template.spawn(stream, exposure_time, source=source)

    @cached_property
    def _template(self) -> ExposureAnalysis:
        """An empty analysis with these settings, spawned for each exposure."""
        opts = self.options
        return ExposureAnalysis(
            self.partitions,
            stream="",
            estimator=self.estimator,
            extra_estimators=opts.extra_estimators,
            flat_field=self.flat_field,
            flat_field_mode=opts.flat_field_mode,
            groups=self.groups,
            # intensity groups carry the q of their pixels: no q map needed
            q_map=None
            if self.geometry is None or isinstance(self.groups, IntensityGroups)
            else self.geometry.q_map(),
            n_groups=opts.n_groups,
            n_bins=opts.n_bins,
            backend=opts.histogram_backend,
            estimator_options=opts.estimator_options,
        )
