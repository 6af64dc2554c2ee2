"""Smoothing kernels: how the perturbations ΔW are drawn and how each point is weighted.

A kernel is a small frozen dataclass with
- `sample_(out, generator)`: fill `out` with one perturbation of a parameter, in place;
- `log_weight(deltas)`: the log-kernel `-d(ΔW)` of one point (a 0-d tensor), summed over its coordinates;
- `variance`: the per-coordinate variance of the draws, so that a mean loss rise estimates a Hessian trace;
- `flat`: `True` when every point has weight one (no `log_weight` to compute).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


SAMPLINGS = ("kernel", "uniform")


@dataclass(frozen=True)
class Box:
    """The (soft) box kernel of eq 5-8 with half-side `radius` R and `sharpness` k.

    k = inf (the paper's experiments): ΔW uniform in the hypercube |ΔW_i| <= R (on a lattice of 2^16 levels per
    coordinate, see `uniform_lattice_`), every point of weight one.

    Finite k, where the paper leaves the draw open, two modes:
    - `sampling="kernel"` (default): each coordinate is drawn from the normalised kernel K/Z, the 1-D density
      ∝ σ(2k(x+R)) σ(-2k(x-R)), exactly, and every point has weight one. The product is the difference
      [σ(2k(x+R)) - σ(2k(x-R))] / (1 - e^{-4kR}), which is the density of U + L with U uniform on [-R, R] and L
      logistic of scale 1/(2k): the draws are the hard box's plus a logistic, no table, no approximation. This
      is eq 14 and 19 with the kernel normalised, d -> d + ln Z (Z = ∫K, a constant that does not depend on W):
      the sampled loss estimates -ln ∫ e^{-L(W+ΔW)} K(ΔW)/Z dΔW and ∫ L(W+ΔW) K(ΔW)/Z dΔW, with a variance that
      stays bounded in any dimension.
    - `sampling="uniform"`: ΔW uniform in the wider cube of half-side R + ln(1e4)/(2k), each point weighted by
      K = exp(-d_{R,k}(ΔW)) (eq 14, 19 literally): importance sampling. It is consistent, but in high dimension
      every perturbed point's weight underflows unless k·R is huge (one 784x784 layer at R = 0.01: ln K ≈ -1.3e5
      at kR = 100), and the loss silently becomes the unsmoothed one. Kept for comparison and small problems.
    Both tend to the hard box as k -> inf.
    """

    radius: float  # R: half-side of the hypercube, per weight
    sharpness: float = math.inf  # k: steepness of the walls; inf is the hard box
    sampling: str = "kernel"  # finite k: "kernel" (draws from K/Z, weight one) | "uniform" (importance weights)

    def __post_init__(self):
        if not isinstance(self.radius, (int, float)) or not math.isfinite(self.radius) or self.radius < 0:
            raise ValueError(f"radius must be a finite number >= 0, got {self.radius!r}")
        if not isinstance(self.sharpness, (int, float)) or math.isnan(self.sharpness) or self.sharpness <= 0:
            raise ValueError(f"sharpness must be > 0 (math.inf for the hard box), got {self.sharpness!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")

    @property
    def hard(self) -> bool:
        return math.isinf(self.sharpness)

    @property
    def half_side(self) -> float:
        """Half-side of the cube that uniform draws cover (the hard box, or the soft box's uniform mode)."""
        return self.radius if self.hard else self.radius + SOFT_BOX_TAIL / self.sharpness

    @property
    def flat(self) -> bool:
        return self.hard or self.sampling == "kernel"

    @property
    def variance(self) -> float:
        if not self.hard and self.sampling == "kernel":  # the box's plus the logistic's (π/(2k))²/3
            return self.radius**2 / 3 * (1 - LATTICE_LEVELS**-2) + math.pi**2 / (12 * self.sharpness**2)
        return self.half_side**2 / 3 * (1 - LATTICE_LEVELS**-2)

    def sample_(self, out: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.hard or self.sampling == "uniform":
            return uniform_lattice_(out, self.half_side, generator)
        uniform_lattice_(out, self.radius, generator)
        # the logistic in float64, where u = 0 has probability 2^-53 (clamped: a tail cut at 2^-54 changes nothing)
        u = torch.rand(out.shape, dtype=torch.float64, device=out.device, generator=generator).clamp_min_(2**-54)
        return out.add_(torch.logit(u).mul_(0.5 / self.sharpness))

    def log_weight(self, delta: Tensor) -> Tensor:
        if self.flat:
            return delta.new_zeros(())
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


@dataclass(frozen=True, eq=False)
class Scaled:
    """A flat kernel whose draws are multiplied, coordinate by coordinate, by `scale` (a tensor of the parameter's
    shape): `Scaled(Box(rho), |W|)` is a box of half-side rho |w_i| per weight, the per-weight relative radius
    (`pleat.relative(rho, per="weight")`). The soft box scales whole: its sharpness becomes k / |w_i| too, so the
    kernel is the same in units of the weight. A weight at zero is not perturbed. Every point has weight one.
    """

    base: Kernel  # a flat kernel (a hard box, a soft box drawn from its kernel, a Gaussian) in units of `scale`
    scale: Tensor  # per coordinate; a snapshot (the caller detaches and copies it)

    def __post_init__(self):
        if not self.base.flat:
            raise ValueError(
                "a per-weight radius needs a flat kernel: the hard box, or the soft box with sampling='kernel'"
            )

    flat = True

    @functools.cached_property
    def variance(self) -> float:
        """E[(s_i x)²] averaged over the coordinates: one host read, on first use (the trainer never asks)."""
        return self.base.variance * float(self.scale.double().square().mean())

    def sample_(self, out: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.base.sample_(out, generator).mul_(self.scale)

    def log_weight(self, delta: Tensor) -> Tensor:
        return delta.new_zeros(())


@runtime_checkable
class Kernel(Protocol):
    """What a kernel gives the objective; `Box` and `Gaussian` are two, and a user's own class works alike.

    - `sample_(out, generator)`: fill `out` with one perturbation of a parameter, in place, drawing only from
      `generator` (the same state must give the same draw: the sequential engine redraws points in backward);
    - `log_weight(delta)`: the log-kernel -d(ΔW) of one parameter's perturbation, a 0-d tensor (not called when
      `flat`);
    - `variance`: the per-coordinate variance of the draws (the curvature estimate divides by it; 0: no smoothing);
    - `flat`: True when every point has weight one.
    """

    @property
    def variance(self) -> float: ...

    @property
    def flat(self) -> bool: ...

    def sample_(self, out: Tensor, generator: torch.Generator | None) -> Tensor: ...

    def log_weight(self, delta: Tensor) -> Tensor: ...
