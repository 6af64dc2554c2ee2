"""How long a sweep's runs take on the team's 2-core CPU: each run's estimate, what is left of it, and which jobs
fit in a wall-clock limit (for --dry-run, --hours and the first ETA)."""

from __future__ import annotations

from pleat.reproduce import packing
from pleat.reproduce.spec import Run
from pleat.runs.config import Config
from pleat.runs.store import RunStore, trained_epochs

# Seconds per 1,000 examples per epoch on the team's 2-core CPU using both cores (one two-thread run, or two
# one-thread runs at half the speed each), with the evaluation (about a third of a training step). Measured on the
# decisive sweeps of 2026-12-01, one run alone on the VM: fc2 plain 3.1 s an epoch of Fashion-MNIST, PLA (y = 4) on
# {2} 9.9-10.2 s, on {1,2} 18.8 s; fc4 plain with the per-weight probe 7.5-8 s (the probe's share is counted apart,
# in estimate_seconds). An earlier measurement, 1.8 s for fc2 plain, made every estimate about 1.6x too short.
# fc3 and the CNNs scaled by their arithmetic.
# cnn-bn: 17 s an epoch of 10,000 augmented images and the 10,000 test images on one core (2026-12-04), taken as
# 1.6x faster on two
_PLAIN_SECONDS = {"fc2": 0.048, "fc3": 0.072, "fc4": 0.096, "cnn-cifar10": 3.8, "cnn-stl10": 48.0, "cnn-bn": 0.8,
                  "cnn-bn-32": 2.8}  # fmt: skip
_TRAIN_SIZE = {"mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000, "stl10": 5000}
# what a run costs besides its epochs: loading and checking the data, the store, the first steps (the smoke Fig 3
# sweep, 14 runs of 1,000 examples for one epoch, took 39 s)
_RUN_OVERHEAD = 2.5
_TEST_SIZE = {"mnist": 10000, "fashion-mnist": 10000, "cifar10": 10000, "stl10": 8000}
_CALIBRATED_CORES = 2  # the estimates are for a run using both cores of the team's CPU


def downstream_share(config) -> float:
    """The share of a forward's multiply-adds done at and after the first smoothed layer: what runs again at every
    extra point (counted on the meta device, no data)."""
    import torch

    from pleat.core.select import select, weight_layers
    from pleat.runs.models import build

    with torch.device("meta"):
        model = build(config.model, config.activation)
        macs: dict[str, int] = {}

        def count(name):
            def hook(module, inputs, output):
                per_output = module.weight[0].numel()  # in_features, or in_channels x kernel
                macs[name] = output.numel() * per_output

            return hook

        hooks = [m.register_forward_hook(count(n)) for n, m in weight_layers(model)]
        model(torch.empty(1, *packing.INPUT_SHAPES[config.dataset]))
        for h in hooks:
            h.remove()
        chosen = {s.module_name for s in select(model, list(config.layers))}
    order = [n for n, _ in weight_layers(model)]
    first = min(order.index(n) for n in chosen)
    return sum(macs[n] for n in order[first:]) / sum(macs.values())


def _point_cost(c: Config) -> float:
    """What each extra point costs, in plain steps: the layers from the first smoothed one up run again, and each
    smoothed layer draws its noise (fitted to the fc2 measurements above); for the paper's CNNs the share of the
    arithmetic at and after the first smoothed layer (PLA on every conv of the CIFAR-10 CNN: 4.9x a plain step
    measured, 5x counted)."""
    if c.model.startswith("cnn-bn"):  # measured with y = 4 (one core, 20 steps): every conv 4x plain, the norms 3x
        return 0.75 if 1 in c.layers else 0.5 if "norm" in c.layers else 0.1
    if not c.model.startswith("fc"):
        return downstream_share(c)
    depth = int(c.model[2:]) + 1  # hidden layers and the output layer
    indices = [x for x in c.layers if isinstance(x, int)] or [1]
    return 0.175 * (depth - min(indices) + 1) + 0.3 * len(c.layers) + 0.25 * (len(c.layers) - 1)


def estimate_seconds(c: Config) -> float:
    """A rough training time of one run on the team's 2-core CPU (for --dry-run and the first ETA)."""
    n = c.train_subset or _TRAIN_SIZE[c.dataset]
    test = c.test_subset or _TEST_SIZE[c.dataset]
    factor = {"none": 1.0, "sam": 2.0, "noise": 1.3}.get(c.kind)
    if factor is None:
        factor = 1 + _point_cost(c) * c.samples
    if c.probe_estimator == "weight":  # fc4 on MNIST: 7.5-8 s an epoch measured with it; 6.1 s by the plain rate
        factor *= 1.25
    return _RUN_OVERHEAD + c.epochs * (n * factor + test / 3) / 1000 * _PLAIN_SECONDS[c.model]


def seconds_left(run: Run) -> float:
    """`estimate_seconds` for the epochs a run has still to train: a run resumes from its last checkpoint."""
    c = run.config
    trained = trained_epochs(RunStore(c).dir, c.epochs)
    return estimate_seconds(c) * (c.epochs - trained) / c.epochs


def worker_slowdown(threads: int) -> float:
    """How much longer than its estimate a run takes on a worker of `threads` cores: twice on one core (the
    estimate is for two), never less than the estimate on more (small nets do not use many threads well)."""
    return _CALIBRATED_CORES / min(_CALIBRATED_CORES, threads)


def in_time(
    jobs: list[list], todo: list[Run], parallel: int, hours: float, slowdown: float
) -> tuple[list[list], list[Run]]:
    """The jobs that `within` keeps for `hours` on `parallel` workers, each `slowdown` times slower than the
    estimate, and the runs of the others."""
    by_key = {r.config.key(): r for r in todo}
    durations = [sum(seconds_left(by_key[c.key()]) for c in job) * slowdown for job in jobs]
    keep = within(durations, parallel, hours * 3600)
    later = [by_key[c.key()] for job, k in zip(jobs, keep) if not k for c in job]
    return [job for job, k in zip(jobs, keep) if k], later


def within(durations: list[float], workers: int, limit: float) -> list[bool]:
    """Which jobs finish within `limit` seconds, by their estimated `durations`, when `workers` slots take them in
    order, each as soon as one frees up (what a process pool does). A job that would end past the limit is not
    started, and a shorter one after it may still fit: under a wall-clock limit (a cluster's, a session's) every
    run that starts also finishes."""
    free = [0.0] * workers
    keep = []
    for d in durations:
        slot = min(range(workers), key=free.__getitem__)
        keep.append(free[slot] + d <= limit)
        if keep[-1]:
            free[slot] += d
    return keep
