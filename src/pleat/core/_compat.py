"""The private PyTorch APIs pleat relies on, in one place, each with a public fallback.

Tested on torch 2.14 (CI) and 2.11 (the GPU machine); `pyproject.toml` promises torch >= 2.4, where each of these
exists. If a future torch drops one, the fallback keeps pleat correct, only slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_functorch = getattr(torch._C, "_functorch", None)


def is_batched(t: Tensor) -> bool:
    """Inside vmap: does `t` carry the vmapped dimension? (functorch's `is_batchedtensor`; else assume it does.)"""
    check = getattr(_functorch, "is_batchedtensor", None)
    return True if check is None else bool(check(t))


def row(stacked: Tensor, i: Tensor) -> Tensor:
    """Inside vmap over `i = arange(P)`: the batched view whose point i is `stacked[i]`.

    Zero-copy through functorch's `_add_batch_dim` and `maybe_get_level`; the fallback indexes, which copies.
    """
    if _functorch is not None and hasattr(_functorch, "_add_batch_dim") and hasattr(_functorch, "maybe_get_level"):
        return _functorch._add_batch_dim(stacked, 0, _functorch.maybe_get_level(i))
    return stacked[i]


def apply_weight(m: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """What a Linear or ConvNd computes with `weight` and `bias` in place of its own (convolutions keep their
    stride, padding, dilation and padding mode through the private `_conv_forward`)."""
    if isinstance(m, nn.Linear):
        return F.linear(x, weight, bias)
    return m._conv_forward(x, weight, bias)  # type: ignore[operator]


def tree_map(fn, tree):
    """`torch.utils._pytree.tree_map`: apply `fn` to every leaf of nested tuples, lists and dicts."""
    from torch.utils import _pytree

    return _pytree.tree_map(fn, tree)
