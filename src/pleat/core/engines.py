"""Engines: evaluate the loss at the y+1 points W + ΔW^a, the centre (ΔW^0 = 0) first.

Both engines have one signature, `engine(target, draws, args, kwargs, targets) -> (losses [y+1], centre output)`:
- `target` says what is evaluated (the model, the loss, the smoothed parameters);
- `draws` (a `Draws`) gives each point's perturbations: drawn once, in order, from the objective's generator, and
  redrawn on demand from the generator state recorded before the point;
- BatchNorm is handled in one place (`BatchNormCentre`): every point normalises with its own batch statistics and
  leaves the running statistics alone; the centre's batch mean and variance are recorded and applied once, after
  the call, exactly as `F.batch_norm` would have applied them.
Neither engine ever writes to a parameter or to a module's attributes beyond hooks removed before it returns.

- `vectorised`: one `torch.func.vmap` over the points. Whatever lies upstream of the first smoothed layer sees no
  batched tensor and is computed once. A smoothed Linear/Conv keeps its own forward (whatever a library made of
  it) and a forward hook adds ΔW^a x to its output; fed by an unbatched x, the y products ΔW^a x are one matrix
  product against the stacked perturbations, and W x with its weight gradient is computed once.
- `sequential`: one point at a time under activation checkpointing, each perturbation redrawn in the backward
  pass, so that memory stays at one point's activations plus one perturbation, whatever y.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from pleat.core._compat import apply_weight, is_batched, row, tree_map
from pleat.core.select import Selected, device_of

_BRANCH_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Target:
    """What the engines evaluate: `model` is called (it may be a DDP wrapper), `module` owns the names."""

    model: nn.Module
    module: nn.Module
    prefix: str  # name of `module` inside `model`, with a trailing dot ("module." under DDP), or ""
    loss_fn: Callable[..., Tensor] | None
    selected: list[Selected]
    # smoothed modules whose forward was not called although their weight was used (found at run time): their
    # weight is substituted instead of added as a branch
    no_branch: set[str] = field(default_factory=set)


def _upcast_under_autocast(out):
    """Under float16/bfloat16 autocast, reduced-precision outputs in float32 before the loss: plain autocast code
    gets its losses (cross-entropy, MSE, ...) in float32 that way, while inside vmap the same call could stay in
    bfloat16 (the vectorised engine returned a bfloat16 loss when only the head was smoothed)."""
    if not (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
        return out  # the usual case: no walk over the output at all
    reduced = (torch.float16, torch.bfloat16)

    def up(t):
        if isinstance(t, Tensor) and t.dtype in reduced and torch.is_autocast_enabled(t.device.type):
            return t.float()
        return t

    return tree_map(up, out)


def scalar_loss(loss_fn: Callable[..., Tensor] | None, out, targets) -> Tensor:
    """`loss_fn(out, targets)`, checked to be a scalar tensor; with no loss_fn, the loss the model computed itself
    (`out.loss` or `out["loss"]`, as Hugging Face models return it given labels, or `out` when it is a scalar)."""
    if loss_fn is not None:
        loss = loss_fn(_upcast_under_autocast(out), targets)
    elif isinstance(out, Tensor):
        loss = out
    elif isinstance(out, dict) and "loss" in out:
        loss = out["loss"]
    else:
        loss = getattr(out, "loss", None)  # type: ignore[assignment]
        if loss is None:
            raise ValueError(
                f"loss_fn is None but the model returned {type(out).__name__} without a loss: pass the labels to "
                "the model (labels=...) so that it computes one, or give a loss_fn"
            )
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}; use a reduction such as reduction='mean'")
    return loss


class Draws:
    """The y perturbed points of one call.

    Point a (1..y) is drawn, parameter by parameter in `selected` order, from the generator state recorded just
    before it; with antithetic pairs, point 2j is the negation of point 2j-1 (one draw per pair). The first draw of
    each point must come in order (it advances the objective's generator); any point can then be drawn again.
    """

    def __init__(
        self,
        fill: Callable[[Tensor, torch.Generator], Tensor] | dict[str, Callable[[Tensor, torch.Generator], Tensor]],
        params: dict[str, Tensor],
        names: list[str],
        samples: int,
        generator: torch.Generator,
        antithetic: bool = False,
    ):
        # one fill for every parameter, or a fill per name (a kernel per layer)
        self.fills = dict(fill) if isinstance(fill, dict) else dict.fromkeys(names, fill)
        self.params, self.names = params, names
        self.samples, self.generator, self.antithetic = samples, generator, antithetic
        self.first_state = generator.get_state()
        self.starts: list[Tensor] = []  # the generator state before each draw

    def restart(self) -> None:
        """Forget every draw and put the generator back where it was: the same points will be drawn again."""
        self.starts.clear()
        self.generator.set_state(self.first_state)

    def draw_into(self, a: int, out: dict[str, Tensor], previous: dict[str, Tensor] | None = None) -> None:
        """Fill `out` (a tensor per name, shaped like its parameter) with point a's perturbations; `previous`, with
        antithetic pairs, holds point a-1's."""
        if self.antithetic and a % 2 == 0:
            if previous is None:  # redraw the pair's first point, then negate it
                self.draw_into(a - 1, out)
                for d in out.values():
                    d.neg_()
            else:
                for n in self.names:
                    torch.neg(previous[n], out=out[n])
            return
        k = (a - 1) // (2 if self.antithetic else 1)
        if k == len(self.starts):  # first time: draw from the objective's generator, advancing it
            self.starts.append(self.generator.get_state())
            g = self.generator
        else:  # again (the sequential engine's backward pass): from the recorded state
            g = torch.Generator(self.generator.device)
            g.set_state(self.starts[k])
        for n in self.names:
            self.fills[n](out[n], g)

    def point(self, a: int) -> dict[str, Tensor]:
        """Point a's perturbations, in fresh tensors."""
        out = {n: torch.empty_like(self.params[n]) for n in self.names}
        self.draw_into(a, out)
        return out

    def stacked(self) -> dict[str, Tensor]:
        """Every point's perturbations `[y+1, *shape]` per parameter, row 0 (the centre) zero."""
        out = {n: self.params[n].new_empty((self.samples + 1, *self.params[n].shape)) for n in self.names}
        for d in out.values():
            d[0].zero_()
        for a in range(1, self.samples + 1):
            self.draw_into(a, {n: d[a] for n, d in out.items()}, {n: d[a - 1] for n, d in out.items()})
        return out


class BatchNormCentre:
    """BatchNorm for every engine: points never update running statistics; the centre's batch statistics do, once."""

    def __init__(self, module: nn.Module):
        self.bns = [
            m
            for m in module.modules()
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats and m.running_mean is not None
        ]
        self.seen: list[tuple[Tensor, Tensor]] = []
        self.calls: list[int] = []  # the BatchNorm behind each entry of `seen` (call order, not registration order)

    @contextmanager
    def frozen(self):
        """Normalise with the batch's own statistics and leave the running ones alone (restored on exit)."""
        for m in self.bns:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m in self.bns:
                m.track_running_stats = True

    @contextmanager
    def recording(self):
        """Record each BatchNorm's batch mean and (unbiased) variance into `seen`, and its index into `calls`, in
        call order (a BatchNorm called twice appears twice, as it updates twice in plain training)."""

        def recorder(k: int):
            def record(m, args):
                x = args[0]
                dims = [d for d in range(x.dim()) if d != 1]
                self.calls.append(k)
                self.seen.append((x.detach().mean(dims), x.detach().var(dims, unbiased=True)))

            return record

        handles = [m.register_forward_pre_hook(recorder(k)) for k, m in enumerate(self.bns)]
        try:
            yield self.seen
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def apply(self, stats: list[tuple[Tensor, Tensor]], calls: list[int]) -> None:
        """One training step's update of the running statistics from the centre's `stats`, made by the BatchNorms
        `calls` (as `recording` listed them), in call order, as F.batch_norm does."""
        if len(stats) != len(calls):
            raise RuntimeError(f"{len(stats)} BatchNorm statistics recorded for {len(calls)} calls")
        for k, (mean, var) in zip(calls, stats, strict=True):
            bn = self.bns[k]
            count, running_mean, running_var = bn.num_batches_tracked, bn.running_mean, bn.running_var
            assert count is not None and running_mean is not None and running_var is not None  # tracking BNs only
            count.add_(1)
            f = 1.0 / float(count) if bn.momentum is None else bn.momentum
            running_mean.mul_(1 - f).add_(mean.to(running_mean.dtype), alpha=f)
            running_var.mul_(1 - f).add_(var.to(running_var.dtype), alpha=f)


def _branchable(m: nn.Module, s: Selected) -> bool:
    # tied weights are substituted: functional_call then perturbs every use of them alike
    return type(m) in _BRANCH_TYPES and s.name.endswith("weight") and not s.aliases and getattr(m, "groups", 1) == 1


def vectorised(target: Target, draws: Draws, args: tuple, kwargs: dict, targets) -> tuple[Tensor, object]:
    """Per-point losses `[y+1]` and the centre's output, with every point in one vmap."""
    module = target.module
    params = dict(module.named_parameters())
    modules = dict(module.named_modules())
    deltas = draws.stacked()
    points = draws.samples + 1
    branched = {
        s.module_name: s
        for s in target.selected
        if _branchable(modules[s.module_name], s) and s.module_name not in target.no_branch
    }
    substituted = [s.name for s in target.selected if branched.get(s.module_name) is not s]  # biases, tied, ...
    index: dict[str, Tensor] = {}  # the vmapped point index, for the hooks
    called: set[str] = set()

    def add_branch(name: str, delta: Tensor):
        def hook(m, inputs, out):
            called.add(name)
            x, i = inputs[0], index["i"]
            if is_batched(x):  # downstream of another perturbation: nothing to share
                return out + apply_weight(m, x, row(delta, i), None)
            # Linear: features last; Conv: channels at axis 1 (axis 0 for an input without a batch axis)
            axis = -1 if isinstance(m, nn.Linear) else int(x.dim() == delta.dim() - 1)
            branch = apply_weight(m, x, delta[1:].flatten(0, 1), None)  # one product for the y points
            branch = branch.unflatten(axis, (points - 1, delta.shape[1])).movedim(axis - 1 if axis < 0 else axis, 0)
            return out + row(torch.cat([torch.zeros_like(branch[:1]), branch]), i)

        return hook

    batchnorm = BatchNormCentre(module)

    def point(i):
        index["i"] = i
        batchnorm.seen.clear()
        batchnorm.calls.clear()
        swapped = {target.prefix + n: params[n] + row(deltas[n], i) for n in substituted}
        out = functional_call(target.model, swapped, args, kwargs, strict=False)
        return scalar_loss(target.loss_fn, out, targets), tensors_of(out), tuple(batchnorm.seen)

    # prepended: W x + ΔW x is the layer's output before any hook of the user's sees it, so a hook that changes the
    # output (linear in W) acts on (W + ΔW) x, as it does in the sequential engine
    hooks = [modules[n].register_forward_hook(add_branch(n, deltas[s.name]), prepend=True) for n, s in branched.items()]
    try:
        with batchnorm.frozen(), batchnorm.recording():
            losses, outs, stats = vmap(point, randomness="different")(torch.arange(points, device=device_of(module)))
    finally:
        for h in hooks:
            h.remove()
    if set(branched) - called:
        # a smoothed weight was used without calling its module (a custom forward reads `.weight`):
        # substitute it instead, and evaluate again from the same draws
        target.no_branch |= set(branched) - called
        draws.restart()
        return vectorised(target, draws, args, kwargs, targets)
    batchnorm.apply([(mean[0], var[0]) for mean, var in stats], batchnorm.calls)
    return losses, tree_map(lambda t: t[0], outs)


def tensors_of(out):
    """What vmap can return of a model's output: a mapping (a Hugging Face ModelOutput) keeps its tensor entries and
    drops the rest, such as a key-value cache object (pass use_cache=False not to build one); anything else as is."""
    if isinstance(out, dict) and not all(isinstance(v, Tensor) for v in out.values()):
        return {k: v for k, v in out.items() if isinstance(v, Tensor)}
    return out


def sequential(target: Target, draws: Draws, args: tuple, kwargs: dict, targets) -> tuple[Tensor, object]:
    """Per-point losses `[y+1]` and the centre's output, one point at a time under activation checkpointing."""
    module = target.module
    params = dict(module.named_parameters())
    batchnorm = BatchNormCentre(module)

    def evaluate(a: int):
        # runs in the forward pass and again in the backward pass (checkpointing): it draws, never stores
        delta = {} if a == 0 else draws.point(a)
        swapped = {n: d.add_(params[n]) for n, d in delta.items()}  # W + ΔW in the noise's own memory
        with batchnorm.frozen():
            out = functional_call(module, swapped, args, kwargs, strict=False)
        return scalar_loss(target.loss_fn, out, targets), out

    with batchnorm.recording() as seen:
        if target.prefix:  # DDP: the centre runs through the wrapper, which prepares the gradient all-reduce
            with batchnorm.frozen():
                centre_out = target.model(*args, **kwargs)
            losses = [scalar_loss(target.loss_fn, centre_out, targets)]
        else:
            centre_loss, centre_out = checkpoint(evaluate, 0, use_reentrant=False)
            losses = [centre_loss]
        centre_stats, centre_calls = list(seen), list(batchnorm.calls)
    for a in range(1, draws.samples + 1):
        losses.append(checkpoint(lambda a=a: evaluate(a)[0], use_reentrant=False))
    batchnorm.apply(centre_stats, centre_calls)
    return torch.stack(losses), centre_out
