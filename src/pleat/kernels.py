"""Smoothing kernels: how the perturbations ΔW are drawn and how each point is weighted.

A kernel is a small frozen dataclass with
- `sample_(out, generator)`: fill `out` with one perturbation of a parameter, in place;
- `log_weight(deltas)`: the log-kernel `-d(ΔW)` of one point (a 0-d tensor), summed over its coordinates;
- `variance`: the per-coordinate variance of the draws, so that a mean loss rise estimates a Hessian trace;
- `flat`: `True` when every point has weight one (no `log_weight` to compute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# For a finite sharpness k the soft box has tails beyond R; the draws cover them up to where the per-coordinate
# kernel sigma(-2k t) has fallen below 1e-4, that is t = ln(1e4) / (2k).
SOFT_BOX_TAIL = math.log(1e4) / 2


LATTICE_LEVELS = 2**16


def uniform_lattice_(out: Tensor, half_side: float, generator: torch.Generator | None) -> Tensor:
    """Fill `out` with independent draws uniform on the 2^16 symmetric levels (2i + 1 - 2^16) h / 2^16 of [-h, h].

    Each 64 random bits give four coordinates, so this costs about a third of `uniform_` on a CPU, where drawing
    the noise is a sizeable part of a smoothed step. The lattice is far finer than any radius resolves; its
    variance is h²/3 (1 - 2^-32).
    """
    n = out.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=out.device)
    bits.random_(-(2**63), None, generator=generator)  # the full 64-bit range: four unbiased int16 lanes
    levels = bits.view(torch.int16)[:n].view(out.shape)
    step = 2 * half_side / LATTICE_LEVELS
    return out.copy_(levels).mul_(step).add_(step / 2)  # same-dtype in-place passes: mixed-dtype ops are slower


def soft_box_distance(delta: Tensor, radius: float, sharpness: float) -> Tensor:
    """Eq 5: d_{R,k}(ΔW) = -Σ_i log[(1 - σ(2k(ΔW_i - R))) σ(2k(ΔW_i + R))], computed stably with softplus.

    Returns a 0-d tensor (the sum over every coordinate of `delta`); zero inside the box when k is infinite.
    """
    if math.isinf(sharpness):
        outside = (delta.abs() > radius).any()
        return torch.where(
            outside,
            torch.full((), math.inf, dtype=delta.dtype, device=delta.device),
            torch.zeros((), dtype=delta.dtype, device=delta.device),
        )
    k2 = 2 * sharpness
    return (F.softplus(k2 * (delta - radius)) + F.softplus(-k2 * (delta + radius))).sum()


@dataclass(frozen=True)
class Box:
    """The (soft) box kernel of eq 5-8 with half-side `radius` R and `sharpness` k.

    k = inf (the paper's experiments): ΔW uniform in the hypercube |ΔW_i| <= R (on a lattice of 2^16 levels per
    coordinate, see `uniform_lattice_`), every point of weight one.
    Finite k: the paper leaves the draw open. pleat draws ΔW uniform in the wider cube of half-side
    R + ln(1e4)/(2k), which holds the kernel's tails, and weights each point by K = exp(-d_{R,k}(ΔW)) (eq 14, 19):
    an importance-sampling estimate of the integral against the soft box that tends to the hard box as k -> inf.
    """

    radius: float  # R: half-side of the hypercube, per weight
    sharpness: float = math.inf  # k: steepness of the walls; inf is the hard box

    def __post_init__(self):
        if not isinstance(self.radius, (int, float)) or not math.isfinite(self.radius) or self.radius < 0:
            raise ValueError(f"radius must be a finite number >= 0, got {self.radius!r}")
        if not isinstance(self.sharpness, (int, float)) or math.isnan(self.sharpness) or self.sharpness <= 0:
            raise ValueError(f"sharpness must be > 0 (math.inf for the hard box), got {self.sharpness!r}")

    @property
    def half_side(self) -> float:
        """Half-side of the cube the draws are uniform in."""
        return self.radius if self.flat else self.radius + SOFT_BOX_TAIL / self.sharpness

    @property
    def flat(self) -> bool:
        return math.isinf(self.sharpness)

    @property
    def variance(self) -> float:
        return self.half_side**2 / 3 * (1 - LATTICE_LEVELS**-2)

    def sample_(self, out: Tensor, generator: torch.Generator | None) -> Tensor:
        return uniform_lattice_(out, self.half_side, generator)

    def log_weight(self, delta: Tensor) -> Tensor:
        return -soft_box_distance(delta, self.radius, self.sharpness)


@dataclass(frozen=True)
class Gaussian:
    """The heat kernel of eq 1, exp(-(γ/2)‖ΔW‖²): ΔW ~ N(0, 1/γ) per coordinate, every point of weight one.

    With `kind="plea"` and `beta` this is the sampled local free entropy of Entropy-SGD (eq 1), restricted to the
    selected layers; over every layer it is the isotropic reference.
    """

    gamma: float  # γ: coupling strength; the draws have standard deviation 1/sqrt(γ) per weight

    def __post_init__(self):
        if not isinstance(self.gamma, (int, float)) or not math.isfinite(self.gamma) or self.gamma <= 0:
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma!r}")

    flat = True

    @property
    def variance(self) -> float:
        return 1.0 / self.gamma

    def sample_(self, out: Tensor, generator: torch.Generator | None) -> Tensor:
        return out.normal_(0.0, self.gamma**-0.5, generator=generator)

    def log_weight(self, delta: Tensor) -> Tensor:
        return torch.zeros((), dtype=delta.dtype, device=delta.device)


Kernel = Box | Gaussian
