import copy
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

import pleat


def _one_core_per_worker() -> None:
    """Under pytest-xdist (the default `-n auto`), pin each worker, and every process it starts, to a core of its
    own, with one torch thread: two processes of two threads each on two cores slow each other down many times
    over, and the sweeps a test starts size their workers by the cores they may use."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[int(worker[2:]) % len(cpus)]})
    torch.set_num_threads(1)


_one_core_per_worker()


def pytest_collection_modifyitems(config, items):
    """The slow tests first (in their order): spread over the workers from the start, none is left to run alone at
    the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def mlp(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 5), nn.ReLU(), nn.Dropout(dropout), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)
    ).double()


def cnn(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(64, 3),
    ).double()


def smooth(model: nn.Module, loss_fn=F.cross_entropy, *, seed: int | None = None, **kwargs):
    """A PartialLocalEntropy with cross-entropy and, given a seed, its own CPU generator."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return pleat.PartialLocalEntropy(model, loss_fn, generator=generator, **kwargs)


def batch(model: nn.Module, n: int = 7):
    g = torch.Generator().manual_seed(1)
    shape = (n, 6) if isinstance(model[0], nn.Linear) else (n, 2, 8, 8)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def draw_like_pleat(model, names, samples, radius, seed, antithetic=False):
    """The documented draw order: point by point, parameter by parameter, four int16 levels per 64 random bits."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    points = []
    while len(points) < samples:
        d = {}
        for n in names:
            k = params[n].numel()
            bits = torch.empty((k + 3) // 4, dtype=torch.int64).random_(-(2**63), None, generator=g)
            levels = bits.view(torch.int16)[:k].double().view(params[n].shape)
            d[n] = (2 * levels + 1) * radius / 2**16
        points.append(d)
        if antithetic:
            points.append({n: -t for n, t in d.items()})
    return points


def naive(model, loss_fn, inputs, targets, deltas, kind="pla", log_weights=None, beta=1.0):
    """Reference: one deep copy of the model per point, weights set in place, gradients combined by hand.

    Returns (loss, {name: grad}, centre model copy after its forward).
    """
    points = [{}] + list(deltas)
    log_weights = torch.zeros(len(points), dtype=torch.float64) if log_weights is None else log_weights
    losses, grads, copies = [], [], []
    for d in points:
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n in d:
                    p.add_(d[n])
        loss = loss_fn(m(inputs), targets)
        grads.append(
            dict(
                zip(
                    [n for n, _ in m.named_parameters()],
                    torch.autograd.grad(loss, list(m.parameters()), allow_unused=True),
                )
            )
        )
        losses.append(loss.detach())
        copies.append(m)
    losses = torch.stack(losses)
    P = len(points)
    if kind == "pla":
        coeffs = log_weights.exp() / P
        total = (coeffs * losses).sum()
    else:
        z = -beta * losses + log_weights
        total = math.log(P) - torch.logsumexp(z, 0)
        coeffs = beta * torch.softmax(z, 0)
    names = [n for n, _ in model.named_parameters()]
    grad = {}
    for n in names:
        gs = [c * (g[n] if g[n] is not None else 0) for c, g in zip(coeffs, grads)]
        grad[n] = sum(gs)
    return total, grad, copies[0]
