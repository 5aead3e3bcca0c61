"""Pure numerical core of xsvs_bluesky: numpy, scipy and numba only.

Everything here works on plain numpy arrays, with no bluesky, Tiled,
matplotlib or file I/O, so it can be used alone::

    from xsvs_bluesky.core import Geometry, Partitions, HistogramAccumulator

The bluesky callback, the legacy readers and the command line are thin
adapters around these pieces.
"""

from __future__ import annotations

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
