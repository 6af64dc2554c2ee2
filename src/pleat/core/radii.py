"""Radii per smoothed weight: one R for all (the paper), a mapping from layer spec to R, a callable of the
selected parameter, or `relative(rho)`: R_l = rho x RMS(W_l), which a rescaling of the layers cannot change, or
`relative(rho, per="weight")`: R_i = rho x |w_i| for each weight (as ASAM scales its ascent step, without its floor),
or `relative(rho, per="filter")`: R = rho x RMS of each output unit's (filter's) weights, as random weight
perturbation scales its noise filter by filter (Li et al., arXiv 2211.11489).

A ReLU net is scale-covariant: multiplying one layer (weight and bias) by c and the next layer's weight by 1/c
leaves the function unchanged, and an absolute R then means a different smoothing. With relative radii the boxes
scale with the weights, so the sampled loss is the same for both nets (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from pleat.core.kernels import Kernel, Scaled
from pleat.core.select import Selected, select

PER = ("layer", "filter", "weight")
RADIUS_RULES = ("relative", "relative-filter", "relative-weight", "scoped")


def radius_rule(radius) -> tuple[str, float] | None:
    """(rule, number) of a radius string "relative:RHO", "relative-filter:RHO", "relative-weight:RHO" or
    "scoped:RISE"; None otherwise."""
    rule, _, value = radius.partition(":") if isinstance(radius, str) else ("", "", "")
    if rule not in RADIUS_RULES:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    ok = math.isfinite(number) and (number > 0 if rule == "scoped" else number >= 0)
    return (rule, number) if ok else None


@dataclass(frozen=True)
class Relative:
    """Radii read from the current weights at every call (no gradient): per="layer", R_l = rho x RMS(W_l) for every
    weight of layer l; per="filter", R_f = rho x RMS(W_f) for the weights of each output unit f (a row of a Linear
    weight, a filter of a convolution); per="weight", R_i = rho x |w_i|. All give a layer the same mean variance
    (rho RMS(W_l))²/3, spread evenly, by filter or in proportion to w_i²; a weight at zero is then not perturbed."""

    rho: float
    per: str = "layer"

    def __post_init__(self):
        if not isinstance(self.rho, (int, float)) or not math.isfinite(self.rho) or self.rho < 0:
            raise ValueError(f"relative radius: rho must be a finite number >= 0, got {self.rho!r}")
        if self.per not in PER:
            raise ValueError(f"relative radius: per must be one of {PER}, got {self.per!r}")

    def __call__(self, weight: Tensor) -> float:
        """The layer's R (per weight: the R of the box with the same mean variance)."""
        return self.rho * float(weight.detach().double().square().mean().sqrt())


def relative(rho: float, per: str = "layer") -> Relative:
    """Radii relative to the weights' scale (pass as `radius=`): R_l = rho x RMS(W_l); per="filter": R = rho x the
    RMS of each output unit's weights; per="weight": R_i = rho x |w_i|."""
    return Relative(float(rho), per)


Radius = float | Mapping[Any, float] | Callable[[Selected], float] | Relative  # mapping keys: layer specs


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
        chosen = {s.name for s in selected}
        for spec, r in radius.items():
            names = {s.name for s in select(module, spec, include_bias)}
            if not names & chosen:
                raise ValueError(
                    f"radius: the mapping's entry {spec!r} names no smoothed layer ({', '.join(sorted(names))} is "
                    "not in layers=): add it to layers= or drop the entry"
                )
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


def scale(weight: Tensor, per: str) -> Tensor:
    """The per-coordinate scale of a relative radius with `per` "filter" or "weight": a snapshot (detached copy) of
    |w_i|, or of each output unit's RMS (dim 0) broadcast to its weights."""
    w = weight.detach()
    if per == "weight":
        return w.abs()
    if w.ndim < 2:  # a vector (a norm layer's scale): each entry is its own unit
        return w.abs()
    return w.square().mean(dim=tuple(range(1, w.ndim)), keepdim=True).sqrt().expand_as(w).clone()


def kernels(
    radius: Radius,
    module: nn.Module,
    selected: list[Selected],
    make: Callable[[float], Kernel],
    include_bias: bool = False,
) -> dict[str, Kernel]:
    """Each selected parameter's kernel: `make(R)` with its R, or, for `relative(rho, per="filter" | "weight")`,
    `make(rho)` scaled coordinate by coordinate by a snapshot of the weights' scale (`scale`). Returns {parameter
    name: kernel}."""
    if isinstance(radius, Relative) and radius.per != "layer":
        params = dict(module.named_parameters())
        return {s.name: Scaled(make(radius.rho), scale(params[s.name], radius.per)) for s in selected}
    return {name: make(r) for name, r in resolve(radius, module, selected, include_bias).items()}


@dataclass(frozen=True)
class Scoped:
    """A config's radius "scoped:RISE": the trainer replaces it by `pleat.scope`'s radii for that rise."""

    rise: float


def from_config(radius) -> Radius | Scoped:
    """A config's radius (a number, "relative:RHO", "scoped:RISE", or pairs of layer and R) as `resolve` takes it
    (a `Scoped` rise is the trainer's to resolve)."""
    if isinstance(radius, str):
        rule = radius_rule(radius)
        if rule is None:
            raise ValueError(
                f"radius {radius!r}: a string must read relative:RHO, relative-filter:RHO, relative-weight:RHO or "
                "scoped:RISE"
            )
        if rule[0] == "scoped":
            return Scoped(rule[1])
        return Relative(rule[1], rule[0].partition("-")[2] or "layer")
    return dict(radius) if isinstance(radius, tuple) else radius


def is_zero(radius: Radius | Scoped) -> bool:
    """True when every R is 0 (nothing is perturbed); a callable or a scoped radius is never known to be."""
    if isinstance(radius, Scoped):
        return False
    if isinstance(radius, Relative):
        return radius.rho == 0
    if isinstance(radius, Mapping):
        return all(r == 0 for r in radius.values())
    return not callable(radius) and radius == 0
