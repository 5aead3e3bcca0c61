"""The layout of a derived run, defined once (layout version 2).

Every stream of a derived run is a table of rows of scalars, one event per
row, so that any ``TiledWriter`` (whatever its ``max_array_size``) stores a
stream as one table and a plain Tiled client reads numeric columns of the
right dtype.  The one exception is the averaged image, stored one detector
row per event: a single 1-d array field, whose one dimension cannot collide
with another.  :class:`DerivedRun` composes its documents from the
:class:`StreamLayout` objects here and :mod:`xsvs_bluesky.results` reads
with them; ``docs/reference/derived-run-schema.md`` is checked against them
by the tests.

Units: an empty string means dimensionless (a ratio, a count or an index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DYNAMICS",
    "DYNAMICS_FLAG_NAMES",
    "HISTOGRAMS",
    "IMAGES",
    "LAYOUT_VERSION",
    "OBJECT_NAME",
    "PROGRESS",
    "PROVENANCE_KEYS",
    "RESULTS",
    "RESULT_FLAGS",
    "STREAMS",
    "TRACE",
    "FieldLayout",
    "StreamLayout",
    "encode_flags",
    "estimator_key",
    "schema_markdown",
]

LAYOUT_VERSION = 2
"""``xsvs.schema_version`` of the start document of runs in this layout."""

OBJECT_NAME = "xsvs"
"""``object_name`` of every data key (and the key of the descriptor hints)."""

COUNT_UNITS = "counts/pixel/frame"

# The legends are written out here, not built from the analysis' flag lists:
# they are part of the stored layout, and a reader (``results``) then needs
# neither numba nor scipy.  The tests check that every flag the analysis can
# raise has its bit, in the order of the analysis' lists.
RESULT_FLAGS: tuple[str, ...] = (
    # xsvs_bluesky.core.estimators.FLAGS
    "boundary",
    "low-statistics",
    "no-convergence",
    "no-data",
    "negative-contrast",
    "legacy-r-1",
    "fallback-bins",
    # xsvs_bluesky.analysis.FLAG_FIT_FAILED
    "fit-failed",
    "other",
)
"""Legend of the ``flags`` bitmask of ``results``: bit ``i`` = name ``i``.

Fixed for the layout (a flag name outside it sets the ``other`` bit), so
rows written while a run goes on share one legend.
"""

#: What the dynamics stream's ``D_status`` may say (written out like the
#: legends; xsvs_bluesky.core.dynamics.DIFFUSION_STATUSES, checked by a test).
D_STATUSES: tuple[str, ...] = (
    "diffusive",
    "poor-fit",
    "non-diffusive",
    "not yet determined",
    "no-data",
)

DYNAMICS_FLAG_NAMES: tuple[str, ...] = (
    # xsvs_bluesky.core.dynamics.DYNAMICS_FLAGS
    "too-few-points",
    "fit-failed",
    "poor-fit",
    "unweighted",
    "skipped-points",
    "decay-too-fast",
    "decay-too-slow",
    "exponent-at-bound",
    "singular-covariance",
    "no-dof",
    "non-positive-beta0",
    "not-converged",
    "non-diffusive",
    "no-scaling-check",
    "too-few-partitions",
    "other",
)
"""Legend of the ``flags`` and ``D_flags`` bitmasks of ``dynamics``."""

PROVENANCE_KEYS: tuple[str, ...] = (
    "data_session",
    "data_groups",
    "proposal",
    "cycle",
    "beamline_id",
    "facility",
    "tiled_access_tags",
)
"""Start keys copied from the raw run to the derived run when present.

The keys facility access policies read (NSLS-II keys Tiled access on
``data_session``/``data_groups``, others on ``proposal`` and ``cycle``;
``TiledWriter`` turns ``tiled_access_tags`` into the access tags of every
node it creates), so a derived run is visible to exactly the people who see
its raw run.
"""


def estimator_key(name: str) -> str:
    """Data-key stem of an estimator, e.g. ``"low-count"`` -> ``"low_count"``."""
    return name.replace("-", "_").replace(".", "_").replace("/", "_")


@dataclass(frozen=True)
class FieldLayout:
    """One column of a stream (one data key).

    Attributes
    ----------
    name : str
        Data key.
    dtype : str
        numpy dtype: ``"<f8"``, ``"<i8"`` or ``"str"`` (a string).
    units : str
        Units ("" = dimensionless).
    doc : str
        Meaning, one line (the schema reference shows it).
    dims : tuple of str
        Names of the dimensions of an array field (``()`` for a scalar).
    flags : tuple of str
        Legend of a bitmask field (bit ``i`` = ``flags[i]``), else empty.
    """

    name: str
    dtype: str
    units: str
    doc: str
    dims: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def is_string(self) -> bool:
        """Whether the field holds strings."""
        return self.dtype == "str"

    def data_key(self, shape: Sequence[int] = ()) -> dict[str, Any]:
        """Return the DataKey (``shape`` of an array field per event)."""
        out: dict[str, Any] = {
            "source": "xsvs_bluesky",
            "object_name": OBJECT_NAME,
            "units": self.units,
        }
        if self.dims:
            out.update(
                dtype="array",
                shape=[int(s) for s in shape],
                dims=list(self.dims),
                dtype_numpy=self.dtype,
            )
        elif self.is_string:
            out.update(dtype="string", shape=[])
        else:
            kind = "integer" if self.dtype[1] == "i" else "number"
            out.update(dtype=kind, shape=[], dtype_numpy=self.dtype)
        if self.flags:
            out["flag_names"] = list(self.flags)
        return out


@dataclass(frozen=True)
class StreamLayout:
    """One stream of a derived run: its rows, columns and hints.

    Attributes
    ----------
    name : str
        Stream name.
    doc : str
        What one row is and when rows are emitted.
    index : tuple of str
        Fields that identify a row (the last row with the same index wins).
    fields : tuple of FieldLayout
        Fixed columns, in order.
    hints : tuple of str
        Fields a generic viewer should plot (descriptor ``hints``).
    templates : tuple of FieldLayout
        Columns repeated per extra estimator: ``{est}`` in the name is
        replaced by :func:`estimator_key` of the estimator's name.
    """

    name: str
    doc: str
    index: tuple[str, ...]
    fields: tuple[FieldLayout, ...]
    hints: tuple[str, ...]
    templates: tuple[FieldLayout, ...] = field(default=())

    def field(self, name: str) -> FieldLayout:
        """Return the field ``name`` (KeyError if absent)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"stream {self.name!r} has no field {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the fixed fields."""
        return tuple(f.name for f in self.fields)

    def all_fields(self, extra_estimators: Sequence[str] = ()) -> list[FieldLayout]:
        """Return the fixed fields and, per extra estimator, the template fields."""
        out = list(self.fields)
        for est in extra_estimators:
            stem = estimator_key(est)
            for t in self.templates:
                out.append(
                    FieldLayout(
                        t.name.format(est=stem),
                        t.dtype,
                        t.units,
                        t.doc.format(est=est),
                        t.dims,
                        t.flags,
                    )
                )
        return out

    def data_keys(
        self,
        extra_estimators: Sequence[str] = (),
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """DataKeys of the stream (``shapes`` of its array fields)."""
        shapes = shapes or {}
        return {
            f.name: f.data_key(shapes.get(f.name, ()))
            for f in self.all_fields(extra_estimators)
        }

    def descriptor(
        self,
        extra_estimators: Sequence[str] = (),
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments of ``compose_descriptor`` for this stream."""
        data_keys = self.data_keys(extra_estimators, shapes)
        legends = {
            f"{f.name}_flag_names": list(f.flags)
            for f in self.all_fields(extra_estimators)
            if f.flags
        }
        out: dict[str, Any] = {
            "name": self.name,
            "data_keys": data_keys,
            "object_keys": {OBJECT_NAME: list(data_keys)},
            "hints": {OBJECT_NAME: {"fields": list(self.hints)}},
        }
        if legends:
            out["configuration"] = {
                OBJECT_NAME: {
                    "data": legends,
                    "timestamps": dict.fromkeys(legends, 0.0),
                    "data_keys": {
                        k: {
                            "source": "xsvs_bluesky",
                            "dtype": "array",
                            "shape": [len(v)],
                        }
                        for k, v in legends.items()
                    },
                }
            }
        return out


def _f(name: str, dtype: str, units: str, doc: str, **kw: Any) -> FieldLayout:
    return FieldLayout(name, dtype, units, doc, **kw)


_EXPOSURE = _f("exposure_index", "<i8", "", "0, 1, ... in order of first frame")
_RAW_STREAM = _f("raw_stream", "str", "", "raw stream of the frames")
_T_E = _f("exposure_time", "<f8", "s", "exposure time of one frame (NaN if unknown)")
_PARTITION = _f("partition", "<i8", "", "q partition index 0..Q-1")
_Q = _f("q", "<f8", "1/Angstrom", "partition centre")

PROGRESS = StreamLayout(
    name="progress",
    doc=(
        "one row per partition at each throttle point of an exposure (at least "
        "`progress_interval_s` s and `progress_every_frames` frames apart); "
        "the end of an exposure is its `results` rows"
    ),
    index=("exposure_index", "n_frames", "partition"),
    fields=(
        _EXPOSURE,
        _RAW_STREAM,
        _T_E,
        _f("n_frames", "<i8", "", "frames analysed so far"),
        _PARTITION,
        _Q,
        _f("kbar", "<f8", COUNT_UNITS, "mean count"),
        _f("kbar_err", "<f8", COUNT_UNITS, "standard error of kbar"),
        _f("beta", "<f8", "", "contrast (main estimator)"),
        _f("beta_err", "<f8", "", "standard error of beta"),
    ),
    hints=("beta", "n_frames"),
)

RESULTS = StreamLayout(
    name="results",
    doc=(
        "one row per (exposure, partition), written as soon as the exposure "
        "is complete (its last frame analysed); an exposure written again "
        "(more frames arrived) supersedes its earlier rows"
    ),
    index=("exposure_index", "partition"),
    fields=(
        _EXPOSURE,
        _RAW_STREAM,
        _T_E,
        _PARTITION,
        _Q,
        _f("n_pixels", "<i8", "px", "pixels in the partition"),
        _f("n_frames", "<i8", "", "frames analysed"),
        _f("n_bins", "<i8", "", "histogram bins K of this exposure (k = 0..K-1)"),
        _f("estimator", "str", "", "main estimator"),
        _f("kbar", "<f8", COUNT_UNITS, "mean count (legacy `K`)"),
        _f("kbar_err", "<f8", COUNT_UNITS, "standard error of kbar"),
        _f(
            "kbar_frame_std",
            "<f8",
            COUNT_UNITS,
            "std over frames of the trace (legacy `K error`)",
        ),
        _f("beta", "<f8", "", "contrast 1/M (legacy `beta`)"),
        _f("beta_err", "<f8", "", "standard error of beta"),
        _f("M", "<f8", "", "number of modes (`inf` at the Poisson boundary)"),
        _f("M_err", "<f8", "", "standard error of M"),
        _f("n_samples", "<i8", "", "pixel samples (pixels x frames) in the fit"),
        _f("flags", "<i8", "", "estimator flags, bitmask", flags=RESULT_FLAGS),
        _f("intensity", "<f8", COUNT_UNITS, "I(q): partition mean of the image"),
        _f("intensity_err", "<f8", COUNT_UNITS, "standard error of I(q)"),
    ),
    hints=("beta", "exposure_time"),
    templates=(
        _f("beta_{est}", "<f8", "", "contrast by the `{est}` estimator"),
        _f("beta_{est}_err", "<f8", "", "standard error of beta_{est}"),
    ),
)

HISTOGRAMS = StreamLayout(
    name="histograms",
    doc=(
        "one row per (exposure, partition, k), k = 0..n_bins-1 of that "
        "exposure, written with the exposure's results rows"
    ),
    index=("exposure_index", "partition", "k"),
    fields=(
        _EXPOSURE,
        _PARTITION,
        _f("k", "<i8", "counts", "photons per pixel and frame"),
        _f("counts", "<i8", "", "sum over frames of the per-frame histograms"),
        _f("probability", "<f8", "", "mean over frames of the per-frame P(k)"),
        _f("probability_std", "<f8", "", "std over frames of the per-frame P(k)"),
    ),
    hints=("probability",),
)

TRACE = StreamLayout(
    name="trace",
    doc=(
        "one row per (exposure, frame, partition), written with the "
        "exposure's results rows"
    ),
    index=("exposure_index", "frame", "partition"),
    fields=(
        _EXPOSURE,
        _f("frame", "<i8", "", "frame index within the exposure"),
        _PARTITION,
        _f("trace", "<f8", COUNT_UNITS, "mean count of the frame in the partition"),
    ),
    hints=("trace",),
)

IMAGES = StreamLayout(
    name="images",
    doc=(
        "one row per (exposure, detector row): the averaged frame of each "
        "exposure, written with the exposure's results rows; the array of "
        "one row is `mean_image` with the one dimension `col`"
    ),
    index=("exposure_index", "row"),
    fields=(
        _EXPOSURE,
        _T_E,
        _f("row", "<i8", "px", "detector row"),
        _f(
            "mean_image",
            "<f8",
            COUNT_UNITS,
            "averaged frame, one detector row",
            dims=("col",),
        ),
    ),
    hints=("mean_image",),
)

DYNAMICS = StreamLayout(
    name="dynamics",
    doc=(
        "one row per partition of each fit of beta(t_e) = beta0 k(Gamma t_e): "
        "a refit whenever an exposure completes (with >= 2 exposure times) "
        "and the final fit; the rows of the highest `fit_index` are the last fit"
    ),
    index=("fit_index", "partition"),
    fields=(
        _f("fit_index", "<i8", "", "0, 1, ... one per fit; the highest is the last"),
        _f("n_exposures", "<i8", "", "exposures in the fit"),
        _f("model", "str", "", "`exponential` or `stretched`"),
        _PARTITION,
        _Q,
        _f("gamma", "<f8", "1/s", "relaxation rate"),
        _f("gamma_err", "<f8", "1/s", "standard error of gamma"),
        _f("beta0", "<f8", "", "contrast at zero exposure"),
        _f("beta0_err", "<f8", "", "standard error of beta0"),
        _f("exponent", "<f8", "", "stretching exponent (1 for `exponential`)"),
        _f("exponent_err", "<f8", "", "standard error of exponent"),
        _f("chi2", "<f8", "", "weighted residual sum of squares"),
        _f("dof", "<i8", "", "degrees of freedom"),
        _f("n_points", "<i8", "", "points used"),
        _f("flags", "<i8", "", "fit flags, bitmask", flags=DYNAMICS_FLAG_NAMES),
        _f("D", "<f8", "Angstrom^2/s", "diffusion coefficient from Gamma = D q^p"),
        _f("D_err", "<f8", "Angstrom^2/s", "standard error of D"),
        _f("q_exponent", "<f8", "", "p of Gamma ~ q^p (2 for diffusion)"),
        _f("q_exponent_err", "<f8", "", "standard error of q_exponent"),
        _f("D_chi2", "<f8", "", "chi-square of the Gamma(q) fit"),
        _f("D_dof", "<i8", "", "degrees of freedom of the Gamma(q) fit"),
        _f(
            "D_flags",
            "<i8",
            "",
            "flags of the Gamma(q) fit, bitmask",
            flags=DYNAMICS_FLAG_NAMES,
        ),
        _f(
            "D_status",
            "str",
            "",
            "what may be said about D: "
            + ", ".join(f"`{s}`" for s in D_STATUSES)
            + " (`non-diffusive`: Gamma/q^2 not constant within errors, D is "
            "not the result; `poor-fit`: D stands with its inflated error); "
            "absent in runs written before it",
        ),
        _f(
            "D_error_scale",
            "<f8",
            "",
            "factor already applied to D_err: sqrt(chi2/dof) of a poor Gamma(q) "
            "fit, else 1; absent in runs written before it",
        ),
    ),
    hints=("gamma", "q"),
)

STREAMS: tuple[StreamLayout, ...] = (
    PROGRESS,
    RESULTS,
    HISTOGRAMS,
    TRACE,
    IMAGES,
    DYNAMICS,
)
"""Every stream of a layout-2 derived run, in the order they first appear."""


def encode_flags(names: Sequence[str], legend: Sequence[str]) -> int:
    """Bitmask of flag ``names`` in ``legend``; unknown names set ``other``."""
    bits = 0
    other = legend.index("other") if "other" in legend else None
    for name in names:
        if name in legend:
            bits |= 1 << legend.index(name)
        elif other is not None:
            bits |= 1 << other
    return bits


def schema_markdown(stream: StreamLayout) -> str:
    """Return the reference table of one stream, as in the schema reference.

    ``docs/reference/derived-run-schema.md`` holds this text for every
    stream (a test checks), so the reference and the layout cannot drift.
    """
    lines = [
        f"### Stream `{stream.name}`",
        "",
        f"One event per row: {stream.doc}.",
        f"Row index: {', '.join(f'`{k}`' for k in stream.index)}; "
        f"hints: {', '.join(f'`{k}`' for k in stream.hints)}.",
        "",
        "| key | dtype | units | meaning |",
        "|---|---|---|---|",
    ]
    for f in (*stream.fields, *stream.templates):
        dtype = "string" if f.is_string else f"`{f.dtype}`"
        if f.dims:
            dtype += f" array, dims {list(f.dims)}"
        meaning = f.doc
        if f.flags:
            meaning += f"; bit i = `{f.name}` legend i: {', '.join(f.flags)}"
        lines.append(f"| `{f.name}` | {dtype} | {f.units or '-'} | {meaning} |")
    return "\n".join(lines) + "\n"
