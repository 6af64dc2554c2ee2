"""Packing: which runs of a sweep are trained together as one vectorised group (see `pleat.runs.train`).

Runs share a group when they share the network, the dataset, the batch size and everything else `group_key`
names, the number of points per step, and the layers they smooth. The last condition is a choice: a group pays,
for every run, the perturbations of the union of its runs' layers, so that {1}, {2} and {1,2} runs of Figure 3
mixed in one group would cost about 1.4x the arithmetic of the three groups apart (from the step costs of
`benchmarks/objective.py` on fc2: 25 steps like {1,2}'s, 6.2x plain each, against 8 x (4.2 + 3.1 + 6.2) + 1), and
measured 0.62x the speed of one by one. Plain runs form
groups of their own, with no perturbation at all.

A group's size is bounded by a memory budget: `run_bytes` estimates what one run adds (parameters, gradients,
momentum, the perturbations, and the activations of a step at every point), and `memory_budget` measures what
the device has free.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

import torch

from pleat.core.select import select
from pleat.runs.config import Config, effective_kind, group_key, points
from pleat.runs.models import build

INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "stl10": (3, 96, 96)}
# what a step holds per activation value: the forward's saved value, its gradient, and a copy in the points' join
ACTIVATION_COPIES = 3
# the share of the free memory that groups may fill: the rest is left to the evaluation, the allocator and others
BUDGET_SHARE = 0.5


def run_bytes(config: Config) -> int:
    """An estimate of the memory one run adds to a group: parameters x 3 (with gradient and momentum), its
    perturbations (samples x the smoothed weights), and a step's activations at every point."""
    with torch.device("meta"):
        model = build(config.model, config.activation, config.init)
        per_example = 0

        def count(module, inputs, output):
            nonlocal per_example
            per_example += output[0].numel()

        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        model(torch.empty(1, *INPUT_SHAPES[config.dataset]))
        for h in hooks:
            h.remove()
        parameters = sum(p.numel() for p in model.parameters())
        smoothed = 0 if points(config) is None else sum(s.numel for s in select(model, list(config.layers)))
    size = 8 if config.dtype == "float64" else 4
    point_count = points(config) or 1
    activations = ACTIVATION_COPIES * config.batch_size * point_count * per_example
    return size * (3 * parameters + (point_count - 1) * smoothed + activations)


def memory_budget(device: str) -> int:
    """Bytes that groups may fill on `device` (cpu, cuda, cuda:N, auto): a share of what is free now."""
    if device != "cpu" and torch.cuda.is_available():
        index = torch.device(device).index if device.startswith("cuda") else None
        free, _ = torch.cuda.mem_get_info(index)
    else:
        free = _available_ram()
    return int(BUDGET_SHARE * free)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def pack_key(config: Config) -> tuple:
    """Runs with equal keys may share a group (SAM runs among themselves: their second pass is then the
    whole group's)."""
    smoothed = () if points(config) is None else tuple(config.layers)
    return (*group_key(config), points(config), smoothed, effective_kind(config) == "sam")


def pack(configs: list[Config], budget: int, parts: int = 1) -> list[list[Config]]:
    """Split `configs` into groups: runs of one `pack_key`, each group within `budget` bytes, and every key's runs
    spread over at least `parts` groups when there are that many (so that `parts` workers all get work).

    Order is kept within a group; a run that alone exceeds the budget is a group of one.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    by_key: dict[tuple, list[Config]] = defaultdict(list)
    groups: list[list[Config]] = []
    for c in configs:
        by_key[pack_key(c)].append(c)
    for runs in by_key.values():
        fits = max(1, budget // max(1, max(run_bytes(c) for c in runs)))
        count = max(math.ceil(len(runs) / fits), min(parts, len(runs)))
        size = math.ceil(len(runs) / count)
        groups += [runs[i : i + size] for i in range(0, len(runs), size)]
    return groups
