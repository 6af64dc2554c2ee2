"""The trainer: K runs that share a network, a dataset and a batch size, stepped as one program. A run trained
alone is a group of one: there is one epoch loop, one evaluation, one probe, one checkpoint and one optimiser step.

The runs of a group may differ in everything else: kind (none, pla, plea, sam, noise), smoothed layers, radius,
samples, sharpness, seed, learning rate, momentum, weight decay, epochs, probe settings and TensorBoard. Each keeps
what a run has alone: its own data order and augmentation, its own perturbations drawn from its own generator
(`engines.Draws`, the order `PartialLocalEntropy` draws in), its own `torch.optim.SGD` (or pytorch-optimizer's
SAM), its own `LayerTemperature`, store and checkpoints. So its numbers do not depend on the group it trains in
(up to floating-point summation order), and a run started in a group can be resumed alone and the other way round.

How: every parameter is stacked over the runs, `[K, *shape]`, one leaf tensor per name, and `Stacked` evaluates
the network for every run at every point. Each run's model holds its parameters as views of its row, so that its
optimiser updates the stack in place and its gradient is a view of the stack's: no copy either way. The loss of
the group is the sum of the runs' losses, so each run's gradient is its own. A layer smoothed by some run of the
group is perturbed for every run, with zero perturbations where a run does not smooth it; a run uses only its own
points. (`benchmarks/sweep.py` measured this against the earlier vmap engine and a hand-written SGD; see README.)
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pleat.core import radii
from pleat.core.engines import Draws
from pleat.core.kernels import Box, Gaussian, Kernel
from pleat.core.objective import aggregate
from pleat.core.select import select
from pleat.probes.scoping import scope
from pleat.probes.temperature import LayerTemperature
from pleat.runs import data as datasets
from pleat.runs import lifecycle as life
from pleat.runs.config import SHARED_KEYS, Config, draws, effective_kind, group_key
from pleat.runs.stacked import Stacked
from pleat.runs.store import RunStore, environment


def train(config: Config) -> dict:
    """Run (or resume, or skip if finished) the run of `config`; returns its result.

    Every epoch appends training loss and accuracy (at the centre point of the objective; for kind noise at the
    shifted point the step uses), test loss and accuracy and the layer temperatures to the store, then
    checkpoints; a finished run is not trained again. A run whose training loss stops being finite ends at that
    epoch, its result marked `diverged`.
    """
    return train_group([config])[0]


def train_group(configs: list[Config]) -> list[dict]:
    """Train (or resume) the runs of `configs` as one program; returns their results in order.

    Finished runs are skipped. The runs must share `group_key`; they may be at different epochs (a group resumed
    after a kill) and have different epoch counts. A run that diverges ends at that epoch; the others go on.
    """
    if not configs:
        return []
    if len({group_key(c) for c in configs}) > 1:
        raise ValueError(
            f"these runs cannot share one vectorised program: they must agree on {', '.join(SHARED_KEYS)} "
            "(and on seed, with label_noise)"
        )
    stores = [RunStore(c) for c in configs]
    if all(s.finished for s in stores):
        return [s.result() for s in stores]
    for config in configs:  # a bad layer or data folder fails here: before any data loading or run folder
        life.check_layers(config)
    datasets.data_root(configs[0].data_dir)
    device = life.resolve_device(configs[0].device)
    with contextlib.ExitStack() as locks:
        for store in stores:
            if not store.finished:
                locks.enter_context(store.lock())
        todo = [i for i, s in enumerate(stores) if not s.finished]  # read under the locks
        trained = _train([configs[i] for i in todo], [stores[i] for i in todo], device)
    results = dict(zip(todo, trained))
    return [results[i] if i in results else s.result() for i, s in enumerate(stores)]


@dataclass
class Member:
    """One run of a group, as a run alone has it: model, optimiser, probe, generator, store and history."""

    config: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer
    probe: LayerTemperature
    noise: torch.Generator
    store: RunStore | None = None
    history: list[dict] = field(default_factory=list)
    writer: object = None  # a TensorBoard SummaryWriter, with tensorboard = true

    def __post_init__(self) -> None:
        kind = effective_kind(self.config)
        self.draws = draws(self.config)
        self.selected = select(self.model, list(self.config.layers)) if self.draws else []
        self.smoothed = [s.name for s in self.selected]
        self.shifted = kind == "noise"  # its loss, and what it reports, is that of its one shifted point
        self.sam = kind == "sam"
        radius = radii.from_config(self.config.radius)
        self.scoped = radius if isinstance(radius, radii.Scoped) else None  # then `radius` is set by `rescope`
        self.radius: radii.Radius | None = None if isinstance(radius, radii.Scoped) else radius
        if self.scoped and self.history:  # resumed: the radii of its last epoch, as the metrics recorded them
            self.radius = dict(self.history[-1]["radii"])
        self._fills: dict | None = None

    def fills(self) -> dict:
        """How each smoothed weight is drawn: its box, or for noise a Gaussian of the box's variance R²/3 (relative
        radii: from the run's weights now)."""
        if self._fills is not None:
            return self._fills
        assert self.radius is not None, "a scoped radius is resolved by rescope() before the first step"

        def kernel(r: float) -> Kernel:
            if self.shifted:
                return Gaussian(gamma=3 / r**2) if r > 0 else Box(0.0)
            return Box(r, self.config.sharpness)

        fills = {n: k.sample_ for n, k in radii.kernels(self.radius, self.model, self.selected, kernel).items()}
        if not isinstance(self.radius, radii.Relative):
            self._fills = fills
        return fills

    def rescope(self, data: datasets.Dataset) -> None:
        """radius = "scoped:RISE": the radii `pleat.scope` gives at the current weights, on the first 4 batches of
        this epoch's order, its probes drawn from a generator of the run's seed and epoch. Done before the first
        epoch and, with rescope_every = N, before every N-th."""
        every = self.config.rescope_every
        if self.scoped is None or (self.radius is not None and not (every and self.epoch % every == 0)):
            return
        device = data.x_train.device
        order = life.epoch_order(self.config, len(data.x_train), self.epoch)[: 4 * self.config.batch_size]
        batches = [(data.x_train[i], data.y_train[i]) for i in order.to(device).split(self.config.batch_size)]
        generator = torch.Generator(device).manual_seed(life.derive(self.config.seed, "scope", self.epoch))
        layers = [s.module_name for s in self.selected]
        self.radius = scope(self.model, F.cross_entropy, batches, layers, rise=self.scoped.rise, generator=generator)
        self._fills = None

    @property
    def epoch(self) -> int:
        return len(self.history)


def member(config: Config, device: torch.device, store: RunStore | None = None) -> Member:
    """A run's initial (or, with a store, resumed) model, optimiser, probe and generator."""
    model = life.init_model(config, device)
    optimizer = life.optimizer_for(config, model)
    noise = life.noise_generator(config, device)
    probe = LayerTemperature(model, estimator=config.probe_estimator)
    history = [] if store is None else life.resume(store, device, model, optimizer, probe, noise)
    return Member(config, model, optimizer, probe, noise, store, history)


def _train(configs: list[Config], stores: list[RunStore], device: torch.device) -> list[dict]:
    first = configs[0]
    data = life.load_data(first, device)
    autocast = life.autocast_for(first, device)
    env = {**environment(device), "precision": life.PRECISIONS[first.dtype]}
    if len(configs) > 1:
        env["vectorised_group"] = len(configs)
    started = time.time()
    members, results, place = [], {}, {}
    for k, (config, store) in enumerate(zip(configs, stores)):
        store.create(env)
        m = member(config, device, store)
        if m.epoch >= config.epochs or (m.history and life.diverged(m.history[-1])):
            results[k] = life.finish(store, m.history, started)  # stopped after its last checkpoint
            continue
        if config.tensorboard:
            m.writer = life.tensorboard(store, m.epoch)
        members.append(m)
        place[id(m)] = k
    if members:
        group = Group(members)
        alone = len(members) == 1
        epochs = max(m.config.epochs - m.epoch for m in members)
        what = f"run {stores[0].dir.name}" if len(configs) == 1 else f"group of {len(members)}"
        bar = dict(desc=what, unit="epoch", total=epochs)
        for _ in life.progress(range(epochs), any(c.progress for c in configs), **bar):
            for m in group.epoch(data, autocast, steps_bar=alone and members[0].config.progress):
                if m.writer is not None:
                    m.writer.close()  # type: ignore[attr-defined]
                assert m.store is not None
                results[place[id(m)]] = life.finish(m.store, m.history, started)
            if not group.members:
                break
    return [results[k] for k in range(len(configs))]


class Group:
    """The stacked state of the runs still training, and their step, epoch and evaluation."""

    def __init__(self, members: list[Member]):
        self.net = Stacked(members[0].model)
        self._stack(members)

    def _stack(self, members: list[Member]) -> None:
        """Stack the members' parameters and buffers (BatchNorm's running statistics) and make each member's model
        hold views of its row; its optimiser and probe are rebuilt on those views, carrying their state over."""
        self.members = members
        names = [n for n, _ in members[0].model.named_parameters()]
        self.params = {n: torch.stack([m.model.get_parameter(n).detach() for m in members]) for n in names}
        for p in self.params.values():
            p.requires_grad_()
        kept = [n for n, _ in members[0].model.named_buffers()]
        self.buffers = {n: torch.stack([m.model.get_buffer(n) for m in members]) for n in kept}
        for k, m in enumerate(members):
            optimizer, probe = m.optimizer.state_dict(), m.probe.state_dict()
            for n in names:
                owner, _, leaf = n.rpartition(".")
                setattr(m.model.get_submodule(owner), leaf, nn.Parameter(self.params[n].detach()[k]))
            for n in kept:
                owner, _, leaf = n.rpartition(".")
                m.model.get_submodule(owner).register_buffer(leaf, self.buffers[n][k])
            m.optimizer = life.optimizer_for(m.config, m.model)
            m.optimizer.load_state_dict(optimizer)
            m.probe = LayerTemperature(m.model, estimator=m.config.probe_estimator)
            m.probe.load_state_dict(probe)
        self.watched = [s.name for s in members[0].probe.selected]
        self.smoothed = [n for n in names if any(n in m.smoothed for m in members)]
        self.points = 1 + max(m.draws for m in members)
        device = self.params[names[0]].device
        # which points enter each run's loss: its own y + 1 (pla, plea), the shifted point (noise), the centre
        self.mask = torch.zeros(len(members), self.points, dtype=torch.bool, device=device)
        for k, m in enumerate(members):
            if m.shifted:
                self.mask[k, 1] = True
            else:
                self.mask[k, : (m.draws + 1)] = True
        self.is_plea = torch.tensor([effective_kind(m.config) == "plea" for m in members], device=device)
        self.centre = torch.tensor([int(m.shifted) for m in members], device=device)
        self._deltas: dict[str, Tensor] = {}

    def keep(self, rows: list[int]) -> None:
        """Go on with the members at `rows` only."""
        self._stack([self.members[k] for k in rows])

    def _draw(self) -> dict[str, Tensor]:
        """Each run's perturbations `[K, P-1, *shape]`, drawn from its own generator (`Draws`' order)."""
        deltas = self._deltas
        for n in self.smoothed:  # one buffer, kept: a fresh one each step costs its page faults on a CPU
            shape = (len(self.members), self.points - 1, *self.params[n].shape[1:])
            if n not in deltas or deltas[n].shape != shape:
                deltas[n] = self.params[n].new_zeros(shape)  # rows of runs that leave the weight alone stay zero
        for k, m in enumerate(self.members):
            if m.draws:
                draw = Draws(m.fills(), {n: deltas[n][k, 0] for n in m.smoothed}, m.smoothed, m.draws, m.noise)
                for a in range(1, m.draws + 1):
                    draw.draw_into(a, {n: deltas[n][k, a - 1] for n in m.smoothed})
        return deltas

    def _losses(self, params: dict[str, Tensor], x: Tensor, y: Tensor, autocast, deltas=None, rows=None):
        """Per-point mean cross-entropies `[K, Q]`, in float32 or float64 (as `loss_precision`), and outputs; in
        training mode, so that BatchNorm moves the running statistics of the runs `rows` (default all), each from
        the point its step reports."""
        buffers = self.buffers if rows is None else {n: b[rows] for n, b in self.buffers.items()}
        with autocast():
            out = self.net(params, x, deltas, buffers=buffers, training=True, stats_point=self.centre)
        if rows is not None:  # indexing copied the rows: put their new statistics back
            for n, moved in buffers.items():
                self.buffers[n][rows] = moved
        k, q, b = out.shape[:3]
        targets = y.unsqueeze(1).expand(k, q, b).flatten()
        losses = F.cross_entropy(life.loss_precision(out).flatten(0, 2), targets, reduction="none")
        return losses.view(k, q, b).mean(2), out

    def step(self, x: Tensor, y: Tensor, autocast) -> tuple[Tensor, Tensor]:
        """One training step of every run on its batch (x `[K, B, ...]`, y `[K, B]`); returns the losses `[K]` and
        outputs `[K, B, classes]` at each run's reported point (the centre; noise: the shifted point), detached."""
        params, members = self.params, self.members
        losses, out = self._losses(params, x, y, autocast, self._draw() if self.smoothed else None)
        flat = torch.zeros_like(losses)  # the trainer's kernels are flat: every point has weight one
        own = aggregate("pla", losses, flat, mask=self.mask)  # eq 23; none, sam, noise: their one point
        loss = torch.where(self.is_plea, aggregate("plea", losses, flat, mask=self.mask), own)  # eq 22
        names = list(params)
        centre = None
        if any(m.config.probe_gradient == "centre" for m in members):  # ∇L(W), from the same forward
            centre = torch.autograd.grad(losses[:, 0].sum(), [params[n] for n in self.watched], retain_graph=True)
        grads = dict(zip(names, torch.autograd.grad(loss.sum(), [params[n] for n in names])))
        for k, m in enumerate(members):
            for n, p in m.model.named_parameters():
                p.grad = grads[n][k]
            probed = centre if m.config.probe_gradient == "centre" else [grads[n] for n in self.watched]
            m.probe.step(grads=[g[k] for g in probed])  # type: ignore[union-attr]
        sam = [k for k, m in enumerate(members) if m.sam]
        for k in sam:
            members[k].optimizer.first_step(zero_grad=True)  # type: ignore[attr-defined]  # to W + ρ g/|g|
        if sam:
            self._sam_gradients(sam, x, y, autocast)
        for m in members:
            if m.sam:
                m.optimizer.second_step()  # type: ignore[attr-defined]  # back to W, SGD with the gradient there
            else:
                m.optimizer.step()
        rows = torch.arange(len(members), device=losses.device)
        return losses[rows, self.centre].detach(), out[rows, self.centre].detach()

    def _sam_gradients(self, sam: list[int], x: Tensor, y: Tensor, autocast) -> None:
        """The plain loss's gradient at the SAM runs' ascended weights, into their parameters' `.grad`."""
        if len(sam) == len(self.members):
            params = self.params
        else:
            params = {n: p.detach()[sam].requires_grad_() for n, p in self.params.items()}
        losses, _ = self._losses(params, x[sam], y[sam], autocast, rows=None if params is self.params else sam)
        grads = dict(zip(params, torch.autograd.grad(losses[:, 0].sum(), list(params.values()))))
        for j, k in enumerate(sam):
            for n, p in self.members[k].model.named_parameters():
                p.grad = grads[n][j]

    def epoch(self, data: datasets.Dataset, autocast, steps_bar: bool = False) -> list[Member]:
        """Train every run one epoch (each its own next one) and evaluate; returns the members that ended."""
        started = time.time()
        members, device = self.members, self.params[self.watched[0]].device
        for m in members:
            m.rescope(data)
            for group in m.optimizer.param_groups:  # the schedule's rate for this epoch (a constant by default)
                group["lr"] = life.learning_rate(m.config, m.epoch)
        n = len(data.x_train)
        orders = torch.stack([life.epoch_order(m.config, n, m.epoch) for m in members]).to(device)
        augmented = data.augmented
        batch_size = members[0].config.batch_size
        steps = math.ceil(n / batch_size)
        loss_sum = torch.zeros(len(members), dtype=torch.float64, device=device)
        correct = torch.zeros(len(members), dtype=torch.int64, device=device)
        correct_clean = torch.zeros_like(correct)  # against the true labels, with label_noise
        ends = [life.window_ends(m.config, steps) for m in members]
        windows: list[list[dict]] = [[] for _ in members]
        for step in life.progress(range(steps), steps_bar, leave=False, unit="step"):
            index = orders[:, step * batch_size : (step + 1) * batch_size]
            if augmented:  # each run's own augmentation of its batch
                batches = [life.batch(m.config, data, i, m.epoch, step) for m, i in zip(members, index)]
                x, y = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
            else:
                x, y = data.x_train[index], data.y_train[index]
            centre, out = self.step(x, y, autocast)
            loss_sum += centre.double() * y.shape[1]  # on the device: no host sync per step
            correct += (out.argmax(-1) == y).sum(1)
            if data.y_train_clean is not None:
                correct_clean += (out.argmax(-1) == data.y_train_clean[index]).sum(1)
            for k, m in enumerate(members):
                if (at := m.epoch * steps + step + 1) in ends[k]:
                    windows[k].append({"step": at, "temperature": {w: list(v) for w, v in m.probe.epoch().items()}})
        test = self.evaluate(data.x_test, data.y_test, autocast)
        train = zip((loss_sum / n).tolist(), (correct.double() / n).tolist())
        clean = (correct_clean.double() / n).tolist() if data.y_train_clean is not None else None
        seconds = (time.time() - started) / len(members)
        ended, rows = [], []
        for k, (m, train_k, test_k) in enumerate(zip(members, train, test)):
            every = m.config.probe_every
            temperature = {} if every else m.probe.epoch()
            record = life.epoch_record(
                m.epoch + 1, train_k, test_k, temperature, windows[k] if every else None, seconds
            )
            if clean is not None:
                record["train_accuracy_clean"] = clean[k]
            if m.scoped:  # the radii this epoch trained with
                record["radii"] = dict(m.radius)  # type: ignore[arg-type]
            m.history.append(record)
            self._save(m, record)
            if m.epoch >= m.config.epochs or life.diverged(record):
                ended.append(m)
            else:
                rows.append(k)
        if ended and rows:
            self.keep(rows)
        elif ended:
            self.members = []
        return ended

    @staticmethod
    def _save(m: Member, record: dict) -> None:
        """The epoch's metrics line and checkpoint (the parameters copied out of the stack), TensorBoard."""
        assert m.store is not None
        m.store.append_metrics(record)
        model = {k: v.clone() for k, v in m.model.state_dict().items()}  # a view would save the whole stack
        life.checkpoint(m.store, m.history, model, m.optimizer.state_dict(), m.probe.state_dict(), m.noise.get_state())
        if m.writer is not None:
            life.log(m.writer, record)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, autocast) -> list[tuple[float, float, list[float]]]:
        """Each run's mean test loss and accuracy, and its accuracy on the test set's even and odd examples (the
        halves that `lifecycle.finish` selects an epoch on and reports at); the test set shared by all runs; one
        host sync."""
        k = len(self.members)
        loss = torch.zeros(k, dtype=torch.float64, device=x.device)
        correct = torch.zeros(k, 2, dtype=torch.int64, device=x.device)  # even, odd examples
        size = 2 * max(32, 512 // k)  # even: every chunk starts on an even example
        for start in range(0, len(x), size):
            with autocast():
                out = self.net(self.params, x[start : start + size], shared=True, buffers=self.buffers)[:, 0]
            target = y[start : start + size]
            losses = F.cross_entropy(life.loss_precision(out).flatten(0, 1), target.repeat(k), reduction="none")
            loss += losses.view(k, -1).double().sum(1)
            hits = out.argmax(-1) == target
            correct[:, 0] += hits[:, 0::2].sum(1)
            correct[:, 1] += hits[:, 1::2].sum(1)
        halves = correct.double() / torch.tensor([(len(x) + 1) // 2, len(x) // 2], device=x.device).clamp(min=1)
        accuracy = correct.sum(1).double() / len(x)
        return list(zip((loss / len(x)).tolist(), accuracy.tolist(), halves.tolist()))
