"""pleat: partial local entropy, layer by layer (Musso, arXiv 2007.09091)."""

from pleat.core.kernels import Box, Gaussian, Kernel, soft_box_distance
from pleat.core.objective import Last, PartialLocalEntropy, aggregate
from pleat.core.radii import Relative, relative
from pleat.core.sam import SAM
from pleat.core.select import select, weight_layers
from pleat.probes.flatness import FlatnessProfile, flatness_profile, hutchinson_traces
from pleat.probes.profile import Profile, profile
from pleat.probes.regimes import Regimes, regimes
from pleat.probes.scoping import scope
from pleat.probes.temperature import LayerTemperature

__version__ = "0.2.0"

__all__ = [
    "Box",
    "FlatnessProfile",
    "Gaussian",
    "Kernel",
    "Last",
    "LayerTemperature",
    "PartialLocalEntropy",
    "Profile",
    "Regimes",
    "Relative",
    "SAM",
    "aggregate",
    "flatness_profile",
    "hutchinson_traces",
    "profile",
    "regimes",
    "relative",
    "scope",
    "select",
    "soft_box_distance",
    "weight_layers",
]
