"""Radii per smoothed weight: one R for all (the paper), a mapping from layer spec to R, a callable of the
selected parameter, or `relative(rho)`: R_l = rho x RMS(W_l), which a rescaling of the layers cannot change.

A ReLU net is scale-covariant: multiplying one layer (weight and bias) by c and the next layer's weight by 1/c
leaves the function unchanged, and an absolute R then means a different smoothing. With relative radii the boxes
scale with the weights, so the sampled loss is the same for both nets (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from pleat.config import relative_rho
from pleat.select import LayerSpec, Selected, select


@dataclass(frozen=True)
class Relative:
    """R_l = rho x RMS(W_l) per smoothed weight, read from the current weights at every call (no gradient)."""

    rho: float

    def __post_init__(self):
        if not isinstance(self.rho, (int, float)) or not math.isfinite(self.rho) or self.rho < 0:
            raise ValueError(f"relative radius: rho must be a finite number >= 0, got {self.rho!r}")

    def __call__(self, weight: Tensor) -> float:
        return self.rho * float(weight.detach().double().square().mean().sqrt())


def relative(rho: float) -> Relative:
    """Per-layer radii relative to the weights' scale: R_l = rho x RMS(W_l) (pass as `radius=`)."""
    return Relative(float(rho))


Radius = float | Mapping[LayerSpec, float] | Callable[[Selected], float] | Relative


def per_layer(radius: Radius) -> bool:
    """Whether `radius` gives each smoothed weight its own R (anything but one number)."""
    return not isinstance(radius, (int, float)) or isinstance(radius, bool)


def resolve(
    radius: Radius, module: nn.Module, selected: list[Selected], include_bias: bool = False
) -> dict[str, float]:
    """Each selected parameter's R. A mapping's keys are layer specs (as `layers=`): each selected parameter must
    fall under exactly one of them; a callable is called with each `Selected`; `Relative` reads the weights now.
    Returns {parameter name: R}."""
    if isinstance(radius, Relative):
        params = dict(module.named_parameters())
        radii = {s.name: radius(params[s.name]) for s in selected}
    elif isinstance(radius, Mapping):
        radii = {}
        for spec, r in radius.items():
            names = {s.name for s in select(module, spec, include_bias)}
            for s in selected:
                if s.name in names:
                    if s.name in radii:
                        raise ValueError(f"radius: {s.name} falls under two entries of the mapping")
                    radii[s.name] = r
        missing = [s.name for s in selected if s.name not in radii]
        if missing:
            raise ValueError(f"radius: the mapping gives no R for {', '.join(missing)}; add an entry for each")
    elif callable(radius):
        radii = {s.name: radius(s) for s in selected}
    else:
        radii = {s.name: radius for s in selected}
    for name, r in radii.items():
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
            raise ValueError(f"radius of {name} must be a finite number >= 0, got {r!r}")
    return {name: float(r) for name, r in radii.items()}


def from_config(radius) -> Radius:
    """A config's radius (a number, "relative:RHO", or pairs of layer and R) in the form `resolve` takes."""
    if isinstance(radius, str):
        rho = relative_rho(radius)
        if rho is None:
            raise ValueError(f"radius {radius!r}: a string must read relative:RHO")
        return Relative(rho)
    return dict(radius) if isinstance(radius, tuple) else radius


def is_zero(radius: Radius) -> bool:
    """True when every R is 0 (nothing is perturbed); a callable is never known to be."""
    if isinstance(radius, Relative):
        return radius.rho == 0
    if isinstance(radius, Mapping):
        return all(r == 0 for r in radius.values())
    return not callable(radius) and radius == 0
