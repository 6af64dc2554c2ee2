"""Which weights are smoothed: resolve a user's `layers=` into parameter names (the subset U of the paper)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

# Modules that count as "weight layers" for the paper's 1-based numbering (Linear and convolutions).
WEIGHT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)

LayerSpec = int | str | type | Callable[[str, nn.Module], bool]


@dataclass(frozen=True)
class Selected:
    """One smoothed parameter: `name` in `model.named_parameters()`, owned by module `module_name`.

    A weight shared between modules (tied) is one parameter: `name` is its first name in `named_parameters()`,
    `module_name` its owner there, and `aliases` its other names; it is perturbed identically at every use.
    """

    name: str
    module_name: str
    shape: tuple[int, ...]
    aliases: tuple[str, ...] = ()

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def unwrapped(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (whose parameter names carry a "module." prefix)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters live (the CPU for a module without any)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's Linear/Conv modules in registration order (the forward order of sequential models).

    Layer `i` of the paper is `weight_layers(model)[i - 1]`.
    """
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, WEIGHT_LAYER_TYPES) and getattr(m, "weight", None) is not None
    ]


def available(model: nn.Module) -> str:
    """A readable list of the selectable layers, for error messages."""
    rows = [
        f"  {i}: {name} ({type(m).__name__}, weight {tuple(m.get_parameter('weight').shape)})"
        for i, (name, m) in enumerate(weight_layers(model), start=1)
    ]
    return "available weight layers (index: name):\n" + ("\n".join(rows) or "  (none)")


NORM = "norm"  # the layer spec of every normalisation layer's affine parameters (weight and bias)


def is_norm(m: nn.Module) -> bool:
    """A normalisation layer (BatchNorm, LayerNorm, GroupNorm, RMSNorm, and the like of other libraries, such as
    T5LayerNorm or LlamaRMSNorm): its weight is a per-feature scale, not a weight layer's."""
    return "Norm" in type(m).__name__


def _owns_weight(m: nn.Module) -> bool:
    return isinstance(m.__dict__.get("_parameters", {}).get("weight"), nn.Parameter)


def _match(model: nn.Module, spec: LayerSpec) -> list[str]:
    """Module names selected by one entry of `layers=`."""
    layers = weight_layers(model)
    modules = dict(model.named_modules())
    if isinstance(spec, bool):
        raise TypeError(f"layers entry {spec!r} is a bool; give 1-based layer indices, names or patterns")
    if isinstance(spec, int):
        if not 1 <= spec <= len(layers):
            raise ValueError(f"layer index {spec} is out of range 1..{len(layers)}; {available(model)}")
        return [layers[spec - 1][0]]
    if spec == NORM and NORM not in modules:
        return [n for n, m in modules.items() if n and is_norm(m) and _owns_weight(m)]
    if isinstance(spec, str):
        if spec in modules:
            m = modules[spec]
            if _owns_weight(m):
                return [spec]
            inner = [n for n, _ in layers if n.startswith(spec + ".") or spec == ""]
            raise ValueError(
                f"layers entry {spec!r} names a container holding {len(inner)} weight layers, which is ambiguous; "
                f"name them, or use the pattern {spec + '.*'!r}; {available(model)}"
            )
        if spec.endswith(".weight") and spec[: -len(".weight")] in modules:
            return [spec[: -len(".weight")]]
        # a pattern selects weight layers, never normalisation layers: "layer4.*" on a ResNet means its
        # convolutions, not its BatchNorms
        matched = [n for n, m in modules.items() if n and fnmatch.fnmatchcase(n, spec) and _owns_weight(m)]
        hits = [n for n in matched if not is_norm(modules[n])]
        if matched and not hits:
            raise ValueError(
                f"layers entry {spec!r} matches only normalisation layers ({', '.join(matched[:4])}"
                f"{' ...' if len(matched) > 4 else ''}): patterns leave them out; name them one by one, or give "
                f"their type, to smooth them; {available(model)}"
            )
        return hits
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return [n for n, m in modules.items() if isinstance(m, spec) and _owns_weight(m)]
    if callable(spec):
        chosen: Callable[[str, nn.Module], bool] = spec  # type: ignore[assignment]  # a type is callable too
        return [n for n, m in modules.items() if _owns_weight(m) and chosen(n, m)]
    raise TypeError(
        f"layers entry {spec!r} of type {type(spec).__name__} is not understood; give a 1-based index, a module name, "
        "a glob pattern, a module type or a callable (name, module) -> bool"
    )


def select(
    model: nn.Module, layers: LayerSpec | Iterable[LayerSpec] | None, include_bias: bool = False
) -> list[Selected]:
    """Resolve `layers` to the parameters to smooth, in registration order.

    Args:
        model: the network.
        layers: one spec or a list of specs (1-based weight-layer index, module name, glob pattern over the names
            of modules with a weight, normalisation layers left out (`is_norm`: a pattern never picks a BatchNorm
            or LayerNorm), module type, or callable `(name, module) -> bool`); `"all"` or `None` selects every
            weight layer, Linear and convolutions (the isotropic case); `"norm"` selects the affine parameters of
            every normalisation layer, scale and shift (what SAM-ON perturbs; Müller et al. 2023).
        include_bias: also smooth the biases of the selected modules (the paper never does; `"norm"` always
            selects the normalisation layers' biases, which are half of their affine parameters).

    Returns:
        The selected parameters; raises `ValueError` listing the available layers when nothing matches.
    """
    affine: set[str] = set()  # modules selected by "norm": their biases too
    if layers is None or layers == "all":
        names = [n for n, _ in weight_layers(model)]
    else:
        specs = [layers] if isinstance(layers, (int, str, type)) or callable(layers) else list(layers)
        if not specs:
            raise ValueError(f"layers is empty: nothing would be smoothed; {available(model)}")
        names, affine = [], set()
        for spec in specs:
            hits = _match(model, spec)
            if not hits:
                raise ValueError(f"layers entry {spec!r} matches no layer with a weight; {available(model)}")
            names += [h for h in hits if h not in names]
            if spec == NORM and NORM not in dict(model.named_modules()):
                affine.update(hits)
    modules = dict(model.named_modules())
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    names_of: dict[int, list[str]] = {}  # every name of each parameter tensor, first one canonical
    for pname, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(pname)
    chosen, seen = [], set()
    for mname in sorted(names, key=order.__getitem__):
        m = modules[mname]
        for pname in ("weight", "bias") if include_bias or mname in affine else ("weight",):
            p = m._parameters.get(pname)
            if isinstance(p, nn.Parameter) and id(p) not in seen:
                seen.add(id(p))
                canonical, *aliases = names_of[id(p)]
                chosen.append(Selected(canonical, canonical.rpartition(".")[0], tuple(p.shape), tuple(aliases)))
    if not chosen:
        raise ValueError(f"{type(model).__name__} has no weight layer to smooth or probe; {available(model)}")
    return chosen


def describe(selected: list[Selected]) -> str:
    """A table of the smoothed parameters: name, shape, count."""
    width = max([len(s.name) for s in selected] + [9])
    lines = [f"{'parameter':<{width}}  {'shape':<18} {'count':>10}"]
    for s in selected:
        tied = f"  (tied: also {', '.join(s.aliases)})" if s.aliases else ""
        lines.append(f"{s.name:<{width}}  {str(s.shape):<18} {s.numel:>10,}{tied}")
    lines.append(f"{'total':<{width}}  {'':<18} {sum(s.numel for s in selected):>10,}")
    return "\n".join(lines)
