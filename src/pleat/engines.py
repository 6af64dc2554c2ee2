"""Engines: evaluate the loss at the y+1 points W + ΔW^a (the centre first, ΔW^0 = 0).

Both engines return the per-point losses `[y+1]` and the centre's output, for perturbations drawn in the same order
from the same generator. Neither ever writes to a parameter: perturbed weights are passed functionally.

- `vectorised`: one `torch.func.vmap` over the points. Whatever lies upstream of the first smoothed layer sees no
  batched tensor and is computed once. A smoothed Linear/Conv fed by such an unbatched input x runs as
  W x + ΔW^a x: the main product and its weight gradient are computed once, and the y products ΔW^a x are a single
  matrix product against the stacked perturbations.
- `sequential`: one point at a time under activation checkpointing (the centre included), each perturbation redrawn
  from its generator state in the backward pass, so that memory stays at one point's activations plus one
  perturbation of the smoothed layers, whatever y.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_map
from torch.utils.checkpoint import checkpoint

from pleat.select import Selected

_functorch = getattr(torch._C, "_functorch", None)
_is_batched = getattr(_functorch, "is_batchedtensor", lambda t: True)


def _row(stacked: Tensor, i: Tensor) -> Tensor:
    """Inside vmap over `i = arange(P)`: the batched view whose point i is `stacked[i]`.

    Zero-copy through functorch's `_add_batch_dim` (private, hence the indexing fallback, which copies).
    """
    if hasattr(_functorch, "_add_batch_dim") and hasattr(_functorch, "maybe_get_level"):
        return _functorch._add_batch_dim(stacked, 0, _functorch.maybe_get_level(i))
    return stacked[i]


_BRANCH_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Target:
    """What the engines evaluate: `model` is called (it may be a DDP wrapper), `module` owns the names."""

    model: nn.Module
    module: nn.Module
    prefix: str  # name of `module` inside `model`, with a trailing dot ("module." under DDP), or ""
    loss_fn: Callable[..., Tensor]
    selected: list[Selected]
    # smoothed modules whose weight is read outside their own forward (found at run time): no additive branch
    no_branch: set[str] = field(default_factory=set)


def _check_scalar(loss: Tensor) -> Tensor:
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}; use a reduction such as reduction='mean'")
    return loss


def _tracking_batchnorms(module: nn.Module) -> list[_BatchNorm]:
    return [
        m
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats and m.running_mean is not None
    ]


@contextmanager
def _frozen_batchnorm(bns: list[_BatchNorm], stats: list[tuple[Tensor, Tensor]]):
    """Stop the BatchNorms from updating their running statistics, and record each one's batch mean and variance."""

    def record(m, args):
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        stats.append((x.detach().mean(dims), x.detach().var(dims, unbiased=True)))

    handles = [m.register_forward_pre_hook(record) for m in bns]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True
        for h in handles:
            h.remove()


@torch.no_grad()
def update_running_stats(bn: _BatchNorm, mean: Tensor, var: Tensor) -> None:
    """Apply one training step's update of `bn`'s running statistics, as `torch.nn.functional.batch_norm` does."""
    bn.num_batches_tracked.add_(1)
    f = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - f).add_(mean.to(bn.running_mean.dtype), alpha=f)
    bn.running_var.mul_(1 - f).add_(var.to(bn.running_var.dtype), alpha=f)


def _branchable(m: nn.Module, s: Selected) -> bool:
    return type(m) in _BRANCH_TYPES and s.name.endswith("weight") and getattr(m, "groups", 1) == 1


def _apply(m: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return F.linear(x, weight, bias) if isinstance(m, nn.Linear) else m._conv_forward(x, weight, bias)


def vectorised(target: Target, deltas: dict[str, Tensor], args: tuple, targets) -> tuple[Tensor, object]:
    """Per-point losses `[P]` and the centre's output, with all P points in one vmap.

    Args:
        deltas: parameter name -> perturbations `[P, *shape]`, row 0 all zeros (the centre).
    """
    module = target.module
    params = dict(module.named_parameters())
    modules = dict(module.named_modules())
    points = next(iter(deltas.values())).shape[0]
    state: dict = {}
    overrides, substituted = {}, []
    for s in target.selected:
        m = modules[s.module_name]
        if _branchable(m, s) and s.module_name not in target.no_branch:
            overrides[s.module_name] = (m, params[s.name], deltas[s.name])
        else:
            substituted.append(s.name)

    def make_forward(name, m, weight, delta):
        def forward(x):
            i = state["i"]
            state["ran"].add(name)
            bias = m.bias  # the bias functional_call installed: perturbed when include_bias
            if _is_batched(x):  # downstream of another perturbation: nothing to share
                return _apply(m, x, weight + _row(delta, i), bias)
            main = _apply(m, x, weight, bias)
            # Linear: features last; Conv: channels at axis 1 (axis 0 for an input without a batch axis).
            axis = -1 if isinstance(m, nn.Linear) else int(x.dim() == weight.dim())
            branch = _apply(m, x, delta[1:].flatten(0, 1), None)  # one product for the y points: [.., y*out, ..]
            branch = branch.unflatten(axis, (points - 1, weight.shape[0])).movedim(axis - 1 if axis < 0 else axis, 0)
            branch = torch.cat([torch.zeros_like(branch[:1]), branch])
            return main + _row(branch, i)

        return forward

    bns = _tracking_batchnorms(module)
    stats: list = []

    def point(i):
        state["i"], state["ran"] = i, set()
        stats.clear()
        swapped = {target.prefix + n: params[n] + _row(deltas[n], i) for n in substituted}
        out = functional_call(target.model, swapped, args, strict=False)
        loss = _check_scalar(target.loss_fn(out, targets))
        return loss, out, tuple(stats)

    for name, (m, weight, delta) in overrides.items():
        m.forward = make_forward(name, m, weight, delta)
    try:
        with _frozen_batchnorm(bns, stats):
            losses, outs, recorded = vmap(point, randomness="different")(torch.arange(points, device=_device(module)))
    finally:
        for m, _, _ in overrides.values():
            del m.forward
    if set(overrides) - state["ran"]:
        # a smoothed weight was used without calling its module (a custom forward reads `.weight`):
        # perturb it by substitution instead, and evaluate again
        target.no_branch |= set(overrides) - state["ran"]
        return vectorised(target, deltas, args, targets)
    for bn, (mean, var) in zip(bns, recorded):
        update_running_stats(bn, mean[0], var[0])
    return losses, tree_map(lambda t: t[0], outs)


def sequential(
    target: Target,
    draw: Callable[[torch.Generator], dict[str, Tensor]],
    generator: torch.Generator,
    samples: int,
    args: tuple,
    targets,
    weigh: Callable[[dict[str, Tensor]], Tensor] | None,
    antithetic: bool = False,
) -> tuple[Tensor, object, Tensor | None]:
    """Per-point losses `[P]` and the centre's output, one point at a time.

    Args:
        draw: draws one point's perturbations (parameter name -> tensor) from a generator, advancing it.
        generator: the generator the points are drawn from; left as if every point had been drawn from it.
        weigh: the log-kernel of one point's perturbations; None for a flat kernel.
        antithetic: points come in pairs (ΔW, -ΔW), one draw per pair.

    Returns:
        losses `[P]`, the centre's output, log-weights `[P - 1]` of the perturbed points (None without `weigh`).
    """
    module = target.module
    params = dict(module.named_parameters())
    bn_buffers = [n for n, _ in module.named_buffers() if _in_batchnorm(module, n)]
    if target.prefix:  # DDP: the centre runs through the wrapper, which prepares the gradient all-reduce
        centre_out = target.model(*args)
        losses = [_check_scalar(target.loss_fn(centre_out, targets))]
    else:  # checkpointed too, so that no point's activations outlive its own backward
        passes = []

        def centre():
            # the forward pass updates BatchNorm statistics; its recomputation in backward must not
            state = {n: module.get_buffer(n).clone() for n in bn_buffers} if passes else {}
            passes.append(True)
            out = functional_call(module, state, args, strict=False)
            return _check_scalar(target.loss_fn(out, targets)), out

        centre_loss, centre_out = checkpoint(centre, use_reentrant=False)
        losses = [centre_loss]
    log_weights = []
    signs = (1.0, -1.0) if antithetic else (1.0,)
    for _ in range(samples // len(signs)):
        start = generator.get_state()
        end = []
        for sign in signs:

            def point(start=start, end=end, sign=sign):
                g = torch.Generator(generator.device)
                g.set_state(start)  # the backward pass redraws this point instead of storing it
                delta = draw(g)
                if sign < 0:
                    delta = {n: d.neg_() for n, d in delta.items()}
                if len(end) < len(signs):  # the forward pass, not the recomputation in backward
                    if weigh is not None:
                        log_weights.append(weigh(delta))
                    end.append(g.get_state())
                state = {n: d.add_(params[n]) for n, d in delta.items()}  # W + ΔW in the noise's own memory
                state.update({n: module.get_buffer(n).clone() for n in bn_buffers})  # only the centre updates stats
                out = functional_call(module, state, args, strict=False)
                return _check_scalar(target.loss_fn(out, targets))

            losses.append(checkpoint(point, use_reentrant=False))
        generator.set_state(end[0])
    return torch.stack(losses), centre_out, torch.stack(log_weights) if log_weights else None


def _in_batchnorm(module: nn.Module, buffer_name: str) -> bool:
    owner = module.get_submodule(buffer_name.rpartition(".")[0]) if "." in buffer_name else module
    return isinstance(owner, _BatchNorm)


def _device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
