"""Radii scoped by curvature (the paper's footnote 5): per layer, the box whose expected loss rise is a target.

Under the hard box of half-side R on layer l, E[L(W + ΔW)] - L(W) ≈ tr(H_ll) R²/6 to second order (the draws
have variance R²/3 per weight, and the first-order term vanishes on average). `scope` estimates tr(H_ll) with
Hutchinson's estimator (`pleat.hutchinson_traces`) and solves for R_l, so that every layer is smoothed to the
same rise: isotropy in the loss, not in the weights. The result is a radius mapping for `PartialLocalEntropy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from pleat.core.select import LayerSpec
from pleat.probes.flatness import hutchinson_traces


def scope(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: tuple | Iterable[tuple],
    layers: LayerSpec | list | None,
    *,
    rise: float,
    probes: int = 16,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """{layer name: R_l} with tr(H_ll) R_l² / 6 = `rise`, the traces measured on `data` ((inputs, targets) or an
    iterable of such batches) at the model's current weights with `probes` Rademacher probes per batch.

    Raises ValueError for a layer whose estimated trace is not positive: a box there does not raise the loss to
    second order, and no radius meets the target.
    """
    if not (isinstance(rise, (int, float)) and math.isfinite(rise) and rise > 0):
        raise ValueError(f"rise must be a finite number > 0 (a loss increase, e.g. 0.01), got {rise!r}")
    radii = {}
    for name, (trace, se) in hutchinson_traces(model, loss_fn, data, layers, probes, generator).items():
        if not trace > 0:
            raise ValueError(
                f"scope: layer {name} has a Hessian trace of {trace:.3g} ± {se:.2g} at these weights: a box there "
                "does not raise the loss to second order; scope at other weights or leave the layer out"
            )
        radii[name] = box_radius(trace, rise)
    return radii


def box_radius(trace: float, rise: float) -> float:
    """The half-side R of the hard box on a layer of Hessian trace `trace` (> 0) whose expected rise is `rise`."""
    return math.sqrt(6 * rise / trace)
