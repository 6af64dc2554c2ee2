"""The paper's networks evaluated for K runs at once, each at P points W + ΔW^a: one program for a whole group.

`Stacked(model)` reads the layer sequence of one of pleat's networks (Linear, Conv2d, BatchNorm2d, ReLU, Tanh,
MaxPool2d, AdaptiveAvgPool2d to 1x1, Flatten, nested Sequential) and evaluates it with every parameter stacked over
runs, `[K, *shape]`, and every buffer (BatchNorm's running statistics) too.

Activations carry a run axis and a point axis, `[K, Q, B, ...]`. Q is 1 until the first perturbed layer (the
points share everything upstream of it, as in the single-run vectorised engine) and P afterwards. A perturbed
Linear or Conv computes W x once and adds the y products ΔW^a x: fed by a shared x they are one batched product
against the stacked perturbations. Runs are kept apart by batched matrix products (Linear) and grouped
convolutions (Conv2d, one group per run, or per run and point), so no run's numbers ever touch another's.
In training, BatchNorm normalises each run at each point by that point's own batch statistics, as the network run
at that point alone would, and updates each run's running statistics from one point (the centre, or the point its
step reports), as `PartialLocalEntropy` does.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ELEMENTWISE = (nn.ReLU, nn.Tanh)


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, f"{prefix}{name}.")
        else:
            yield prefix + name, child


class Stacked:
    """A functional, run-stacked view of a pleat network (its parameters are not used, only its structure)."""

    def __init__(self, model: nn.Module):
        self.layers = list(_leaves(model))
        for name, m in self.layers:
            supported = (
                isinstance(m, (nn.Linear, nn.MaxPool2d, nn.Flatten, *_ELEMENTWISE))
                or (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros")
                or (type(m) is nn.BatchNorm2d and m.track_running_stats and m.momentum is not None)
                or (isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)))
            )
            if not supported or (isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1)):
                raise ValueError(
                    "vectorised training supports Linear, Conv2d, BatchNorm2d (with running statistics), ReLU, Tanh, "
                    f"MaxPool2d, AdaptiveAvgPool2d(1) and Flatten layers; {name} is {m!r}"
                )

    def __call__(
        self,
        params: dict[str, Tensor],
        x: Tensor,
        deltas: dict[str, Tensor] | None = None,
        shared: bool = False,
        buffers: dict[str, Tensor] | None = None,
        training: bool = False,
        stats_point: Tensor | None = None,
    ) -> Tensor:
        """Outputs `[K, Q, B, classes]` of the K runs whose parameters are `params` (`[K, *shape]` each).

        x: `[K, B, ...]`, each run's own batch, or with `shared` `[B, ...]`, one batch for every run (evaluation).
        deltas: for perturbed parameters, `[K, P-1, *shape]`: point a (1..P-1) of run k is W_k + deltas[k, a-1]
            (zero rows leave a run unperturbed in that layer). Q is P from the first perturbed layer on, else 1.
        buffers: the runs' BatchNorm buffers `[K, *shape]` (networks without BatchNorm need none).
        training: BatchNorm normalises by batch statistics and updates `buffers` in place, each run's from its
            point `stats_point[k]` (default the centre, 0); else it normalises by the running statistics.
        """
        deltas = deltas or {}
        h = x if shared else x.unsqueeze(1)  # [B, ...] shared, or [K, 1, B, ...]
        for name, m in self.layers:
            if isinstance(m, nn.BatchNorm2d):
                if shared or buffers is None:
                    raise ValueError(f"{name}: BatchNorm needs the runs' buffers and an input per run")
                h = _batch_norm(m, name, h, params, deltas, buffers, training, stats_point)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                h = h.mean(dim=(-2, -1), keepdim=True)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
                delta = deltas.get(f"{name}.weight")
                if isinstance(m, nn.Linear):
                    h = _linear(h, shared, weight, bias, delta)
                else:
                    h = _conv(m, h, shared, weight, bias, delta)
                shared = False
            elif shared or isinstance(m, _ELEMENTWISE):
                h = m(h)
            elif isinstance(m, nn.MaxPool2d):
                h = m(h.flatten(0, 2)).unflatten(0, h.shape[:3])
            else:  # Flatten of [K, Q, B, ...]: everything after the batch axis
                h = h.flatten(3)
        return h


def _batch_norm(m: nn.BatchNorm2d, name: str, h: Tensor, params, deltas, buffers, training, stats_point) -> Tensor:
    """BatchNorm2d of `[K, Q, B, C, H, W]` for every run at every point (see `Stacked.__call__`)."""
    k, q = h.shape[:2]
    running_mean, running_var = buffers[f"{name}.running_mean"], buffers[f"{name}.running_var"]
    if training:
        mean = h.mean(dim=(2, 4, 5))  # [K, Q, C]
        var = h.var(dim=(2, 4, 5), unbiased=False)
        with torch.no_grad():
            rows = torch.arange(k, device=h.device)
            point = torch.zeros_like(rows) if stats_point is None or q == 1 else stats_point
            n = h.shape[2] * h.shape[4] * h.shape[5]
            running_mean.lerp_(mean[rows, point].to(running_mean.dtype), m.momentum)
            running_var.lerp_((var[rows, point] * (n / (n - 1))).to(running_var.dtype), m.momentum)
            buffers[f"{name}.num_batches_tracked"].add_(1)
    else:
        mean, var = running_mean[:, None], running_var[:, None]  # [K, 1, C]

    def spread(t: Tensor) -> Tensor:  # [K, Q, C] against [K, Q, B, C, H, W]
        return t[:, :, None, :, None, None]

    out = (h - spread(mean)) * spread(torch.rsqrt(var + m.eps))
    for key in ("weight", "bias"):
        if f"{name}.{key}" not in params:
            continue
        value = params[f"{name}.{key}"][:, None]  # [K, 1, C]
        delta = deltas.get(f"{name}.{key}")
        if delta is not None:  # every point its own scale or shift
            value = torch.cat([value, value + delta], dim=1)
        out = out * spread(value) if key == "weight" else out + spread(value)
    return out


def _join(base: Tensor, branch: Tensor) -> Tensor:
    """Outputs at every point: the centre's W x (+ b), and W x + ΔW^a x at the others. base `[K, Q, B, ...]`."""
    if base.shape[1] == 1:
        return torch.cat([base, base + branch], dim=1)
    return torch.cat([base[:, :1], base[:, 1:] + branch], dim=1)


def _linear(h: Tensor, shared: bool, weight: Tensor, bias, delta) -> Tensor:
    k, out_features, in_features = weight.shape
    if shared:  # one product against every run's weights side by side
        batch = h.shape[0]
        base = (h @ weight.reshape(k * out_features, in_features).T).view(batch, k, out_features).transpose(0, 1)
        base = base.unsqueeze(1)
        if bias is not None:
            base = base + bias[:, None, None, :]
    else:
        q, batch = h.shape[1], h.shape[2]
        # (W x)ᵀ = W xᵀ: the weight's gradient then comes out in its own layout, which the optimiser reads fast
        flat = h.reshape(k, q * batch, in_features).transpose(1, 2)
        out = torch.baddbmm(bias.unsqueeze(2), weight, flat) if bias is not None else torch.bmm(weight, flat)
        base = out.transpose(1, 2).unflatten(1, (q, batch))
    if delta is None:
        return base
    points = delta.shape[1]
    if shared:  # the P-1 products ΔW^a x of every run: one product
        branch = h @ delta.reshape(-1, in_features).T
        branch = branch.view(h.shape[0], k, points, out_features).permute(1, 2, 0, 3)
    elif base.shape[1] == 1:  # unperturbed input: one product per run
        branch = torch.bmm(h[:, 0], delta.reshape(k, points * out_features, in_features).transpose(1, 2))
        branch = branch.view(k, -1, points, out_features).transpose(1, 2)
    else:
        branch = torch.matmul(h[:, 1:], delta.transpose(-1, -2))
    return _join(base, branch)


def _conv(m: nn.Conv2d, h: Tensor, shared: bool, weight: Tensor, bias, delta) -> Tensor:
    k, out_channels = weight.shape[:2]
    kernel = weight.shape[2:]

    def conv(x, w, b, groups):
        return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, groups)

    flat_bias = None if bias is None else bias.reshape(-1)
    if shared:  # [B, C, H, W] through every run's filters at once
        y = conv(h, weight.reshape(k * out_channels, *kernel), flat_bias, 1)
        base = y.unflatten(1, (k, out_channels)).transpose(0, 1).unsqueeze(1)
    else:  # [K, Q, B, C, H, W] -> [Q*B, K*C, H, W], one group per run
        q, batch, channels = h.shape[1:4]
        x = h.reshape(k, q * batch, *h.shape[3:]).transpose(0, 1).reshape(q * batch, k * channels, *h.shape[4:])
        y = conv(x, weight.reshape(k * out_channels, *kernel), flat_bias, k)
        base = y.unflatten(1, (k, out_channels)).transpose(0, 1).unflatten(1, (q, batch))
    if delta is None:
        return base
    points = delta.shape[1]
    filters = delta.reshape(k * points * out_channels, *kernel)
    if base.shape[1] == 1:  # unperturbed input: each run's P-1 filter banks in one grouped convolution
        if shared:
            y = conv(h, filters, None, 1)
        else:
            x = h[:, 0].transpose(0, 1)  # [B, K, C, H, W]
            y = conv(x.reshape(x.shape[0], -1, *x.shape[3:]), filters, None, k)
    else:  # every point its own input: one group per run and point
        x = h[:, 1:].permute(2, 0, 1, *range(3, h.dim()))  # [B, K, P-1, C, H, W]
        y = conv(x.reshape(x.shape[0], -1, *x.shape[4:]), filters, None, k * points)
    branch = y.unflatten(1, (k, points, out_channels)).permute(1, 2, 0, *range(3, y.dim() + 2))
    return _join(base, branch)
