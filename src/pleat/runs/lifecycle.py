"""A run's lifecycle around its training, in five groups: its randomness, its device and precision, what it starts
from (data, network, optimiser), what each epoch leaves (record, checkpoint, logs; see `pleat.runs.store`), and how
it ends (divergence, early stopping, result). The training itself is `pleat.runs.train`."""

from __future__ import annotations

import contextlib
import hashlib
import math
import time

import torch
from torch import Tensor

from pleat.core.select import select
from pleat.probes.temperature import log_windows
from pleat.runs import data as datasets
from pleat.runs.config import Config
from pleat.runs.models import build
from pleat.runs.store import RunStore

# --- the run's randomness: every draw derives from its seed, so a run resumed or regrouped draws the same


def derive(seed: int, *tags) -> int:
    """A 63-bit seed for one purpose (noise, shuffling of an epoch, augmentation of a step) from the run's seed."""
    digest = hashlib.sha256(repr((seed, *tags)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def noise_generator(config: Config, device: torch.device) -> torch.Generator:
    """The generator of the run's perturbations (pla, plea, noise), on the training device."""
    return torch.Generator(device).manual_seed(derive(config.seed, "noise"))


def epoch_order(config: Config, n: int, epoch: int) -> Tensor:
    """The run's shuffle of its n training examples in `epoch` (0-based), on the CPU."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive(config.seed, "shuffle", epoch)))


def batch(config: Config, data: datasets.Dataset, index: Tensor, epoch: int, step: int) -> tuple[Tensor, Tensor]:
    """The examples `index` of the training set, augmented as the run's step `step` of `epoch` draws."""
    x = data.augment(data.x_train[index], derive(config.seed, "augment", epoch, step))
    return x, data.y_train[index]


# --- device and precision


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device': {name!r} asked for but CUDA is not available; use device=cpu")
    return device


PRECISIONS = {
    "float32": "float32",
    "float64": "float64",
    "bfloat16": "float32 weights, bfloat16 autocast",
    "tf32": "float32 weights, TF32 matmuls and convolutions on CUDA",
}


def parameter_dtype(config: Config) -> torch.dtype:
    return torch.float64 if config.dtype == "float64" else torch.float32


def autocast_for(config: Config, device: torch.device):
    """A context factory: bfloat16 autocast for dtype = bfloat16, TF32 matmuls and convolutions for tf32 (CUDA
    only; the flags are restored on exit), else nothing."""
    if config.dtype == "bfloat16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if config.dtype == "tf32" and device.type == "cuda":
        return _tf32
    return contextlib.nullcontext


@contextlib.contextmanager
def _tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def loss_precision(out: Tensor) -> Tensor:
    """Logits in the precision a loss is taken in: float64 stays, anything else (bfloat16 autocast) float32."""
    return out if out.dtype == torch.float64 else out.float()


# --- what a run starts from: data, network, optimiser, schedule


def load_data(config: Config, device: torch.device) -> datasets.Dataset:
    """The config's dataset on `device`, images in the run's dtype."""
    data = datasets.load(
        config.dataset,
        config.data_dir or None,
        device=device,
        train_subset=config.train_subset,
        test_subset=config.test_subset,
    )
    dtype = parameter_dtype(config)
    data.x_train, data.x_test = data.x_train.to(dtype), data.x_test.to(dtype)
    if config.normalize:  # per channel, from the training images the run trains on
        dims = [0, *range(2, data.x_train.dim())]
        mean, std = data.x_train.mean(dim=dims, keepdim=True), data.x_train.std(dim=dims, keepdim=True)
        data.x_train, data.x_test = (data.x_train - mean) / std, (data.x_test - mean) / std
    if config.augment:
        data.pipeline = "crop-flip"
    if config.label_noise:
        data.y_train_clean = data.y_train
        data.y_train = noisy_labels(config, data.y_train, data.classes)
    return data


def noisy_labels(config: Config, labels: Tensor, classes: int) -> Tensor:
    """`labels` with the fraction `label_noise` of them (rounded to whole examples, chosen at random) replaced by a
    class drawn uniformly from all `classes`; drawn on the CPU from the run's seed alone, so that every arm and
    every device of a seed trains on the same labels."""
    generator = torch.Generator().manual_seed(derive(config.seed, "label_noise"))
    n = len(labels)
    replaced = torch.randperm(n, generator=generator)[: round(config.label_noise * n)]
    noisy = labels.cpu().clone()
    noisy[replaced] = torch.randint(classes, (len(replaced),), generator=generator)
    return noisy.to(labels.device)


def check_layers(config: Config) -> None:
    """Raise ValueError (listing the model's layers) when `config.layers` selects nothing of its model: built on
    the meta device, so that the check costs no memory and no data."""
    if config.kind == "none" or (config.kind == "sam" and not config.layers):
        return
    with torch.device("meta"):
        model = build(config.model, config.activation)
    select(model, list(config.layers))


def init_model(config: Config, device: torch.device) -> torch.nn.Module:
    """The run's initial network: Kaiming draws from torch's generator seeded with the run's seed inside
    `fork_rng`, so that the caller's RNG is left untouched and the weights are those of every earlier version."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build(config.model, config.activation, config.init)
    return model.to(device=device, dtype=parameter_dtype(config))


def optimizer_for(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with the config's learning rate, momentum (no Nesterov) and weight decay; for kind sam wrapped in
    `pleat.core.sam.SAM`, whose ascent perturbs the parameters of `layers` (every parameter when `layers` is empty)."""
    sgd: dict = dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=False)
    if config.kind != "sam":
        return torch.optim.SGD(model.parameters(), **sgd)
    from pleat.core.sam import SAM

    perturbed = [model.get_parameter(s.name) for s in select(model, list(config.layers))] if config.layers else None
    return SAM(model.parameters(), torch.optim.SGD, rho=config.radius, perturbed=perturbed, **sgd)


def learning_rate(config: Config, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based): constant, or cosine from lr down to 0 over the epochs."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    return config.lr


# --- what each epoch leaves: its record, checkpoint, logs and progress


def epoch_record(
    epoch: int, train: tuple[float, float], test: tuple, temperature: dict, windows, seconds: float
) -> dict:
    """One line of metrics.jsonl: `epoch` is 1-based; test is (loss, accuracy[, accuracy on the even and the odd
    test examples]); windows is None unless probe_every is set."""
    return {
        "epoch": epoch,
        "train_loss": train[0],
        "train_accuracy": train[1],
        "test_loss": test[0],
        "test_accuracy": test[1],
        **({"test_accuracy_halves": list(test[2])} if len(test) > 2 else {}),
        "temperature": {k: list(v) for k, v in temperature.items()},
        **({"windows": windows} if windows is not None else {}),
        "seconds": seconds,
    }


def window_ends(config: Config, steps_per_epoch: int) -> set[int] | range:
    """The global steps (1-based) at which a probe window closes: every probe_every steps, or log-spaced."""
    total = config.epochs * steps_per_epoch
    if config.probe_windows == "log":
        return set(log_windows(config.probe_every, total))
    return range(config.probe_every, total + 1, config.probe_every) if config.probe_every else range(0)


def checkpoint(store: RunStore, history: list[dict], model: dict, optimizer: dict, probe: dict, noise: Tensor):
    """Save the state a resumed run needs after the last epoch of `history` (the format `resume` reads)."""
    state = {"epoch": len(history), "model": model, "optimizer": optimizer, "probe": probe, "rng": {"noise": noise}}
    store.save_checkpoint({**state, "metrics": history}, len(history))


def resume(store: RunStore, device: torch.device, model, optimizer, probe, noise: torch.Generator) -> list[dict]:
    """Load the run's latest checkpoint into the given objects; returns the epochs it holds (empty: a fresh run).

    metrics.jsonl is rewritten to hold exactly those epochs, dropping one logged after the last checkpoint.
    """
    state = store.load_checkpoint(device)
    history: list[dict] = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        probe.load_state_dict(state["probe"])
        noise.set_state(state["rng"]["noise"].cpu())
        history = state["metrics"]
    store.rewrite_metrics(history)
    return history


def log(writer, record: dict) -> None:
    """One epoch's metrics into a TensorBoard writer."""
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        writer.add_scalar(key, record[key], record["epoch"])
    for layer, (mean, std) in record["temperature"].items():
        writer.add_scalars(f"temperature/{layer}", {"signal": mean, "noise": std}, record["epoch"])


def tensorboard(store: RunStore, start_epoch: int):
    """A TensorBoard writer into the run's folder, dropping any events logged after `start_epoch`."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("tensorboard = true needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(str(store.dir / "tensorboard"), purge_step=start_epoch + 1)


def progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


# --- how a run ends: divergence, early stopping, the result


def diverged(record: dict) -> bool:
    return not math.isfinite(record["train_loss"])


# the end of training, as a mean over the last epochs: where a net memorises noisy labels its test accuracy swings
# by several points from one epoch to the next, so one epoch's value is a draw, not a level
FINAL_EPOCHS = 10


def selection(history: list[dict]) -> dict:
    """Early stopping without the test set it reports on: the epoch of best accuracy on the even test examples,
    and the accuracy on the odd ones at that epoch (ties: the earliest epoch); and the mean test accuracy over
    the last `FINAL_EPOCHS` epochs. Runs older than the halves' record give only the mean."""
    accs = [r["test_accuracy"] for r in history]
    chosen = {"final_mean_test_accuracy": sum(accs[-FINAL_EPOCHS:]) / len(accs[-FINAL_EPOCHS:])}
    if all("test_accuracy_halves" in r for r in history):
        selecting = [r["test_accuracy_halves"][0] for r in history]
        epoch = max(range(len(history)), key=selecting.__getitem__)
        chosen["selected_epoch"] = epoch + 1
        chosen["selected_test_accuracy"] = history[epoch]["test_accuracy_halves"][1]
    return chosen


def finish(store: RunStore, history: list[dict], started: float) -> dict:
    """Write and return the run's result: best and final test accuracy, the early-stopped one (`selection`), and
    the epoch it diverged at, if it did."""
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
        **selection(history),
        **{f"final_{k}": v for k, v in history[-1].items() if k == "train_accuracy_clean"},
        "seconds_this_session": time.time() - started,
    }
    if diverged(history[-1]):
        result["diverged"] = len(history)
    store.finish(result)
    return result
