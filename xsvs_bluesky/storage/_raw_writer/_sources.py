"""The data sources and metadata of a raw run as TiledWriter 2.0 makes them.

Private to :mod:`xsvs_bluesky.storage._raw_writer`: the descriptor as
TiledWriter's normaliser stores it, metadata numbers clipped as it clips
them, and the HDF5 data source its consolidator builds for one file
(checked against both in ``tests/unit/storage/test_raw_writer_sources.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from xsvs_bluesky.errors import StorageError

__all__ = ["HDF5", "ExternalKey", "json_safe", "normalize_descriptor"]

HDF5 = "application/x-hdf5"
_RESERVED = ("time", "seq_num")
#: broad JSON types of data keys -> numpy dtypes (as TiledWriter's normaliser)
_JSON_DTYPES = {
    "number": "<f8",
    "array": "<f8",
    "boolean": "|b1",
    "string": "<U0",
    "integer": "<i8",
}
_JSON_INT = 2**53 - 1
_JSON_FLOAT = 1.7976e308


def json_safe(data: Any) -> Any:
    """Clip numbers JSON cannot hold exactly, as TiledWriter stores metadata.

    Integral values beyond +-(2**53 - 1) are clipped to it and floats beyond
    +-1.7976e308 to that; sequences become lists.
    """
    if isinstance(data, Mapping):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, str | bytes):
        return data
    if isinstance(data, list | tuple | np.ndarray):
        return [json_safe(v) for v in data]
    if isinstance(data, int | float) and not isinstance(data, bool):
        if not data % 1 and not -_JSON_INT <= data <= _JSON_INT:
            return min(max(data, -_JSON_INT), _JSON_INT)
        if isinstance(data, float) and not -_JSON_FLOAT <= data <= _JSON_FLOAT:
            return min(max(data, -_JSON_FLOAT), _JSON_FLOAT)
    return data


def summands(total: int, part: int) -> tuple[int, ...]:
    """``total`` as ``part + part + ... + rest`` ((0,) when ``total`` is 0)."""
    out = [part] * (total // part) + ([total % part] if total % part else [])
    return tuple(out) or (0,)


def normalize_descriptor(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return the descriptor as TiledWriter stores it (dtypes, shapes, names)."""
    out: dict[str, Any] = copy.deepcopy(dict(doc))
    keys = out["data_keys"]
    for name in _RESERVED:
        if name in keys:
            raise StorageError(
                f"stream {out.get('name')!r}: data key {name!r} is reserved in "
                "Tiled; this writer takes replayed runs only"
            )
    configs = (
        c.get("data_keys", {}).values() for c in out.get("configuration", {}).values()
    )
    for spec in [*keys.values(), *(s for c in configs for s in c)]:
        descr = spec.pop("dtype_descr", [])
        legacy = spec.pop("dtype_str", None)
        dtype = (
            [list(d) for d in descr]
            or spec.get("dtype_numpy", legacy)
            or _JSON_DTYPES.get(spec.get("dtype", ""))
        )
        if dtype:
            spec["dtype_numpy"] = dtype
        if "shape" in spec and spec["shape"] is None:
            spec["shape"] = []
    for obj, names in out.get("object_keys", {}).items():
        for name in names:
            keys[name]["object_name"] = obj
    for spec in keys.values():
        if "external" in spec and spec["external"] is None:
            spec["external"] = ""
    return out


class ExternalKey:
    """One external data key of a stream: its HDF5 data source, row by row.

    The data source TiledWriter's HDF5 consolidator builds for one file
    (stack join: rows of the datum shape, the StreamResource's
    ``chunk_shape`` along the leading dimensions).
    """

    def __init__(self, resource: Mapping[str, Any], data_key: Mapping[str, Any]):
        params = dict(resource.get("parameters") or {})
        if resource.get("mimetype") != HDF5 or params.get("template"):
            raise StorageError(
                f"StreamResource {resource.get('uid')}: mimetype "
                f"{resource.get('mimetype')!r} with parameters {sorted(params)}; this "
                "writer takes single HDF5 files (replayed runs) only"
            )
        if "frame_per_point" in params:
            params["multiplier"] = params.pop("frame_per_point")
        params["dataset"] = params.pop("path", params.pop("dataset", ""))
        self.params = params
        self.key = str(resource.get("data_key", ""))
        self.uri = str(resource["uri"])
        self.join = params.get("join_method", "stack")
        shape = data_key.get("shape") or []
        if None in shape:
            raise StorageError(f"data key {self.key!r}: variable shape {shape}")
        datum = tuple(int(s) for s in shape)
        if datum == (1,) and self.join == "stack":
            datum = ()
        self.metadata: dict[str, Any] = {}
        if "spec" in params:
            self.metadata["spec"] = params["spec"]
        multiplier = params.get("multiplier")
        if multiplier:
            self.metadata["frame_per_point"] = multiplier
            datum = datum or (multiplier,)
            if datum[0] != multiplier:
                datum = (multiplier, *(datum[1:] if datum[0] == 1 else datum))
        self.datum = datum
        self.dtype = data_key.get("dtype_numpy")
        self.chunk_shape = tuple(int(c) for c in params.get("chunk_shape", ()))
        dims = tuple(data_key.get("dims", ()))
        self.dims = ("time", *dims) if dims and self.join == "stack" else dims
        self.rows = 0
        self.node: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        if self.join == "concat" and self.datum:
            return (self.rows * self.datum[0], *self.datum[1:])
        return (self.rows, *self.datum)

    def _chunks(self) -> tuple[tuple[int, ...], ...]:
        shape, chunk = self.shape, self.chunk_shape
        if len(chunk) > len(shape):
            raise StorageError(
                f"data key {self.key!r}: chunk_shape {chunk} longer than {shape}"
            )
        if self.join == "concat" and chunk:
            raise StorageError(f"data key {self.key!r}: chunked 'concat' join")
        lead = tuple(summands(s, c) for s, c in zip(shape, chunk, strict=False))
        return lead + tuple((s,) for s in shape[len(chunk) :])

    def data_source(self) -> Any:
        from tiled.structures.array import ArrayStructure, BuiltinDtype, StructDtype
        from tiled.structures.core import StructureFamily
        from tiled.structures.data_source import Asset, DataSource, Management

        if isinstance(self.dtype, list):
            dtype: Any = StructDtype.from_numpy_dtype(
                np.dtype([tuple(d) for d in self.dtype])
            )
        else:
            dtype = BuiltinDtype.from_numpy_dtype(np.dtype(self.dtype))
        parameters: dict[str, Any] = {"dataset": self.params["dataset"]}
        for name in ("slice", "squeeze"):
            if self.params.get(name):
                parameters[name] = self.params[name]
        parameters["swmr"] = self.params.get("swmr", True)
        parameters["locking"] = self.params.get("locking", None)
        return DataSource(
            structure_family=StructureFamily.array,
            structure=ArrayStructure(
                data_type=dtype,
                shape=self.shape,
                chunks=self._chunks(),
                dims=self.dims or None,
            ),
            mimetype=HDF5,
            parameters=parameters,
            properties={},
            assets=[
                Asset(
                    data_uri=self.uri, is_directory=False, parameter="data_uris", num=0
                )
            ],
            management=Management.external,
        )
