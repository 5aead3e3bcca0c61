"""Analysis options shared by every entry point: :class:`AnalysisOptions`.

One vocabulary for the CLI, the callback, replay, reanalyze and the stored
metadata.  Light on purpose: importing this module loads no numpy, numba,
bluesky or Tiled, so the CLI parses options with it.

The four flat-field modes (:class:`FlatFieldMode`):

``weights``
    The flat field is loaded and its pixel efficiencies enter the
    likelihood (``mle-intensity`` and ``mle-weighted`` histogram the
    efficiency groups of a partition and fit them jointly); counts stay
    integer.  The default.
``divide-round``
    The legacy pyxsvs pre-processing: each frame divided by the flat field
    and rounded.  Biased; to reproduce old numbers (its default estimator
    stays the pooled ``mle``).
``record-only``
    The flat field is loaded and recorded (name, checksum) and scales the
    averaged image and I(q), but the contrast does not use it (the
    contrast is that of ``none``).
``none``
    The flat field is not loaded at all.

Older names are accepted on input and mapped here, and only here
(:meth:`FlatFieldMode.parse`): ``weighted`` (what the callback and derived runs
of version 1 called ``weights``).

Examples
--------
>>> opts = AnalysisOptions(flat_field_mode="weighted")
>>> opts.flat_field_mode
<FlatFieldMode.WEIGHTS: 'weights'>
>>> opts.main_estimator(has_flat_field=True)
<Estimator.MLE_INTENSITY: 'mle-intensity'>

The modules that act on these names re-export them
(``xsvs_bluesky.core.estimators.ESTIMATORS``, ``xsvs_bluesky.replay.COMPRESSIONS``,
``xsvs_bluesky.reanalyze.FRAME_SOURCES``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Self, get_args

from xsvs_bluesky.errors import LimitError, OptionError

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_EXTRA_ESTIMATORS",
    "DEFAULT_LIMITS",
    "DYNAMICS_MODELS",
    "ESTIMATORS",
    "FLAT_FIELD_MODES",
    "FRAME_SOURCES",
    "AnalysisOptions",
    "Backend",
    "DynamicsModel",
    "Estimator",
    "FlatFieldMode",
    "Limits",
    "OptionError",
    "default_estimator",
    "hdf5_filters",
]

COMPRESSIONS: tuple[str, ...] = ("blosc-lz4", "gzip", "lzf", "none")
"""HDF5 compressions of the frame files that the legacy replay and the
simulated detector write: Blosc LZ4 + bit shuffle (hdf5plugin; fast, the
default of both), gzip level 1 + shuffle and LZF (readable by any h5py),
none (see :func:`hdf5_filters`)."""

FRAME_SOURCES: tuple[str, ...] = ("auto", "file", "tiled")
"""Where a re-analysis reads frames: the HDF5 files when readable here
(``auto``), the files only, or through Tiled's HTTP API."""


_FLAT_FIELD_ALIASES = {"weighted": "weights"}
"""Older flat-field names still accepted: the callback's (and v1 runs') name."""


def _choice(kind: str, value: Any, names: Iterable[str]) -> str:
    text = str(value.value if isinstance(value, StrEnum) else value).strip().lower()
    if text not in names:
        raise OptionError(
            f"{kind} {value!r} is unknown; give one of {', '.join(names)}"
        )
    return text


def hdf5_filters(compression: str) -> dict[str, Any]:
    """Keyword arguments of ``h5py``'s ``create_dataset`` for a compression.

    Parameters
    ----------
    compression : str
        One of :data:`COMPRESSIONS`; ``blosc-lz4`` imports ``hdf5plugin``
        (only then).

    Raises
    ------
    OptionError
        On a name not in :data:`COMPRESSIONS`.
    """
    name = _choice("compression", compression, COMPRESSIONS)
    if name == "blosc-lz4":
        import hdf5plugin

        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=2))
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    return {}


class _Choice(StrEnum):
    """A closed set of option names.

    Subclasses give as class keywords ``kind``, the set's name in messages,
    and optionally ``aliases``, older names mapped to current ones.
    """

    _kind: ClassVar[str]
    _aliases: ClassVar[Mapping[str, str]]

    def __init_subclass__(
        cls, *, kind: str, aliases: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls._kind = kind
        cls._aliases = MappingProxyType(dict(aliases or {}))

    @classmethod
    def parse(cls, value: Self | str) -> Self:
        """Return the member named by ``value``; older names are mapped here only.

        Case and surrounding blanks are ignored.

        Raises
        ------
        OptionError
            Naming the value and the valid names.

        Examples
        --------
        >>> FlatFieldMode.parse("weighted").value
        'weights'
        """
        if isinstance(value, str) and value.strip().lower() in cls._aliases:
            return cls(cls._aliases[value.strip().lower()])
        return cls(_choice(cls._kind, value, tuple(m.value for m in cls)))


class FlatFieldMode(_Choice, kind="flat-field mode", aliases=_FLAT_FIELD_ALIASES):
    """How the flat field is used (see the module docstring)."""

    WEIGHTS = "weights"
    DIVIDE_ROUND = "divide-round"
    RECORD_ONLY = "record-only"
    NONE = "none"


class Estimator(_Choice, kind="estimator"):
    """Contrast estimators (:func:`xsvs_bluesky.core.estimators.estimate_contrast`)."""

    MLE = "mle"
    MOMENTS = "moments"
    LOW_COUNT = "low-count"
    R_MINUS_1 = "r-1"
    PYXSVS_LSQ = "pyxsvs-lsq"
    MLE_WEIGHTED = "mle-weighted"
    MLE_FRAMES = "mle-frames"
    MLE_INTENSITY = "mle-intensity"


class DynamicsModel(_Choice, kind="dynamics model"):
    """Visibility models of the beta(t_e) fit (:mod:`xsvs_bluesky.core.dynamics`)."""

    EXPONENTIAL = "exponential"
    STRETCHED = "stretched"


Backend = Literal["auto", "numba", "numpy"]
"""Histogram backends."""

FLAT_FIELD_MODES: tuple[str, ...] = tuple(m.value for m in FlatFieldMode)
"""The four flat-field mode names, in the order of :class:`FlatFieldMode`."""
ESTIMATORS: tuple[str, ...] = tuple(e.value for e in Estimator)
"""Estimator names."""
DYNAMICS_MODELS: tuple[str, ...] = tuple(m.value for m in DynamicsModel)
"""Dynamics model names."""
DEFAULT_EXTRA_ESTIMATORS: tuple[Estimator, ...] = (
    Estimator.MOMENTS,
    Estimator.LOW_COUNT,
    Estimator.R_MINUS_1,
)
"""Cheap closed-form estimators reported next to the main one."""


_LIMIT_FIELDS = ("max_partitions", "max_pixels", "max_frame_bytes")


@dataclass(frozen=True)
class Limits:
    """Resource limits, checked before memory is allocated.

    An input that asks for more (an INI file's q range, a run's start
    document, a frame file) is refused with :class:`~xsvs_bluesky.errors.
    LimitError` naming the input, the size and the limit; in the live
    callback the derived run of that raw run fails and the scan goes on.
    The defaults cover every detector in use (an Eiger2 16M has 18.1 Mpx)
    and every partitioning that makes sense (tens to a few hundred annuli);
    raise them deliberately.  See ``docs/reference/limits.md``.

    Parameters
    ----------
    max_partitions : int
        Most q partitions (default 1024).  Memory and time grow with them:
        the example series (256 x 256 px, 8 exposures, 2700 frames) takes
        0.4 GB and 12 s with 9 partitions, 2.0 GB and 61 s with 4096.
    max_pixels : int
        Most pixels of the detector and of a frame, rows x columns
        (default 2**25 = 33 554 432, e.g. 5793 x 5793).
    max_frame_bytes : int
        Most bytes of one frame file once inflated (gzip) or as announced by
        its EDF header (default 2**28 bytes = 256 MiB: the largest detector
        at 64 bits per pixel).

    Raises
    ------
    OptionError
        On a value that is not an integer >= 1.

    Examples
    --------
    >>> Limits().max_partitions
    1024
    >>> try:
    ...     Limits(max_partitions=10).check_partitions(20, "q1 = 0, q2 = 19, qs = 1")
    ... except LimitError as err:
    ...     print(str(err)[:60])
    q1 = 0, q2 = 19, qs = 1 make 20 q partitions, more than the
    """

    max_partitions: int = 1024
    max_pixels: int = 2**25
    max_frame_bytes: int = 2**28

    def __post_init__(self) -> None:
        for name in _LIMIT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise OptionError(f"{name} = {value!r}; give an integer >= 1")
            object.__setattr__(self, name, int(value))

    def check_partitions(self, count: float, what: str) -> None:
        """Raise :class:`LimitError` if ``what`` makes more than ``max_partitions``.

        ``count`` may be a float (a count computed before rounding, or inf).
        """
        if not count <= self.max_partitions:
            shown = f"{count:.3g}" if count >= 1e6 else f"{int(count)}"
            raise LimitError(
                f"{what} make {shown} q partitions, more than the limit of "
                f"{self.max_partitions} (Limits.max_partitions); give fewer "
                "partitions or raise the limit"
            )

    def check_pixels(self, shape: Iterable[int], what: str) -> None:
        """Raise :class:`LimitError` if ``shape`` has more than ``max_pixels``."""
        dims = [int(n) for n in shape]
        count = 1
        for n in dims:
            count *= n
        if count > self.max_pixels:
            raise LimitError(
                f"{what} has shape {tuple(dims)} = {count} pixels, more than "
                f"the limit of {self.max_pixels} (Limits.max_pixels); check "
                "the shape or raise the limit"
            )

    def frame_bytes_exceeded(self, what: str, size: str) -> LimitError:
        """Return the error for a frame of ``size`` (text) over ``max_frame_bytes``."""
        return LimitError(
            f"{what}: {size}, more than the limit of {self.max_frame_bytes} bytes "
            "(Limits.max_frame_bytes); check the file or raise the limit"
        )


DEFAULT_LIMITS = Limits()
"""The default :class:`Limits`."""


def default_estimator(
    has_flat_field: bool,
    flat_field_mode: FlatFieldMode | str = FlatFieldMode.WEIGHTS,
    *,
    has_q_map: bool = True,
) -> Estimator:
    """Return the default main estimator.

    ``mle-intensity`` (each pixel's mean modelled from the flat field and
    the intensity's shape across the ring; unbiased when the intensity
    varies inside a ring) in the ``weights``, ``record-only`` and ``none``
    modes, with or without a flat field (only ``weights`` gives it the
    efficiencies).  The pooled ``mle`` in the ``divide-round`` mode: its
    divided and rounded counts are not integer photon counts, the mode is
    there to reproduce old numbers (``pyxsvs-lsq`` with ``divide-round`` is
    the pyxsvs-compatible combination; it is always asked for explicitly).

    Without a q map (partitions given without a geometry, so the pixels'
    q inside a ring are unknown; ``has_q_map=False``) the rule before
    ``mle-intensity``: ``mle-weighted`` with a flat field used as weights,
    else ``mle``.

    Examples
    --------
    >>> default_estimator(True).value, default_estimator(True, "divide-round").value
    ('mle-intensity', 'mle')
    >>> default_estimator(True, has_q_map=False).value
    'mle-weighted'
    """
    mode = FlatFieldMode.parse(flat_field_mode)
    if mode is FlatFieldMode.DIVIDE_ROUND:
        return Estimator.MLE
    if has_q_map:
        return Estimator.MLE_INTENSITY
    if has_flat_field and mode is FlatFieldMode.WEIGHTS:
        return Estimator.MLE_WEIGHTED
    return Estimator.MLE


@dataclass(frozen=True)
class AnalysisOptions:
    """How frames are analysed, independent of the detector and the data.

    Geometry, partitions, masks and the flat field itself are inputs, not
    options: they go to :meth:`xsvs_bluesky.analysis.AnalysisSetup.build`
    and :class:`xsvs_bluesky.callback.XSVSCallback` next to an
    ``AnalysisOptions``.  Values are normalised on construction: names may
    be given as plain strings, older flat-field names are mapped.

    Parameters
    ----------
    estimator : Estimator or str or None
        Main estimator; None for :func:`default_estimator` (decided when
        it is known whether there is a flat field).
    flat_field_mode : FlatFieldMode or str
        How the flat field is used (default ``weights``).
    extra_estimators : sequence of Estimator or str
        Also reported per exposure (default moments, low-count, r-1).
    estimator_options : mapping
        Keyword arguments of the main estimator (plain JSON values).
    n_bins : int
        Initial number of histogram bins (they grow).
    n_groups : int
        Pixel groups per partition (default 16): the efficiency groups of
        ``mle-weighted`` in ``weights`` mode; for ``mle-intensity``, 4
        radial sub-rings times ``n_groups // 4`` efficiency groups (the
        efficiency split only in ``weights`` mode).
    histogram_backend : {"auto", "numba", "numpy"}
    dynamics_model : DynamicsModel or str or None
        Model of the beta(t_e) fit over exposure times; None for none.
    limits : Limits
        Resource limits checked before allocating (default ``Limits()``);
        not part of :meth:`to_metadata` (they never change a result).

    Raises
    ------
    OptionError
        On a name that is not one of the choices, or a count < 1.
    """

    estimator: Estimator | None = None
    flat_field_mode: FlatFieldMode = FlatFieldMode.WEIGHTS
    extra_estimators: tuple[Estimator, ...] = DEFAULT_EXTRA_ESTIMATORS
    estimator_options: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({})
    )
    n_bins: int = 32
    n_groups: int = 16
    histogram_backend: Backend = "auto"
    dynamics_model: DynamicsModel | None = DynamicsModel.EXPONENTIAL
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once
        if self.estimator is not None:
            set_(self, "estimator", Estimator.parse(self.estimator))
        set_(self, "flat_field_mode", FlatFieldMode.parse(self.flat_field_mode))
        extra = self.extra_estimators
        if isinstance(extra, str):
            extra = (extra,)
        set_(self, "extra_estimators", tuple(Estimator.parse(e) for e in extra))
        set_(self, "estimator_options", MappingProxyType(dict(self.estimator_options)))
        for name in ("n_bins", "n_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise OptionError(f"{name} = {value!r}; give an integer >= 1")
            set_(self, name, int(value))
        _choice("histogram backend", self.histogram_backend, get_args(Backend))
        if self.dynamics_model is not None:
            set_(self, "dynamics_model", DynamicsModel.parse(self.dynamics_model))
        if not isinstance(self.limits, Limits):
            raise OptionError(f"limits = {self.limits!r}; give a Limits object")

    @property
    def uses_flat_field(self) -> bool:
        """Whether the flat field is loaded at all (every mode but ``none``)."""
        return self.flat_field_mode is not FlatFieldMode.NONE

    def main_estimator(
        self, has_flat_field: bool, *, has_q_map: bool = True
    ) -> Estimator:
        """Return the main estimator: the one given, else :func:`default_estimator`."""
        if self.estimator is not None:
            return self.estimator
        return default_estimator(
            has_flat_field and self.uses_flat_field,
            self.flat_field_mode,
            has_q_map=has_q_map,
        )

    @classmethod
    def merge(
        cls, options: AnalysisOptions | None = None, **keywords: Any
    ) -> AnalysisOptions:
        """Return ``options`` (default ``AnalysisOptions()``) with keywords applied.

        The convenience keyword arguments of the entry points
        (``XSVSCallback(estimator=...)``, ``analyze_legacy(flat_field=...)``)
        are built on this: a keyword that is None was not given and leaves
        the field as it is.

        Examples
        --------
        >>> AnalysisOptions.merge(None, estimator=None, n_bins=64).n_bins
        64
        """
        base = cls() if options is None else options
        given = {k: v for k, v in keywords.items() if v is not None}
        return base.replace(**given) if given else base

    def replace(self, **changes: Any) -> AnalysisOptions:
        """Return a copy with ``changes`` (normalised like the constructor's)."""
        return dataclasses.replace(self, **changes)

    def to_metadata(self) -> dict[str, Any]:
        """Plain-JSON record for the derived run's ``xsvs`` dict.

        Keys: ``estimator`` (None until resolved), ``flat_field_mode``,
        ``extra_estimators``, ``estimator_options``, ``n_bins``,
        ``groups_per_partition`` (``n_groups``; the derived run's own
        ``n_groups`` is the number of pixel groups made),
        ``histogram_backend``, ``dynamics_model``.
        """
        return {
            "estimator": None if self.estimator is None else self.estimator.value,
            "flat_field_mode": self.flat_field_mode.value,
            "extra_estimators": [e.value for e in self.extra_estimators],
            "estimator_options": dict(self.estimator_options),
            "n_bins": self.n_bins,
            "groups_per_partition": self.n_groups,
            "histogram_backend": self.histogram_backend,
            "dynamics_model": (
                None if self.dynamics_model is None else self.dynamics_model.value
            ),
        }

    @classmethod
    def from_metadata(cls, xsvs: Mapping[str, Any]) -> AnalysisOptions:
        """Read the options back from a derived run's ``xsvs`` dict.

        Reads what this version writes (:meth:`to_metadata`) and what
        version 1 runs stored: no ``flat_field_mode`` key, the mode inside
        the flat-field identity (``flat_field.mode``, ``weighted`` for
        ``weights``) and no flat field recorded when none was loaded (read
        as ``none``); no ``n_bins``, ``groups_per_partition`` or
        ``histogram_backend``.  Unknown keys are ignored; missing ones take
        the defaults.

        Raises
        ------
        OptionError
            On a stored name that is not one of the choices.
        """
        flat = xsvs.get("flat_field")
        mode = xsvs.get("flat_field_mode")
        if mode is None:  # v1: the mode only inside the flat field's identity
            mode = flat.get("mode") if isinstance(flat, Mapping) else None
            mode = FlatFieldMode.NONE if mode is None else mode
        kwargs: dict[str, Any] = {"flat_field_mode": mode}
        for key in ("estimator", "extra_estimators", "estimator_options"):
            if xsvs.get(key) is not None:
                kwargs[key] = xsvs[key]
        if isinstance(kwargs.get("extra_estimators"), list):
            kwargs["extra_estimators"] = tuple(kwargs["extra_estimators"])
        for key in ("n_bins", "histogram_backend"):
            if xsvs.get(key) is not None:
                kwargs[key] = xsvs[key]
        if xsvs.get("groups_per_partition") is not None:
            kwargs["n_groups"] = xsvs["groups_per_partition"]
        if "dynamics_model" in xsvs:
            kwargs["dynamics_model"] = xsvs["dynamics_model"]
        return cls(**kwargs)
