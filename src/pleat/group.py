"""Vectorised training: K runs that share a network, a dataset and a batch size, stepped as one program.

The runs may differ in kind (none, pla, plea), smoothed layers, radius, sharpness, seed, learning rate, momentum,
weight decay and number of epochs. Each keeps everything a run trained alone has: its own data order and
augmentation, its own perturbations drawn from its own generator in the same order, its own optimiser state,
layer temperatures, store and checkpoints. Its numbers are those of `pleat.train.train` on its config (up to
floating-point summation order), and its checkpoints have the same format: a run started in a group can be
resumed alone and the other way round.

The program is `Stacked` (the network over runs and points) under autograd; the loss of the group is the sum
of the runs' losses, so each run's gradient is its own. The weights of a layer smoothed by some run of the group
are perturbed for every run, with zero perturbations where a run does not smooth it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from pleat import train as single
from pleat.config import Config
from pleat.data import augmentation
from pleat.kernels import Box
from pleat.select import select
from pleat.stacked import Stacked
from pleat.store import RunStore, environment
from pleat.temperature import LayerTemperature, welford_

KINDS = ("none", "pla", "plea")
# keys that must be equal for runs to share a program (the rest may differ run by run)
SHARED_KEYS = (
    "dataset",
    "model",
    "activation",
    "batch_size",
    "dtype",
    "train_subset",
    "test_subset",
    "data_dir",
    "device",
    "probe_every",
)


def effective_kind(config: Config) -> str:
    """none for plain runs and for pla/plea that perturb nothing (samples = 0 or radius = 0), else the kind."""
    return "none" if config.kind == "none" or config.samples == 0 or config.radius == 0 else config.kind


def group_key(config: Config) -> tuple | None:
    """Runs with equal keys can be trained as one group if their smoothed runs also agree on `samples`; None:
    this run is trained alone (kinds sam and noise, probe_gradient = centre, the per-weight probe estimator,
    log-spaced probe windows, TensorBoard)."""
    if config.kind not in KINDS or config.probe_gradient != "objective" or config.tensorboard:
        return None
    if config.probe_estimator != "layer" or config.probe_windows != "fixed":
        return None
    return tuple(getattr(config, k) for k in SHARED_KEYS)


def points(config: Config) -> int | None:
    """Points per step of a smoothed run (samples + 1); None for a plain run, which joins a group of any."""
    return None if effective_kind(config) == "none" else config.samples + 1


@dataclass
class _Run:
    """One run of a group: its config and store, and what it keeps between epochs."""

    config: Config
    store: RunStore
    noise: torch.Generator
    kernel: Box
    smoothed: list[str]  # the weights it perturbs, in the order its draws fill them
    history: list[dict] = field(default_factory=list)
    temperatures: list[dict] = field(default_factory=list)  # closed probe windows (LayerTemperature.history)

    @property
    def epoch(self) -> int:
        return len(self.history)


class _Probe:
    """The layer temperatures of K runs at once: `LayerTemperature`'s Welford sums, one row per run."""

    def __init__(self, names: list[str], runs: int, device: torch.device):
        self.names = names
        self.count = [0] * runs  # steps in each run's open window; `counts` is the same on the device
        self.counts = torch.zeros(runs, 1, dtype=torch.float64, device=device)
        self.mean = torch.zeros(runs, len(names), dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)

    @torch.no_grad()
    def step(self, grads: list[Tensor]) -> None:
        s = torch.stack([g.abs().flatten(1).mean(1) for g in grads], dim=1).to(torch.float64)  # [K, layers]
        self.counts += 1  # no host-to-device copy per step
        welford_(self.mean, self.m2, s, self.counts)
        self.count = [c + 1 for c in self.count]

    def close(self, k: int) -> dict[str, tuple[float, float]]:
        """Close run k's window: {layer: (mean, std)}, as LayerTemperature.epoch()."""
        mean = self.mean[k].tolist()
        std = (self.m2[k] / self.count[k]).sqrt().tolist()
        self.mean[k], self.m2[k], self.counts[k], self.count[k] = 0, 0, 0, 0
        return dict(zip(self.names, zip(mean, std)))

    def state(self, k: int, history: list[dict]) -> dict:
        """Run k's probe in LayerTemperature.state_dict() format."""
        open_window = self.count[k] > 0
        return {
            "names": list(self.names),
            "history": [{n: list(v) for n, v in h.items()} for h in history],
            "count": self.count[k],
            "mean": self.mean[k].cpu().clone() if open_window else None,
            "m2": self.m2[k].cpu().clone() if open_window else None,
        }

    def load(self, k: int, state: dict) -> None:
        self.count[k] = int(state["count"])
        self.counts[k] = self.count[k]
        if state["mean"] is not None:
            self.mean[k], self.m2[k] = state["mean"], state["m2"]

    def keep(self, rows: list[int]) -> None:
        self.count = [self.count[k] for k in rows]
        self.counts = self.counts[rows]
        self.mean, self.m2 = self.mean[rows], self.m2[rows]


def train_group(configs: list[Config]) -> list[dict]:
    """Train (or resume) the runs of `configs` as one vectorised program; returns their results in order.

    Finished runs are skipped. The runs must share `group_key`; runs may be at different epochs (a group resumed
    after a kill) and have different epoch counts. A run whose training loss stops being finite ends at that
    epoch with its result marked `diverged`; the others go on.
    """
    if not configs:
        return []
    keys = {group_key(c) for c in configs}
    if None in keys or len(keys) > 1 or len({points(c) for c in configs} - {None}) > 1:
        raise ValueError(
            "these runs cannot share one vectorised program: they must be of kind none, pla or plea, read the "
            f"objective's gradient, write no TensorBoard files, agree on {', '.join(SHARED_KEYS)}, and their "
            "smoothed runs on samples"
        )
    device = single.resolve_device(configs[0].device)
    stores = [RunStore(c) for c in configs]
    with contextlib.ExitStack() as locks:
        for store in stores:
            if not store.finished:
                locks.enter_context(store.lock())
        todo = [i for i, s in enumerate(stores) if not s.finished]  # read under the locks
        trained = _train([configs[i] for i in todo], [stores[i] for i in todo], device) if todo else []
    results = dict(zip(todo, trained))
    return [results[i] if i in results else s.result() for i, s in enumerate(stores)]


def _train(configs: list[Config], stores: list[RunStore], device: torch.device) -> list[dict]:
    data = single.load_data(configs[0], device)
    autocast = single.autocast_for(configs[0], device)
    env = {**environment(device), "precision": single.PRECISIONS[configs[0].dtype], "vectorised_group": len(configs)}
    started = time.time()
    runs, lone, results = [], [], {}
    position: dict[int, int] = {}  # id of a training run -> its place in `configs`
    for k, (config, store) in enumerate(zip(configs, stores)):  # each run read as a lone run reads it
        store.create(env)
        model = single.init_model(config, device)
        optimizer = single._optimizer(config, model)
        noise = single.noise_generator(config, device)
        probe = LayerTemperature(model)
        history = single.resume(store, device, model, optimizer, probe, noise)
        if len(history) >= config.epochs or (history and single.diverged(history[-1])):
            results[k] = single.finish(store, history, started)  # stopped after its last checkpoint
            continue
        smoothed = [] if effective_kind(config) == "none" else [s.name for s in select(model, list(config.layers))]
        kernel = Box(config.radius, config.sharpness)
        runs.append(_Run(config, store, noise, kernel, smoothed, history, probe.history))
        lone.append((model, optimizer, probe.state_dict()))
        position[id(runs[-1])] = k
    if runs:
        group = _Group(runs, lone, device)
        del lone
        epochs = max(r.config.epochs - r.epoch for r in runs)
        bar = single._progress(range(epochs), any(c.progress for c in configs), desc=f"group of {len(runs)}")
        for _ in bar:
            for run in group.epoch(data, autocast):
                results[position[id(run)]] = single.finish(run.store, run.history, started)
            if not group.runs:
                break
    return [results[k] for k in range(len(configs))]


class _Group:
    """The stacked state of the runs still training: parameters, momentum buffers, hyperparameters, probe."""

    def __init__(self, runs: list[_Run], lone: list, device: torch.device):
        """runs, and for each its (model, optimiser, probe state) as a lone run has them after resuming."""
        self.runs, self.device = runs, device
        self.template, self.template_optimizer = lone[0][0], lone[0][1]
        self.net = Stacked(self.template)
        names = [n for n, _ in self.template.named_parameters()]
        stacked = {n: torch.stack([m.get_parameter(n).detach() for m, _, _ in lone]) for n in names}
        self.params = {n: p.requires_grad_() for n, p in stacked.items()}  # leaves, updated in place
        self.momentum = {}
        for n in names:
            buffers = [o.state.get(m.get_parameter(n), {}).get("momentum_buffer") for m, o, _ in lone]
            self.momentum[n] = torch.stack(
                [torch.zeros_like(m.get_parameter(n)) if b is None else b for (m, _, _), b in zip(lone, buffers)]
            )
        watched = LayerTemperature(self.template)
        self.probe = _Probe(watched.names, len(runs), device)
        for k, (_, _, probe) in enumerate(lone):
            self.probe.load(k, probe)
        self.weights = [s.name for s in watched.selected]
        self.smoothed = [n for n in names if any(n in r.smoothed for r in runs)]
        self.points = max((r.config.samples + 1 for r in runs if r.smoothed), default=1)
        self._hyper()

    def _hyper(self) -> None:
        dtype = self.params[self.weights[0]].dtype

        def column(key):
            return torch.tensor([getattr(r.config, key) for r in self.runs], dtype=dtype, device=self.device)

        self.lr, self.mu, self.decay = column("lr"), column("momentum"), column("weight_decay")
        self.decayed = any(r.config.weight_decay for r in self.runs)
        self._deltas: dict[str, Tensor] = {}
        kinds = [effective_kind(r.config) for r in self.runs]
        self.is_pla = torch.tensor([k == "pla" for k in kinds], device=self.device)
        self.is_plea = torch.tensor([k == "plea" for k in kinds], device=self.device)

    def keep(self, rows: list[int]) -> None:
        """Go on with the runs at `rows` only."""
        self.runs = [self.runs[k] for k in rows]
        self.params = {n: p.detach()[rows].requires_grad_() for n, p in self.params.items()}
        self.momentum = {n: b[rows] for n, b in self.momentum.items()}
        self.probe.keep(rows)
        self._hyper()

    def _draw(self) -> dict[str, Tensor]:
        """Each run's perturbations, drawn from its own generator in the order a lone run draws them."""
        deltas = self._deltas
        for n in self.smoothed:  # one buffer, kept: a fresh one each step costs its page faults on a CPU
            shape = (len(self.runs), self.points - 1, *self.params[n].shape[1:])
            if n not in deltas or deltas[n].shape != shape:
                deltas[n] = self.params[n].new_zeros(shape)  # rows of runs that leave the weight alone stay zero
        for k, run in enumerate(self.runs):
            if not run.smoothed:
                continue
            for a in range(self.points - 1):
                for n in run.smoothed:
                    run.kernel.sample_(deltas[n][k, a], run.noise)
        return deltas

    def step(self, x: Tensor, y: Tensor, autocast) -> tuple[Tensor, Tensor]:
        """One training step of every run on its batch (x `[K, B, ...]`, y `[K, B]`); returns the centre losses
        `[K]` and the centre outputs `[K, B, classes]`, detached."""
        params = self.params  # leaves: the update below is in place
        with autocast():
            out = self.net(params, x, self._draw() if self.smoothed else None)
        k, q, b = out.shape[:3]
        logits = out.flatten(0, 2)
        losses = F.cross_entropy(logits, y.unsqueeze(1).expand(k, q, b).flatten(), reduction="none")
        losses = losses.view(k, q, b).mean(2)  # [K, points]
        pla = losses.mean(1)
        plea = math.log(q) - torch.logsumexp(-losses, dim=1)
        loss = torch.where(self.is_pla, pla, torch.where(self.is_plea, plea, losses[:, 0]))
        names = list(params)
        grads = dict(zip(names, torch.autograd.grad(loss.sum(), [params[n] for n in names])))
        self.probe.step([grads[n] for n in self.weights])
        with torch.no_grad():
            for n in names:  # torch.optim.SGD (no dampening, no Nesterov), each run with its own lr, μ, decay
                p, g, buffer = params[n], grads[n], self.momentum[n]
                shape = (-1,) + (1,) * (p.dim() - 1)
                if self.decayed:
                    g = g.addcmul(p, self.decay.view(shape))
                buffer.mul_(self.mu.view(shape)).add_(g)
                p.addcmul_(self.lr.view(shape), buffer, value=-1)
        return losses[:, 0].detach(), out[:, 0].detach()

    def epoch(self, data, autocast) -> list[_Run]:
        """Train every run one epoch (each its own next one) and evaluate; returns the runs that ended."""
        started = time.time()
        n = len(data.x_train)
        orders = torch.stack([single.epoch_order(r.config, n, r.epoch) for r in self.runs]).to(self.device)
        augmented = augmentation(data.name) is not None
        batch_size = self.runs[0].config.batch_size
        steps = math.ceil(n / batch_size)
        loss_sum = torch.zeros(len(self.runs), dtype=torch.float64, device=self.device)
        correct = torch.zeros(len(self.runs), dtype=torch.int64, device=self.device)
        every = self.runs[0].config.probe_every
        windows: list[list[dict]] = [[] for _ in self.runs]
        for step in range(steps):
            index = orders[:, step * batch_size : (step + 1) * batch_size]
            if augmented:  # each run's own augmentation of its batch
                batches = [single.batch(r.config, data, i, r.epoch, step) for r, i in zip(self.runs, index)]
                x, y = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
            else:
                x, y = data.x_train[index], data.y_train[index]
            centre, out = self.step(x, y, autocast)
            loss_sum += centre.double() * y.shape[1]
            correct += (out.argmax(-1) == y).sum(1)
            if every:
                for k, r in enumerate(self.runs):
                    if (global_step := r.epoch * steps + step + 1) % every == 0:
                        temperature = self._close(k)
                        windows[k].append(
                            {"step": global_step, "temperature": {m: list(v) for m, v in temperature.items()}}
                        )
        test = self.evaluate(data.x_test, data.y_test, autocast)
        train = zip((loss_sum / n).tolist(), (correct.double() / n).tolist())
        seconds = (time.time() - started) / len(self.runs)
        ended, rows = [], []
        for k, (run, train_k, test_k) in enumerate(zip(self.runs, train, test)):
            temperature = {} if every else self._close(k)
            record = single.epoch_record(
                run.epoch + 1, train_k, test_k, temperature, windows[k] if every else None, seconds
            )
            run.history.append(record)
            run.store.append_metrics(record)
            self._checkpoint(k, run)
            if run.epoch >= run.config.epochs or single.diverged(record):
                ended.append(run)
            else:
                rows.append(k)
        if ended:
            self.keep(rows)
        return ended

    def _close(self, k: int) -> dict[str, tuple[float, float]]:
        window = self.probe.close(k)
        self.runs[k].temperatures.append(window)
        return window

    def _checkpoint(self, k: int, run: _Run) -> None:
        """Run k's checkpoint, in the format of a run trained alone (written through a lone model and SGD)."""
        model, optimizer = self.template, self.template_optimizer
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(self.params[n][k])
        optimizer.param_groups[0].update(
            lr=run.config.lr, momentum=run.config.momentum, weight_decay=run.config.weight_decay
        )
        optimizer.state.clear()
        if run.config.momentum:
            for n, p in model.named_parameters():
                optimizer.state[p]["momentum_buffer"] = self.momentum[n][k].clone()
        probe = self.probe.state(k, run.temperatures)
        single.checkpoint(
            run.store, run.history, model.state_dict(), optimizer.state_dict(), probe, run.noise.get_state()
        )

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, autocast) -> list[tuple[float, float]]:
        """Each run's mean test loss and accuracy, the test set shared by all runs; one host sync."""
        k = len(self.runs)
        loss = torch.zeros(k, dtype=torch.float64, device=x.device)
        correct = torch.zeros(k, dtype=torch.int64, device=x.device)
        size = max(64, 1024 // k)
        for start in range(0, len(x), size):
            with autocast():
                out = self.net(self.params, x[start : start + size], shared=True)[:, 0]
            target = y[start : start + size]
            losses = F.cross_entropy(single.loss_precision(out).flatten(0, 1), target.repeat(k), reduction="none")
            loss += losses.view(k, -1).double().sum(1)
            correct += (out.argmax(-1) == target).sum(1)
        return list(zip((loss / len(x)).tolist(), (correct.double() / len(x)).tolist()))
