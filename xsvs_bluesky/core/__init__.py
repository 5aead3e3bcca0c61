"""Pure numerical core of xsvs_bluesky: numpy, scipy and numba only.

Everything here works on plain numpy arrays, with no bluesky, Tiled,
matplotlib or file I/O, so it can be used alone::

    from xsvs_bluesky.core import Geometry, Partitions, HistogramAccumulator

The bluesky callback, the legacy readers and the command line are thin
adapters around these pieces.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers
    from .dynamics import (
        DIFFUSION_STATUSES,
        DiffusionFit,
        DynamicsFit,
        dead_time_kernel,
        exponential_kernel,
        fit_diffusion,
        fit_dynamics,
        fit_visibility,
        not_yet_determined,
        numerical_kernel,
        stretched_kernel,
        visibility_kernel,
    )
    from .estimators import (
        ESTIMATORS,
        FLAGS,
        INTENSITY_ESTIMATOR,
        ContrastEstimate,
        EstimatorError,
        IntensityFit,
        IntensityGroups,
        check_estimator,
        estimate_contrast,
        fit_grouped_mle,
        fit_intensity,
        fit_intensity_mle,
        fit_low_count,
        fit_mle,
        fit_moments,
        fit_pyxsvs_lsq,
        intensity_groups,
        legacy_r_minus_1,
        nbinom_logpmf,
        nbinom_pmf,
    )
    from .flatfield import (
        apparent_contrast,
        corrected_contrast,
        divide_round,
        efficiency_variance,
    )
    from .geometry import (
        Geometry,
        MaskPolarityWarning,
        PartitionOverlapWarning,
        Partitions,
        PixelGroups,
        check_mask_polarity,
        combine_masks,
        partition_centers,
    )
    from .histogram import (
        FrameBinner,
        HistogramAccumulator,
        bin_frames,
    )
    from .images import (
        CenterFit,
        ImageAverager,
        RadialProfile,
        radial_profile,
        refine_center,
    )
    from .synthetic import (
        speckle_frames,
        static_speckle_frames,
    )

#: public name -> submodule defining it, imported on first use (so that
#: ``import xsvs_bluesky.core.geometry`` does not load numba and the fits)
_LAZY = {
    "DIFFUSION_STATUSES": "dynamics",
    "DiffusionFit": "dynamics",
    "DynamicsFit": "dynamics",
    "dead_time_kernel": "dynamics",
    "exponential_kernel": "dynamics",
    "fit_diffusion": "dynamics",
    "fit_dynamics": "dynamics",
    "fit_visibility": "dynamics",
    "not_yet_determined": "dynamics",
    "numerical_kernel": "dynamics",
    "stretched_kernel": "dynamics",
    "visibility_kernel": "dynamics",
    "ESTIMATORS": "estimators",
    "FLAGS": "estimators",
    "INTENSITY_ESTIMATOR": "estimators",
    "ContrastEstimate": "estimators",
    "EstimatorError": "estimators",
    "IntensityFit": "estimators",
    "IntensityGroups": "estimators",
    "check_estimator": "estimators",
    "estimate_contrast": "estimators",
    "fit_grouped_mle": "estimators",
    "fit_intensity": "estimators",
    "fit_intensity_mle": "estimators",
    "fit_low_count": "estimators",
    "fit_mle": "estimators",
    "fit_moments": "estimators",
    "fit_pyxsvs_lsq": "estimators",
    "intensity_groups": "estimators",
    "legacy_r_minus_1": "estimators",
    "nbinom_logpmf": "estimators",
    "nbinom_pmf": "estimators",
    "apparent_contrast": "flatfield",
    "corrected_contrast": "flatfield",
    "divide_round": "flatfield",
    "efficiency_variance": "flatfield",
    "Geometry": "geometry",
    "MaskPolarityWarning": "geometry",
    "PartitionOverlapWarning": "geometry",
    "Partitions": "geometry",
    "PixelGroups": "geometry",
    "check_mask_polarity": "geometry",
    "combine_masks": "geometry",
    "partition_centers": "geometry",
    "FrameBinner": "histogram",
    "HistogramAccumulator": "histogram",
    "bin_frames": "histogram",
    "CenterFit": "images",
    "ImageAverager": "images",
    "RadialProfile": "images",
    "radial_profile": "images",
    "refine_center": "images",
    "speckle_frames": "synthetic",
    "static_speckle_frames": "synthetic",
}

__all__ = [
    "DIFFUSION_STATUSES",
    "INTENSITY_ESTIMATOR",
    "CenterFit",
    "ContrastEstimate",
    "DiffusionFit",
    "DynamicsFit",
    "ESTIMATORS",
    "EstimatorError",
    "FLAGS",
    "FrameBinner",
    "IntensityFit",
    "IntensityGroups",
    "Geometry",
    "HistogramAccumulator",
    "ImageAverager",
    "MaskPolarityWarning",
    "PartitionOverlapWarning",
    "Partitions",
    "PixelGroups",
    "RadialProfile",
    "apparent_contrast",
    "bin_frames",
    "check_estimator",
    "check_mask_polarity",
    "combine_masks",
    "corrected_contrast",
    "dead_time_kernel",
    "divide_round",
    "efficiency_variance",
    "estimate_contrast",
    "exponential_kernel",
    "fit_diffusion",
    "fit_dynamics",
    "fit_grouped_mle",
    "fit_intensity",
    "fit_intensity_mle",
    "fit_low_count",
    "fit_mle",
    "fit_moments",
    "fit_pyxsvs_lsq",
    "fit_visibility",
    "intensity_groups",
    "legacy_r_minus_1",
    "nbinom_logpmf",
    "nbinom_pmf",
    "not_yet_determined",
    "numerical_kernel",
    "partition_centers",
    "radial_profile",
    "refine_center",
    "speckle_frames",
    "static_speckle_frames",
    "stretched_kernel",
    "visibility_kernel",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
