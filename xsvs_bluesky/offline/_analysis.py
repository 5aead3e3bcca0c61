"""The implementation of :mod:`xsvs_bluesky.offline` (private; see its docstring)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.analysis import AnalysisSetup, ExposureResult, dynamics_q
from xsvs_bluesky.core.dynamics import DiffusionFit, DynamicsFit, fit_dynamics
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.core.images import CenterFit
from xsvs_bluesky.errors import FitError, GeometryError, OptionError
from xsvs_bluesky.legacy import LegacyInputs, read_inputs, refine_beam_center
from xsvs_bluesky.legacy.config import ExposureSpec, LegacyConfig
from xsvs_bluesky.legacy.ini import read_ini
from xsvs_bluesky.legacy.pipeline import SeriesReader, SkippedFile
from xsvs_bluesky.options import (
    FLAT_FIELD_MODES,
    AnalysisOptions,
    DynamicsModel,
    Estimator,
    FlatFieldMode,
    default_estimator,
)

__all__ = [
    "FLAT_FIELD_MODES",
    "LegacyAnalysis",
    "OfflineResult",
    "analyze_legacy",
    "default_estimator",
    "fit_result_dynamics",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(files_done, files_total)``, called after every stack."""


@dataclass(frozen=True, eq=False)
class OfflineResult:
    """Everything an offline analysis produced.

    Attributes
    ----------
    options : AnalysisOptions
        The options, with the main estimator resolved.
    config : LegacyConfig
        The INI file's content.
    geometry : Geometry
        Geometry used (with the refined centre when asked).
    setup : AnalysisSetup
        Partitions, estimator and flat-field settings used;
        ``setup.description`` is the plain-JSON record of them.
    exposures : tuple of ExposureSpec
        The exposures, in analysis (numeric section) order.
    results : tuple of ExposureResult
        One per exposure, same order.
    skipped : tuple of SkippedFile
        Frame files left out (``skip_bad=True`` only).
    center_fit : CenterFit or None
        The refined beam centre, None when not refined.
    files_read : int
        Frame files decoded.
    seconds : float
        Wall time of the frame pass, s.
    """

    config: LegacyConfig
    geometry: Geometry
    setup: AnalysisSetup
    exposures: tuple[ExposureSpec, ...]
    results: tuple[ExposureResult, ...]
    skipped: tuple[SkippedFile, ...]
    center_fit: CenterFit | None
    files_read: int
    seconds: float

    def metadata(self) -> dict[str, Any]:
        """Plain-JSON description: settings, legacy INI, centre, skipped files."""
        out = dict(self.setup.description)
        out["legacy"] = self.config.to_dict()
        out["center_fit"] = (
            None if self.center_fit is None else self.center_fit.to_dict()
        )
        out["skipped_files"] = [s.to_dict() for s in self.skipped]
        return out


class LegacyAnalysis:
    """Prepared analysis of a legacy series: inputs read and checked, no frame yet.

    Parameters
    ----------
    source : LegacyConfig, str or path-like
        The parsed INI file, or its path.
    options : AnalysisOptions, optional
        Estimators, flat-field mode, histogram settings; ``estimator`` and
        ``flat_field`` below, when given, replace those fields.
    estimator : str, optional
        Main estimator; default :func:`default_estimator`.
    flat_field : {"weights", "divide-round", "record-only", "none"}, optional
        How the INI's flat field is used (default ``weights``; ignored when
        it has none), see :class:`~xsvs_bluesky.options.FlatFieldMode`.
    skip_bad : bool, optional
        Skip and record damaged or missing frame files instead of failing.
    frames_per_exposure : int, optional
        Analyse only the first N frames of each exposure (quick looks).
    threads : int, optional
        Decoding threads (default 2).
    chunk_size : int, optional
        Frames histogrammed per call (default 64).

    Raises
    ------
    InputFileError
        INI, mask, flat field or frame files missing or invalid.
    XSVSError
        Unknown estimator or flat-field choice, inconsistent geometry.
    """

    def __init__(
        self,
        source: LegacyConfig | str | PathLike[str],
        *,
        options: AnalysisOptions | None = None,
        estimator: Estimator | str | None = None,
        flat_field: FlatFieldMode | str | None = None,
        skip_bad: bool = False,
        frames_per_exposure: int | None = None,
        threads: int = 2,
        chunk_size: int = 64,
    ) -> None:
        options = AnalysisOptions.merge(
            options, estimator=estimator, flat_field_mode=flat_field
        )
        if frames_per_exposure is not None and frames_per_exposure < 1:
            raise OptionError(
                f"frames per exposure = {frames_per_exposure}; give an integer >= 1"
            )
        config = source if isinstance(source, LegacyConfig) else read_ini(source)
        self.config = config
        self.reader = SeriesReader(
            config.exposures,
            where=str(config.path),
            frames_per_exposure=frames_per_exposure,
            skip_bad=skip_bad,
            threads=threads,
            chunk_size=chunk_size,
            limits=options.limits,
        )
        first = self.reader.first_frame()
        self.inputs: LegacyInputs = read_inputs(
            config,
            first.shape,
            first.dtype,
            use_flat=options.uses_flat_field,
            first_frame=self.reader.first_path,
        )
        if options.uses_flat_field and config.flat_field is None:
            logger.info("%s has no flat field: --flat-field ignored", config.path)
        has_flat = self.inputs.flat_field is not None
        self.options = options.replace(estimator=options.main_estimator(has_flat))
        self.geometry: Geometry = self.inputs.geometry
        self.center_fit: CenterFit | None = None

    @property
    def estimator(self) -> Estimator:
        """The main estimator."""
        assert self.options.estimator is not None
        return self.options.estimator

    def refine_center(
        self, *, max_files: int = 360, jackknife_sectors: int = 8
    ) -> CenterFit:
        """Refine the beam centre from the averaged, flat-corrected image.

        Reads up to ``max_files`` frames of the longest exposures (most
        photons per file) and fits the centre with
        :func:`xsvs_bluesky.core.images.refine_center`; the analysis then
        uses it.  The INI file is not modified.

        Raises
        ------
        FitError
            If the centre cannot be refined (message says how to go on).
        """
        fit = refine_beam_center(
            self.config,
            self.inputs,
            self.reader,
            max_files=max_files,
            jackknife_sectors=jackknife_sectors,
        )
        self.center_fit = fit
        self.geometry = fit.apply(self.inputs.geometry)
        return fit

    def build_setup(self) -> AnalysisSetup:
        """Build the AnalysisSetup: partitions on the current geometry, estimator."""
        cfg = self.config
        inputs = self.inputs
        return AnalysisSetup.build(
            partitions={"q1": cfg.q1, "q2": cfg.q2, "qs": cfg.qs, "dq": cfg.dq},
            geometry=self.geometry,
            masks=inputs.masks,
            flat_field=inputs.flat_field_labelled(),
            options=self.options,
        )

    def run(self, progress: Progress | None = None) -> OfflineResult:
        """Read every frame once and analyse each exposure.

        Parameters
        ----------
        progress : callable, optional
            ``progress(files_done, files_total)`` after every stack.

        Returns
        -------
        OfflineResult

        Raises
        ------
        InputFileError
            A damaged frame file (unless ``skip_bad``), naming the INI file,
            the exposure section and the frame file.
        """
        setup = self.build_setup()
        source = str(self.config.path)
        analyses = [
            setup.new_exposure(spec.name, spec.exposure_time, source=source)
            for spec in self.config.exposures
        ]
        reader = self.reader
        total = reader.n_files
        start = time.perf_counter()
        for index, frames in reader.stacks(self.inputs.shape, self.inputs.dtype):
            analyses[index].update(frames)
            if progress is not None:
                progress(reader.files_read, total)
        seconds = time.perf_counter() - start
        if progress is not None:
            progress(total, total)
        for spec, analysis in zip(self.config.exposures, analyses, strict=True):
            if analysis.n_frames == 0:
                logger.warning("[%s] no frame could be read", spec.name)
        results = tuple(a.result(final=True) for a in analyses)
        return OfflineResult(
            config=self.config,
            geometry=self.geometry,
            setup=setup,
            exposures=tuple(self.config.exposures),
            results=results,
            skipped=tuple(reader.skipped),
            center_fit=self.center_fit,
            files_read=reader.files_read,
            seconds=seconds,
        )


def analyze_legacy(
    source: LegacyConfig | str | PathLike[str],
    *,
    options: AnalysisOptions | None = None,
    estimator: Estimator | str | None = None,
    flat_field: FlatFieldMode | str | None = None,
    refine_center: bool = False,
    skip_bad: bool = False,
    frames_per_exposure: int | None = None,
    threads: int = 2,
    chunk_size: int = 64,
    progress: Progress | None = None,
) -> OfflineResult:
    """Analyse a legacy pyxsvs series in one call (see :class:`LegacyAnalysis`).

    Parameters
    ----------
    source : LegacyConfig, str or path-like
        The INI file or its parsed content.
    options, estimator, flat_field, skip_bad, frames_per_exposure, threads,
    chunk_size
        See :class:`LegacyAnalysis`.
    refine_center : bool, optional
        Refine the beam centre first (:meth:`LegacyAnalysis.refine_center`).
    progress : callable, optional
        ``progress(files_done, files_total)``.

    Returns
    -------
    OfflineResult

    Raises
    ------
    XSVSError
        Any invalid input (:class:`~xsvs_bluesky.errors.InputFileError` for
        files), or a failed centre refinement.
    """
    job = LegacyAnalysis(
        source,
        options=options,
        estimator=estimator,
        flat_field=flat_field,
        skip_bad=skip_bad,
        frames_per_exposure=frames_per_exposure,
        threads=threads,
        chunk_size=chunk_size,
    )
    if refine_center:
        job.refine_center()
    return job.run(progress)


def fit_result_dynamics(
    results: tuple[ExposureResult, ...] | list[ExposureResult],
    model: DynamicsModel | str = DynamicsModel.EXPONENTIAL,
) -> tuple[list[DynamicsFit], DiffusionFit]:
    """Fit ``beta(t_e)`` of every partition, then ``Gamma = D q^2``.

    Parameters
    ----------
    results : sequence of ExposureResult
        One per exposure, with exposure times in s.
    model : {"exponential", "stretched"}
        Visibility model (see :func:`xsvs_bluesky.core.dynamics.fit_dynamics`).

    Returns
    -------
    fits : list of DynamicsFit
        One per partition (``gamma`` in 1/s).
    diffusion : DiffusionFit
        ``D`` in Angstrom^2/s, from ``Gamma = D q^2`` with ``q`` from
        :func:`~xsvs_bluesky.analysis.dynamics_q`: each ring's ``q_eff``
        (the ``mu^2``-weighted q that ``mle-intensity`` reports, averaged
        over the exposures), else the partition centre.  The fits' ``q``
        is that q.

    Raises
    ------
    XSVSError
        With fewer than two exposures or partitions that differ between
        exposures.
    """
    if len(results) < 2:
        raise FitError(
            f"dynamics need beta at >= 2 exposure times, got {len(results)}; "
            "analyse more exposures"
        )
    q = results[0].q
    if any(r.q.shape != q.shape or not np.allclose(r.q, q) for r in results):
        raise GeometryError(
            "exposures have different q partitions; cannot fit dynamics"
        )
    times = np.array([r.exposure_time for r in results], dtype=np.float64)
    beta: NDArray[np.float64] = np.stack([r.beta for r in results])
    err: NDArray[np.float64] = np.stack([r.beta_err for r in results])
    bad = ~np.isfinite(err) | (err <= 0)
    beta = np.where(bad, math.nan, beta)
    err = np.where(bad, 1.0, err)
    return fit_dynamics(
        times, dynamics_q(results), beta, err, model=DynamicsModel.parse(model).value
    )
