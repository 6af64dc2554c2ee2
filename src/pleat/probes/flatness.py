"""The shape of a minimum along each layer: loss rise under partial perturbations, and per-layer Hessian traces."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pleat.core.objective import PartialLocalEntropy
from pleat.core.select import LayerSpec, device_of, select


@dataclass(frozen=True)
class FlatnessRow:
    """Mean rise E[L(W + ΔW) - L(W)] for ΔW uniform in the cube of half-side `radius` along `subset`.

    `predicted` is the second-order prediction (R²/6) Σ_{I∈U} tr(H_II) from the Hutchinson traces.
    """

    subset: str
    radius: float
    rise: float
    rise_se: float
    predicted: float | None


@dataclass(frozen=True)
class FlatnessProfile:
    """The anisotropy profile of a minimum; `str()` prints it as a table."""

    rows: list[FlatnessRow]
    trace: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> (tr H_II, standard error)

    def __str__(self) -> str:
        lines = [f"{'subset':<20} {'radius':>9} {'rise':>12} {'± se':>10} {'(R²/6)trH':>11}"]
        for r in self.rows:
            pred = "-" if r.predicted is None else f"{r.predicted:.4g}"
            lines.append(f"{r.subset:<20} {r.radius:>9.3g} {r.rise:>12.4g} {r.rise_se:>10.2g} {pred:>11}")
        if self.trace:
            lines.append(
                "Hutchinson per-layer Hessian trace: "
                + ", ".join(f"{n} {m:.4g} ± {s:.2g}" for n, (m, s) in self.trace.items())
            )
        return "\n".join(lines)


def _batches(data) -> list[tuple]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        return [data]
    out = list(data)
    if not out:
        raise ValueError("data holds no batch: give (inputs, targets) or an iterable of such pairs")
    return out


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return mean, math.sqrt(var / n)


@contextlib.contextmanager
def preserved(model: nn.Module, training: bool | None = None) -> Iterator[None]:
    """On exit the model's buffers (BatchNorm's running statistics and counters) and every module's train/eval flag
    are what they were on entry, whatever ran inside, an exception included; with `training`, the model is in that
    mode meanwhile. A probe must not move the statistics of the model it measures."""
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    modes = {m: m.training for m in model.modules()}
    if training is not None:
        model.train(training)
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        for m, mode in modes.items():
            m.training = mode


def hutchinson_traces(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: tuple | Iterable[tuple],
    layers: LayerSpec | list | None = None,
    probes: int = 8,
    generator: torch.Generator | None = None,
) -> dict[str, tuple[float, float]]:
    """Per-layer Hessian traces tr(H_II) ≈ E[v_Iᵀ (H v)_I], v Rademacher over all the layers' weights (Hutchinson).

    One Hessian-vector product per probe and batch gives every layer's estimate (cross terms vanish in
    expectation). The probes are drawn from `generator` (on any device; None: a generator seeded from torch's global
    RNG) and the estimates stay on the model's device until the end: one host sync in all.
    Returns {layer name: (mean, standard error)}. The model's running statistics are left as they were.
    """
    with preserved(model):
        return _hutchinson_traces(model, loss_fn, data, layers, probes, generator)


def _hutchinson_traces(model, loss_fn, data, layers, probes, generator) -> dict[str, tuple[float, float]]:
    selected = select(model, layers)
    params = dict(model.named_parameters())
    weights = [params[s.name] for s in selected]
    device = weights[0].device
    if generator is None:
        generator = torch.Generator(device).manual_seed(int(torch.randint(0, 2**62, (), dtype=torch.int64)))
    estimates = []  # [probes x batches] rows of [layers], on the device
    for inputs, targets in _batches(data):
        loss = loss_fn(model(inputs), targets)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        for _ in range(probes):
            vs = [
                torch.randint(0, 2, w.shape, generator=generator, device=generator.device).to(device, w.dtype) * 2 - 1
                for w in weights
            ]
            hvs = torch.autograd.grad(grads, weights, grad_outputs=vs, retain_graph=True)
            estimates.append(torch.stack([(v * hv).sum() for v, hv in zip(vs, hvs, strict=True)]))
    table = torch.stack(estimates).double().cpu()  # the one host sync
    return {s.module_name: _mean_se(table[:, k].tolist()) for k, s in enumerate(selected)}


def flatness_profile(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: tuple | Iterable[tuple],
    *,
    subsets: Iterable[LayerSpec | list | None] | None = None,
    radii: Iterable[float],
    samples: int = 8,
    repeats: int = 1,
    probes: int = 8,
    generator: torch.Generator | None = None,
    engine: str = "auto",
    antithetic: bool = True,
    **renamed,
) -> FlatnessProfile:
    """Loss rise versus radius for each layer subset, with standard errors, and per-layer Hessian traces.

    The model is evaluated in eval mode (no dropout, BatchNorm running statistics) and put back as it was; the
    points of each subset are drawn and evaluated with the vectorised machinery of `PartialLocalEntropy`.

    Args:
        data: one (inputs, targets) pair or an iterable of them.
        subsets: the subsets U to probe, each anything `layers=` accepts; default: every weight layer alone
            ([1], [2], ...), then all of them together. (Called `layers` before 0.3.)
        radii: the half-sides R to probe, each > 0.
        samples: perturbed points per batch and repeat (even with `antithetic`).
        repeats: draws per batch.
        probes: Rademacher probes per batch for the traces (0: skip them). (Called `hutchinson` before 0.3.)
        generator: draws the points and the probes (on any device); None: seeded from torch's global generator,
            as everywhere in pleat.
        antithetic: draw pairs (ΔW, -ΔW) and take each pair's mean rise (L(W+ΔW) + L(W-ΔW))/2 - L(W): the odd
            orders cancel, among them the first-order term g·ΔW, which has mean zero but dominates the variance at
            small R. The standard error is then over the pairs.
    """
    radii = [float(r) for r in radii]
    if not radii or any(not math.isfinite(r) or r <= 0 for r in radii):
        raise ValueError(f"radii must be finite numbers > 0, got {radii}")
    if samples < 2 or (antithetic and samples % 2):
        raise ValueError(f"samples must be >= 2 to give a standard error (even with antithetic pairs), got {samples}")
    subsets, probes = _renamed(renamed, subsets, probes)
    batches = _batches(data)
    if subsets is None:
        subsets = [*([i] for i in range(1, len(select(model, None)) + 1)), None]
    chosen_subsets = [(select(model, spec), spec) for spec in subsets]
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), dtype=torch.int64)))
    with preserved(model, training=False):
        device_generator = _on_device(generator, model)
        trace = hutchinson_traces(model, loss_fn, batches, None, probes, device_generator) if probes else {}
        rows = []
        with torch.no_grad():
            for chosen, spec in chosen_subsets:
                name = subset_label(model, spec, chosen)
                for radius in radii:
                    obj = PartialLocalEntropy(
                        model,
                        loss_fn,
                        layers=spec,
                        radius=radius,
                        samples=samples,
                        generator=device_generator,
                        engine=engine,
                        antithetic=antithetic,
                    )
                    rises = []
                    for inputs, targets in batches:
                        for _ in range(repeats):
                            obj(inputs, targets)
                            last = obj.last
                            points = last.losses[1:] - last.losses[0]
                            rises.append(points.view(-1, 2).mean(1) if antithetic else points)
                    rise, se = _mean_se(torch.cat(rises).tolist())
                    predicted = None
                    if trace:
                        predicted = (
                            obj.variance() / 2 * sum(trace[s.module_name][0] for s in chosen if s.module_name in trace)
                        )
                    rows.append(FlatnessRow(name, radius, rise, se, predicted))
    return FlatnessProfile(rows, trace)


def subset_label(model: nn.Module, spec, chosen) -> str:
    """How a subset reads in tables and plots: what the user passed ({1,2} for 1-based indices), with the module
    names beside it where they differ ({1,3} (0+5) on an nn.Sequential)."""
    names = "+".join(s.module_name for s in chosen)
    entries = spec if isinstance(spec, (list, tuple)) else [spec]
    if spec is None or spec == "all":
        return f"all ({names})"
    if all(isinstance(e, int) and not isinstance(e, bool) for e in entries):
        indices = "{" + ",".join(str(e) for e in entries) + "}"
        return indices if names == "+".join(str(e) for e in entries) else f"{indices} ({names})"
    return names


def _renamed(renamed: dict, subsets, probes):
    """The keywords of flatness_profile before 0.3 (`layers`, `hutchinson`), still taken, with a warning."""
    import warnings

    unknown = set(renamed) - {"layers", "hutchinson"}
    if unknown:
        raise TypeError(f"flatness_profile() got unexpected keyword arguments {sorted(unknown)}")
    for old, new in (("layers", "subsets"), ("hutchinson", "probes")):
        if old in renamed:
            warnings.warn(f"flatness_profile({old}=...) is now {new}=", DeprecationWarning, stacklevel=3)
    return renamed.get("layers", subsets), renamed.get("hutchinson", probes)


def _on_device(generator: torch.Generator, model: nn.Module) -> torch.Generator:
    device = device_of(model)
    if generator.device.type == device.type:
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
