"""Step time and peak memory of pleat's objective against plain training and a naive loop over the points.

Run:  python benchmarks/objective.py                 # CPU, the table in the README
      python benchmarks/objective.py --device cuda   # on a GPU
      python benchmarks/objective.py --quick         # fewer repeats, MLP only

One training step = zero_grad, loss, backward, SGD-with-momentum step. "floor" is the vectorised step with its noise
copied from a bank drawn beforehand: what the step would cost with free random numbers. Every mode is timed
round-robin in one process (the machine is shared and noisy: ratios hold, absolute times do not); the median step
time of each mode is divided by plain training's. "naive" perturbs the weights in place and runs one forward and
backward per point (what SAM-style wrappers do). Extra peak memory: on CUDA the allocator's peak, on the CPU the
peak of live malloc memory (glibc's mallinfo2, sampled) in a fresh process running that mode alone; both minus what
was held before the first step, so they include gradients and momentum buffers.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F

import pleat
from pleat.runs.models import cnn_cifar10, fc

CASES = {  # name: (model factory, input shape, batch, smoothed layers)
    "mlp {1}": (lambda: fc(2), (1, 28, 28), 256, ["fc1"]),
    "mlp {2}": (lambda: fc(2), (1, 28, 28), 256, ["fc2"]),
    "mlp {1,2}": (lambda: fc(2), (1, 28, 28), 256, ["fc1", "fc2"]),
    "cnn head I": (cnn_cifar10, (3, 32, 32), 256, ["head1"]),
    "cnn head II": (cnn_cifar10, (3, 32, 32), 256, ["head2"]),
}
MODES = ("plain", "naive", "vectorised", "sequential", "floor")
SAMPLES, RADIUS = 4, 0.01


class PreDrawn:
    """A kernel that copies noise drawn once beforehand: the vectorised step without its RNG, the floor."""

    flat = True
    variance = RADIUS**2 / 3

    def __init__(self, model, layers, device):
        self.bank = {
            tuple(p.shape): torch.empty_like(p).uniform_(-RADIUS, RADIUS)
            for p in (model.get_parameter(s.name) for s in pleat.select(model, layers))
        }

    def sample_(self, out, generator):
        return out.copy_(self.bank[tuple(out.shape)])

    def log_weight(self, delta):
        return delta.new_zeros(())


def make_step(case: str, mode: str, device: str):
    """A closure running one training step of `mode` on `case`."""
    factory, shape, batch, layers = CASES[case]
    torch.manual_seed(0)
    model = factory().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(batch, *shape, device=device)
    t = torch.randint(0, 10, (batch,), device=device)
    g = torch.Generator(device).manual_seed(0)
    if mode in ("vectorised", "sequential", "floor"):
        kernel = PreDrawn(model, layers, device) if mode == "floor" else pleat.Box(RADIUS)
        engine = "vectorised" if mode == "floor" else mode
        obj = pleat.PartialLocalEntropy(
            model, F.cross_entropy, layers=layers, kernel=kernel, samples=SAMPLES, generator=g, engine=engine
        )

        def loss_backward():
            obj(x, t).backward()
    elif mode == "naive":
        weights = [model.get_parameter(s.name) for s in pleat.select(model, layers)]

        def loss_backward():
            for a in range(SAMPLES + 1):
                deltas = []
                if a:
                    with torch.no_grad():
                        for w in weights:
                            deltas.append(torch.empty_like(w).uniform_(-RADIUS, RADIUS, generator=g))
                            w.add_(deltas[-1])
                (F.cross_entropy(model(x), t) / (SAMPLES + 1)).backward()
                with torch.no_grad():
                    for w, d in zip(weights, deltas):
                        w.sub_(d)
    else:

        def loss_backward():
            F.cross_entropy(model(x), t).backward()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def time_case(case: str, device: str, repeats: int) -> dict[str, float]:
    steps = {m: make_step(case, m, device) for m in MODES}
    for s in steps.values():  # warm-up
        s()
        s()
    times = {m: [] for m in MODES}
    for _ in range(repeats):
        for m, s in steps.items():
            start = time.perf_counter()
            s()
            times[m].append(time.perf_counter() - start)
    return {m: statistics.median(v) for m, v in times.items()}


def peak_memory(case: str, mode: str, device: str) -> float:
    """Extra peak memory of `mode` over what the process held before its first step, in MiB."""
    if device == "cuda":
        step = make_step(case, mode, device)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            step()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    code = (
        f"import sys; sys.path.insert(0, {sys.path[0]!r}); import objective as b; "
        f"print(b.cpu_peak_in_this_process({case!r}, {mode!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _live_mib() -> float:
    """Bytes held by malloc right now (heap in use plus mmapped blocks): live memory, unlike the resident set."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def cpu_peak_in_this_process(case: str, mode: str) -> float:
    """Peak live malloc memory during 3 steps minus the live memory before them (MiB), sampled every 0.2 ms."""
    step = make_step(case, mode, "cpu")
    base, peak, running = _live_mib(), [0.0], [True]

    def watch():
        while running[0]:
            peak[0] = max(peak[0], _live_mib())
            time.sleep(0.0002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for _ in range(3):
        step()
    running[0] = False
    watcher.join()
    return max(peak[0], _live_mib()) - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps per mode (default: 15 MLP, 5 CNN)")
    parser.add_argument("--quick", action="store_true", help="MLP cases only, fewer repeats")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    cases = [c for c in CASES if not (args.quick and c.startswith("cnn"))]
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"pleat objective benchmark on {name}, torch {torch.__version__}; y = {SAMPLES}, batch 256, float32")
    print(
        f"{'case':<12} {'plain ms':>9} {'naive':>7} {'vectorised':>11} {'sequential':>11} {'floor (no RNG)':>15}   "
        f"{'extra peak MiB: plain':>22} {'naive':>6} {'vect.':>6} {'seq.':>6}"
    )
    for case in cases:
        repeats = args.repeats or (5 if case.startswith("cnn") else 3 if args.quick else 15)
        t = time_case(case, args.device, repeats)
        ratios = "".join(
            f"{t[m] / t['plain']:>{w}.2f}x"
            for m, w in (("naive", 6), ("vectorised", 10), ("sequential", 10), ("floor", 14))
        )
        mem = (
            ""
            if args.no_memory
            else "".join(
                f"{peak_memory(case, m, args.device):>{w}.0f}"
                for m, w in (("plain", 22), ("naive", 7), ("vectorised", 7), ("sequential", 7))
            )
        )
        print(f"{case:<12} {t['plain'] * 1e3:>9.1f} {ratios}   {mem}", flush=True)


if __name__ == "__main__":
    main()
