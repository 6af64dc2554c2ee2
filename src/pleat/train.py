"""One training run of the paper's protocol, resumable and exactly reproducible (see `pleat.store`)."""

from __future__ import annotations

import contextlib
import hashlib
import time

import torch
import torch.nn.functional as F

from pleat import data as datasets
from pleat.config import Config
from pleat.kernels import Gaussian
from pleat.models import build
from pleat.objective import PartialLocalEntropy
from pleat.select import select
from pleat.store import RunStore, environment
from pleat.temperature import LayerTemperature


def derive(seed: int, *tags) -> int:
    """A 63-bit seed for one purpose (noise, shuffling of an epoch, augmentation of a step) from the run's seed."""
    digest = hashlib.sha256(repr((seed, *tags)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device': {name!r} asked for but CUDA is not available; use device=cpu")
    return device


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


@torch.no_grad()
def evaluate(model, x, y, batch_size: int = 1024, autocast=contextlib.nullcontext) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` (in eval mode) on (x, y)."""
    was = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), batch_size):
        with autocast():
            out = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += F.cross_entropy(out.float(), target, reduction="sum").double()
        correct += (out.argmax(1) == target).sum()
    model.train(was)
    return float(loss) / len(x), float(correct) / len(x)


def train(config: Config) -> dict:
    """Run (or resume, or skip if finished) the run of `config`; returns its result.

    Every epoch appends training loss and accuracy (at the centre point of the objective), test loss and accuracy
    and the layer temperatures to the store, then checkpoints; a finished run is not trained again.
    """
    device = resolve_device(config.device)
    store = RunStore(config)
    if store.finished:
        return store.result()
    with store.lock():
        return store.result() if store.finished else _train(config, store, device)


def _train(config: Config, store: RunStore, device: torch.device) -> dict:
    data = datasets.load(
        config.dataset,
        config.data_dir or None,
        device=device,
        train_subset=config.train_subset,
        test_subset=config.test_subset,
    )
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    data.x_train, data.x_test = data.x_train.to(dtype), data.x_test.to(dtype)
    if config.dtype == "bfloat16":

        def autocast():
            return torch.autocast(device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    store.create(environment(device))

    torch.manual_seed(config.seed)
    model = build(config.model, config.activation).to(device=device, dtype=dtype)
    optimizer = _optimizer(config, model)
    noise = torch.Generator(device).manual_seed(derive(config.seed, "noise"))
    step = _step(config, model, optimizer, noise, autocast)
    probe = LayerTemperature(model)
    history: list[dict] = []
    start_epoch = 0
    state = store.load_checkpoint(device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        probe.load_state_dict(state["probe"])
        noise.set_state(state["rng"]["noise"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), device)
        history, start_epoch = state["metrics"], state["epoch"]
    store.rewrite_metrics(history)  # drop an epoch logged after the last checkpoint
    writer = _tensorboard(store, start_epoch) if config.tensorboard else None

    n = len(data.x_train)
    started = time.time()
    for epoch in _progress(
        range(start_epoch, config.epochs),
        config.progress,
        desc=f"run {store.dir.name}",
        unit="epoch",
        initial=start_epoch,
        total=config.epochs,
    ):
        epoch_start = time.time()
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive(config.seed, "shuffle", epoch)))
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        batches = order.to(device).split(config.batch_size)
        windows: list[dict] = []  # probe windows closed in this epoch (probe_every > 0)
        for step_index, index in enumerate(_progress(batches, config.progress, leave=False, unit="step")):
            x, y = data.x_train[index], data.y_train[index]
            x = data.augment(x, derive(config.seed, "augment", epoch, step_index))
            centre, out = step(x, y, probe)
            if config.probe_every and (global_step := epoch * len(batches) + step_index + 1) % config.probe_every == 0:
                windows.append({"step": global_step, "temperature": {k: list(v) for k, v in probe.epoch().items()}})
            loss_sum += centre.detach().double() * len(y)  # on the device: no host sync per step
            correct += (out.argmax(1) == y).sum()
        test_loss, test_accuracy = evaluate(model, data.x_test, data.y_test, autocast=autocast)
        temperature = {} if config.probe_every else probe.epoch()
        record = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / n,
            "train_accuracy": float(correct) / n,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "temperature": {k: list(v) for k, v in temperature.items()},
            **({"windows": windows} if config.probe_every else {}),
            "seconds": time.time() - epoch_start,
        }
        history.append(record)
        store.append_metrics(record)
        rng = {"noise": noise.get_state(), "torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        store.save_checkpoint(
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "probe": probe.state_dict(),
                "rng": rng,
                "metrics": history,
            },
            epoch + 1,
        )
        if writer is not None:
            for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
                writer.add_scalar(key, record[key], epoch + 1)
            for layer, (mean, std) in temperature.items():
                writer.add_scalars(f"temperature/{layer}", {"signal": mean, "noise": std}, epoch + 1)
    if writer is not None:
        writer.close()
    accs = [r["test_accuracy"] for r in history]
    best = max(range(len(accs)), key=accs.__getitem__)
    result = {
        "run": str(store.dir),
        "epochs": len(history),
        "best_test_accuracy": accs[best],
        "best_epoch": best + 1,
        "final_test_accuracy": accs[-1],
        "final_train_loss": history[-1]["train_loss"],
        "final_train_accuracy": history[-1]["train_accuracy"],
        "seconds_this_session": time.time() - started,
    }
    store.finish(result)
    return result


def _optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with the config's learning rate, momentum (no Nesterov) and weight decay; wrapped in SAM for kind sam."""
    sgd: dict = dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=False)
    if config.kind != "sam":
        return torch.optim.SGD(model.parameters(), **sgd)
    try:
        from pytorch_optimizer import SAM
    except ImportError as e:
        raise ImportError("kind = 'sam' needs pytorch-optimizer: pip install 'pleat[train]'") from e
    return SAM(model.parameters(), torch.optim.SGD, rho=config.radius, **sgd)


def _step(config: Config, model, optimizer, noise: torch.Generator, autocast):
    """The training step of the config's kind: `step(x, y, probe) -> (centre loss, centre output)`.

    It zeroes the gradients, computes the loss and its gradient, lets the probe read the gradient (pla/plea: of the
    smoothed loss, or ∇L(W) with probe_gradient = "centre"; noise: at W + ΔW; none/sam: at W), then updates the
    weights.
    """
    if config.kind in ("pla", "plea"):
        objective = PartialLocalEntropy(
            model,
            F.cross_entropy,
            layers=list(config.layers),
            radius=config.radius,
            samples=config.samples,
            kind=config.kind,
            sharpness=config.sharpness,
            generator=noise,
            engine=config.engine,
        )

        def forward(x, y):
            loss = objective(x, y)
            return loss, objective.last.centre_loss, objective.last.output

    elif config.kind == "noise" and config.radius > 0:
        names = [s.name for s in select(model, list(config.layers))]
        kernel = Gaussian(gamma=3 / config.radius**2)  # variance R²/3, as the box's

        def forward(x, y):
            params = dict(model.named_parameters())
            with torch.no_grad():
                shifts = {n: kernel.sample_(torch.empty_like(params[n]), noise) for n in names}
            # the shift is a constant: the gradient at W + ΔW lands on the parameters themselves
            out = torch.func.functional_call(model, {**params, **{n: params[n] + d for n, d in shifts.items()}}, x)
            loss = F.cross_entropy(out, y)
            return loss, loss, out

    else:

        def forward(x, y):
            out = model(x)
            loss = F.cross_entropy(out, y)
            return loss, loss, out

    def step(x, y, probe):
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss, centre, out = forward(x, y)
        grads = None
        if config.probe_gradient == "centre":  # ∇L(W): one more forward and backward (pleat's models have no BN)
            with autocast():
                plain = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(plain, probe.params)
        loss.backward()
        probe.step(grads=grads)
        if config.kind == "sam":
            optimizer.first_step(zero_grad=True)  # climb to W + ρ g/|g|
            with autocast():
                forward(x, y)[0].backward()
            optimizer.second_step()  # back to W, then the SGD step with the gradient taken up there
        else:
            optimizer.step()
        return centre.detach(), out

    return step


def _tensorboard(store: RunStore, start_epoch: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("tensorboard = true needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(str(store.dir / "tensorboard"), purge_step=start_epoch + 1)
