"""A profile of a model's minimum layer by layer, and where it suggests to smooth: the layer temperature and its
noise over a few batches, the flatness (loss rise against R), the Hutchinson trace and the radius `scope` picks.

What it suggests is a heuristic with its reasons printed beside it, not a result: the smoothing pays, if anywhere,
where the loss is flat per weight (a box of a given R costs the least loss there) and the training signal is weak
(the layer has settled). Test a suggestion with paired runs (`pleat reproduce`), as the sensitivity sweep does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pleat.core.select import LayerSpec, select
from pleat.probes.flatness import FlatnessProfile, flatness_profile, preserved
from pleat.probes.scoping import box_radius
from pleat.probes.temperature import LayerTemperature


@dataclass(frozen=True)
class LayerProfile:
    """One weight layer: its size, temperature (signal, noise across the batches), Hessian trace ± se, and the
    radius whose expected rise under the hard box is the profile's target (None where the trace is not > 0)."""

    name: str
    weights: int
    signal: float
    noise: float
    trace: float
    trace_se: float
    radius: float | None

    @property
    def trace_per_weight(self) -> float:
        return self.trace / self.weights


@dataclass(frozen=True)
class Profile:
    layers: list[LayerProfile]
    flatness: FlatnessProfile
    rise: float  # the target loss rise of `radius`

    def suggestions(self, pairs: int = 1) -> list[str]:
        """The most promising single layers and pairs to smooth, each with why."""
        usable = [layer for layer in self.layers if layer.radius is not None]
        if not usable:
            return ["no layer has a positive Hessian trace here: no box raises the loss to second order"]
        flat = sorted(usable, key=lambda layer: layer.trace_per_weight)
        cold = min(usable, key=lambda layer: layer.signal)
        lines = [
            f"single: {flat[0].name}: the flattest per weight (tr H / n = {flat[0].trace_per_weight:.3g}, "
            f"{_times(flat, 0)}), so a box of a given R costs the least loss there; R = {flat[0].radius:.3g} "
            f"gives a rise of {self.rise:g}",
            f"single: {cold.name}: the lowest temperature (signal {cold.signal:.3g}, noise {cold.noise:.3g}): its "
            "gradient has settled the most",
        ]
        for a, b in zip(flat[:pairs], flat[1 : pairs + 1]):
            lines.append(
                f"pair: {a.name} + {b.name}: the two flattest per weight; scoped radii {a.radius:.3g} and "
                f"{b.radius:.3g} smooth both to the same expected rise"
            )
        return lines

    def __str__(self) -> str:
        head = f"{'layer':<24} {'weights':>9} {'signal':>10} {'noise':>10} {'tr H':>11} {'± se':>9} {'tr H / n':>10}"
        rows = [head + f" {'R (rise ' + format(self.rise, 'g') + ')':>16}"]
        for layer in self.layers:
            radius = "-" if layer.radius is None else f"{layer.radius:.3g}"
            rows.append(
                f"{layer.name:<24} {layer.weights:>9} {layer.signal:>10.3g} {layer.noise:>10.3g} {layer.trace:>11.4g} "
                f"{layer.trace_se:>9.2g} {layer.trace_per_weight:>10.3g} {radius:>16}"
            )
        return "\n".join([*rows, "", str(self.flatness), "", "suggested:", *("  " + s for s in self.suggestions())])


def _times(ranked: list[LayerProfile], k: int) -> str:
    if len(ranked) < 2:
        return "the only layer"
    return f"{ranked[1].trace_per_weight / ranked[k].trace_per_weight:.3g}x flatter than {ranked[1].name}"


def profile(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: Iterable[tuple],
    layers: LayerSpec | list | None = None,
    *,
    radii: Iterable[float] = (1e-3, 1e-2, 1e-1),
    rise: float = 0.005,
    samples: int = 8,
    probes: int = 8,
    generator: torch.Generator | None = None,
) -> Profile:
    """Profile `model` at its current weights on `data` ((inputs, targets) pairs; 2 or more for a noise).

    layers: the weight layers to profile, as `layers=` (default every weight layer); each is probed alone.
    The weights, the running statistics and the train/eval mode are left as they were; the temperature reads the
    training-mode gradients of each batch whatever the model's mode (the gradients already in `.grad` are
    restored), the flatness and the traces are taken in eval mode.
    """
    batches = list(data)
    if not batches:
        raise ValueError("data holds nothing: give a list of (inputs, targets) pairs")
    selected = select(model, layers)
    probe = LayerTemperature(model, [s.module_name for s in selected])
    saved = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    try:
        with preserved(model, training=True):  # the temperature is a training-mode reading
            for inputs, targets in batches:
                model.zero_grad(set_to_none=True)
                loss_fn(model(inputs), targets).backward()
                probe.step()
        temperature = probe.epoch()
    finally:
        for n, p in model.named_parameters():
            p.grad = saved[n]
    flatness = flatness_profile(
        model,
        loss_fn,
        batches,
        subsets=[[s.module_name] for s in selected],
        radii=radii,
        samples=samples,
        probes=probes,
        generator=generator,
    )
    rows = []
    for s in selected:
        trace, se = flatness.trace[s.module_name]
        signal, noise = temperature[s.module_name]
        radius = box_radius(trace, rise) if trace > 0 else None
        rows.append(LayerProfile(s.module_name, s.numel, signal, noise, trace, se, radius))
    return Profile(rows, flatness, rise)
