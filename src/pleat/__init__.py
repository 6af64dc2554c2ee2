"""pleat: partial local entropy, layer by layer (Musso, arXiv 2007.09091)."""

from pleat.kernels import Box, Gaussian, soft_box_distance
from pleat.objective import Last, PartialLocalEntropy, aggregate
from pleat.select import select, weight_layers

__version__ = "0.1.0"

__all__ = [
    "Box",
    "Gaussian",
    "Last",
    "PartialLocalEntropy",
    "aggregate",
    "select",
    "soft_box_distance",
    "weight_layers",
]
