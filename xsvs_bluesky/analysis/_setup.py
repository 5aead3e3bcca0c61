"""Everything an analysis needs besides the frames: :class:`AnalysisSetup`.

Also the identity of input arrays (masks, flat field) recorded with the
results.  Public names are re-exported by :mod:`xsvs_bluesky.analysis`.
"""

from __future__ import annotations

import hashlib
import math
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
from xsvs_bluesky.core.geometry import Geometry, Partitions, PixelGroups, combine_masks
from xsvs_bluesky.errors import GeometryError
from xsvs_bluesky.options import AnalysisOptions, Estimator, FlatFieldMode

__all__ = ["AnalysisSetup", "LabelledArray", "array_identity"]


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

        Raises
        ------
        GeometryError
            On missing or inconsistent geometry, partitions, masks or flat
            field.
        """
        options = AnalysisOptions() if options is None else options
        mode = options.flat_field_mode
        if mode is FlatFieldMode.NONE:
            flat_field = None
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
            flat = checked_flat(raw, parts.shape)
            assert flat is not None
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
            q_map=None if geometry is None else geometry.q_map(),
            n_groups=options.n_groups,
        )
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
            q_map=None if self.geometry is None else self.geometry.q_map(),
            n_groups=opts.n_groups,
            n_bins=opts.n_bins,
            backend=opts.histogram_backend,
            estimator_options=opts.estimator_options,
        )
