"""An analysis setup as plain arrays, to rebuild its accumulators elsewhere.

A worker process (a Dask worker, another host) that histograms some frames
of an exposure must use exactly the groups the merging process uses.
:func:`shard_recipe` writes what the accumulation needs as plain numpy
arrays and JSON scalars (no object of this package, so a transport needs
no pickle of ours); :func:`analysis_from_recipe` builds, from it, an empty
:class:`~xsvs_bluesky.analysis.ExposureAnalysis` whose
:meth:`~xsvs_bluesky.analysis.ExposureAnalysis.to_arrays` the merging
analysis absorbs.  The groups are shipped, not recomputed, so every worker
has the very groups of the setup.  Public names are re-exported by
:mod:`xsvs_bluesky.analysis`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.analysis._exposure import ExposureAnalysis
from xsvs_bluesky.analysis._setup import AnalysisSetup
from xsvs_bluesky.core.estimators import IntensityGroups
from xsvs_bluesky.core.geometry import Partitions, PixelGroups
from xsvs_bluesky.errors import OptionError

__all__ = ["analysis_from_recipe", "shard_recipe"]


def _packed(
    pixels: Sequence[NDArray[Any]], dtype: Any = np.int64
) -> tuple[NDArray[Any], NDArray[Any]]:
    sizes = [p.size for p in pixels]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    flat = np.zeros(int(offsets[-1]), dtype=dtype)
    for p, a in zip(pixels, offsets[:-1], strict=False):
        flat[a : a + p.size] = p
    return flat, offsets


def _unpacked(
    flat: NDArray[Any], offsets: NDArray[Any], dtype: Any = np.intp
) -> list[NDArray[Any]]:
    edges = np.asarray(offsets, dtype=np.int64)
    data = np.asarray(flat, dtype=dtype)
    return [data[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


#: per-partition arrays of IntensityGroups (the mle-intensity groups), and dtypes
_INTENSITY_ARRAYS = {"offset": np.float64, "efficiency": np.float64, "label": np.intp}


def shard_recipe(setup: AnalysisSetup) -> dict[str, Any]:
    """Return what accumulating frames with ``setup`` needs, as plain data.

    Parameters
    ----------
    setup : AnalysisSetup
        The setup of the merging process.

    Returns
    -------
    dict
        numpy arrays (partition and group pixels, flat field), numbers and
        strings only; ``key`` is a checksum of all of it (workers cache the
        analysis they build from it under that key).

    Raises
    ------
    OptionError
        If exposures of this setup cannot be analysed in parts (see
        :attr:`ExposureAnalysis.partial_refusal`).
    """
    template = setup.new_exposure("")
    if template.partial_refusal:
        raise OptionError(f"not analysed in parts: {template.partial_refusal}")
    parts = setup.partitions
    pixels, offsets = _packed(parts.pixels)
    recipe: dict[str, Any] = {
        "shape": [int(s) for s in parts.shape],
        "centers": np.array(parts.centers, dtype=np.float64),
        "half_width": float(parts.half_width),
        "pixels": pixels,
        "offsets": offsets,
        "flat_field": setup.flat_field,
        "flat_field_mode": setup.flat_field_mode.value,
        "estimator": setup.estimator.value,
        "n_groups": int(setup.options.n_groups),
        "n_bins": int(setup.options.n_bins),
        "backend": str(setup.options.histogram_backend),
        "groups": None,
    }
    if setup.groups is not None:
        g = setup.groups
        g_pixels, g_offsets = _packed(g.pixels)
        recipe["groups"] = {
            "pixels": g_pixels,
            "offsets": g_offsets,
            "parent": np.array(g.parent, dtype=np.int64),
            "weight": np.array(g.weight, dtype=np.float64),
            "n_partitions": int(g.n_partitions),
        }
        if isinstance(g, IntensityGroups):  # shipped whole: no q map needed
            extra: dict[str, Any] = {
                "ring": np.array(g.ring, dtype=np.int64),
                "centers": np.array(g.centers, dtype=np.float64),
                "half_width": float(g.half_width),
                "n_rings": int(g.n_rings),
            }
            for name, dtype in _INTENSITY_ARRAYS.items():
                flat, offs = _packed(getattr(g, name), dtype)
                extra[name] = flat
                extra[f"{name}_offsets"] = offs
            recipe["groups"]["intensity"] = extra
    recipe["key"] = _checksum(recipe)
    return recipe


def _checksum(recipe: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, Mapping):
            for k in sorted(value):
                digest.update(str(k).encode())
                add(value[k])
        elif isinstance(value, np.ndarray):
            digest.update(f"{value.dtype.str}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(repr(value).encode())

    add({k: v for k, v in recipe.items() if k != "key"})
    return digest.hexdigest()


def analysis_from_recipe(recipe: Mapping[str, Any]) -> ExposureAnalysis:
    """Build an empty analysis that accumulates as the recipe's setup does.

    Parameters
    ----------
    recipe : mapping
        :func:`shard_recipe` of a setup (as received: plain arrays).

    Returns
    -------
    ExposureAnalysis
        Spawn one per block of frames; its :meth:`ExposureAnalysis.to_arrays`
        fits the :meth:`ExposureAnalysis.absorb` of the setup's analyses.

    Raises
    ------
    GeometryError
        If the recipe's arrays are inconsistent.
    """
    shape = (int(recipe["shape"][0]), int(recipe["shape"][1]))
    parts = Partitions(
        centers=np.asarray(recipe["centers"], dtype=np.float64),
        half_width=float(recipe["half_width"]),
        pixels=tuple(_unpacked(recipe["pixels"], recipe["offsets"])),
        shape=shape,
    )
    groups: PixelGroups | None = None
    raw = recipe.get("groups")
    if raw is not None:
        common: dict[str, Any] = {
            "pixels": tuple(_unpacked(raw["pixels"], raw["offsets"])),
            "parent": np.asarray(raw["parent"], dtype=np.int64),
            "weight": np.asarray(raw["weight"], dtype=np.float64),
            "shape": shape,
            "n_partitions": int(raw["n_partitions"]),
        }
        extra = raw.get("intensity")
        if extra is None:
            groups = PixelGroups(**common)
        else:
            per_partition: dict[str, Any] = {
                name: tuple(_unpacked(extra[name], extra[f"{name}_offsets"], dtype))
                for name, dtype in _INTENSITY_ARRAYS.items()
            }
            groups = IntensityGroups(
                **common,
                **per_partition,
                ring=np.asarray(extra["ring"], dtype=np.int64),
                centers=np.asarray(extra["centers"], dtype=np.float64),
                half_width=float(extra["half_width"]),
                n_rings=int(extra["n_rings"]),
            )
    flat = recipe.get("flat_field")
    analysis = ExposureAnalysis(
        parts,
        estimator=str(recipe["estimator"]),
        extra_estimators=(),
        flat_field=None if flat is None else np.asarray(flat, dtype=np.float64),
        flat_field_mode=str(recipe["flat_field_mode"]),
        groups=groups,
        n_groups=int(recipe["n_groups"]),
        n_bins=int(recipe["n_bins"]),
        backend=recipe["backend"],
    )
    if analysis.partial_refusal:
        raise OptionError(f"not analysed in parts: {analysis.partial_refusal}")
    return analysis
