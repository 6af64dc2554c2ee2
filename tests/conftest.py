import copy
import gzip
import hashlib
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pleat

pytest_plugins = ["pytester"]  # tests/test_ci.py runs this conftest on a made-up test file


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


# Under CI=true the only skips allowed are what a CPU machine cannot have; anything else that skips (a missing extra,
# a missing file) fails the run, so a missing install step cannot turn into a green run.
ALLOWED_SKIPS_IN_CI = ("needs CUDA", "chromium")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, which allows only {ALLOWED_SKIPS_IN_CI}: {reason}"


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


# --- the real data, and data the tests make -------------------------------------------------------------------------

SHARED = Path(os.environ.get("PLEAT_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
HAS_DATA = (SHARED / "FashionMNIST" / "raw").exists()
if not HAS_DATA and os.environ.get("CI") == "true":  # CI must not pass by skipping what needs the real files
    raise RuntimeError(f"CI=true but Fashion-MNIST is not in {SHARED}: set PLEAT_DATA to the datasets folder")
needs_data = pytest.mark.skipif(not HAS_DATA, reason="Fashion-MNIST not present (set PLEAT_DATA)")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion(root: Path, n_train: int = 2000, n_test: int = 1000) -> dict[str, str]:
    """Fashion-MNIST files in the official format (IDX, gzip) under root/FashionMNIST/raw, of learnable made-up
    images: a fixed random template per class under pixel noise. Returns the files' md5s."""
    rng = np.random.default_rng(0)
    templates = rng.random((10, 28, 28)) > 0.6
    folder = root / "FashionMNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = np.clip(templates[labels] * 160 + rng.normal(48, 40, (n, 28, 28)), 0, 255)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}


@pytest.fixture(scope="session")
def _fashion_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    return root, write_fashion(root)


@pytest.fixture
def fashion(_fashion_files, monkeypatch) -> Path:
    """A data folder of made-up Fashion-MNIST files (`write_fashion`), accepted by this process's md5 check: the
    trainer's tests against the naive loop run on it everywhere, with or without the real files."""
    from pleat.runs import data

    root, md5 = _fashion_files
    tables = data._files

    def files(name):  # torchvision's tables, with these files' own checksums for Fashion-MNIST
        folder, sums, splits = tables(name)
        return (folder, md5, splits) if name == "fashion-mnist" else (folder, sums, splits)

    monkeypatch.setattr(data, "_files", files)
    return root


def strip(records):
    """Metrics records without their wall-clock times."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def small_run_flags(tmp_path, epochs: int, data_dir=SHARED) -> list[str]:
    """`pleat train` flags of a seconds-long run, stored under tmp_path."""
    flags = dict(epochs=epochs, train_subset=300, test_subset=100, lr=0.01, data_dir=data_dir, out_dir=tmp_path)
    return [*(x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))), "--progress", "false"]


# --- closed forms ---------------------------------------------------------------------------------------------------


class Quadratic(nn.Module):
    """loss = ½ (W - W*)ᵀ A (W - W*) over the weight of one Linear: a closed-form Hessian."""

    def __init__(self, n=12):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(n, 1, bias=False).double()
        b = torch.randn(n, n, generator=g, dtype=torch.float64)
        self.register_buffer("A", b @ b.T / n)
        self.register_buffer("w0", torch.randn(n, generator=g, dtype=torch.float64))

    def forward(self, x):
        d = self.lin.weight[0] - self.w0
        return 0.5 * d @ self.A @ d + 0 * x.sum()


def synthetic(shared=True, T=200, t_peak=10, t_cross=12, t_on=40, alpha=0.5, tau=20.0, noise=0.01, seed=0):
    """Curves with known breakpoints: a common rise to t_peak, noise above signal from t_cross, layer-specific
    drifts until t_on, then ln s_I = c_I - (t/τ)^α (or, when not shared, a different decay per layer)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    offsets = [0.0, -1.0, 0.7]
    drifts = [0.9, -0.6, 0.3]
    history = [{} for _ in range(T)]
    for i, name in enumerate(["fc1", "fc2", "out"]):
        if shared:
            f = -((t / tau) ** alpha)
        else:
            f = -((t / [20.0, 60.0, 5.0][i]) ** [0.5, 0.9, 0.3][i])
        drift = torch.where(t < t_on, drifts[i] * (0.5 + 0.5 * (t_on - t) / t_on), torch.zeros_like(t))
        rise = 2 * torch.log(torch.clamp(t / t_peak, max=1.0))
        log_s = offsets[i] + f + drift + rise + noise * torch.randn(T, generator=g, dtype=torch.float64)
        s = log_s.exp()
        std = s * torch.where(t < t_cross, 0.3, 3.0)
        for k in range(T):
            history[k][name] = (float(s[k]), float(std[k]))
    return history


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc), children first."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def kill_driver(proc, timeout: float = 60.0) -> None:
    """SIGKILL `proc` alone and wait until its workers have died with it (PR_SET_PDEATHSIG), not a fixed sleep."""
    workers = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while not all(gone(w) for w in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their killed driver"
        time.sleep(0.01)
