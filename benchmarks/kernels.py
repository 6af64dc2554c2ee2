"""What each kernel's draws cost, and what a smoothed step costs with each, as ratios to the hard box's.

Run:  python benchmarks/kernels.py                 # CPU, the table in the README
      python benchmarks/kernels.py --device cuda   # on a GPU

Draws: one perturbation of the paper MLP's 784x784 layer (float32). Steps: one PLA training step of fc2 on layer 2
(y = 4, batch 256, zero_grad, loss, backward, SGD with momentum). Every case is timed round-robin in one process
(the machine is shared and noisy: ratios hold, absolute times do not) and its median divided by the hard box's.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F

import pleat
from pleat.runs.models import fc

RADIUS, SHARPNESS = 0.01, 300.0  # kR = 3: a soft wall a third of the box wide
KERNELS = {
    "hard box": lambda: pleat.Box(RADIUS),
    "soft box (kernel draws)": lambda: pleat.Box(RADIUS, SHARPNESS),
    "soft box (uniform, weighted)": lambda: pleat.Box(RADIUS, SHARPNESS, sampling="uniform"),
    "gaussian": lambda: pleat.Gaussian(gamma=3 / RADIUS**2),  # the hard box's variance
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def round_robin(cases: dict, repeats: int, device: torch.device) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def draw_cases(device: torch.device) -> dict:
    out = torch.empty(784, 784, device=device)
    generator = torch.Generator(device).manual_seed(0)
    kernels = {name: make() for name, make in KERNELS.items()}
    return {name: functools.partial(k.sample_, out, generator) for name, k in kernels.items()}


def step_cases(device: torch.device) -> dict:
    x = torch.rand(256, 1, 28, 28, device=device)
    t = torch.randint(0, 10, (256,), device=device)
    cases = {}
    for name, make in KERNELS.items():
        torch.manual_seed(0)
        model = fc(2).to(device)
        obj = pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[2], kernel=make(), samples=4, kind="pla")
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step(obj=obj, optimizer=optimizer):
            optimizer.zero_grad()
            obj(x, t).backward()
            optimizer.step()

        cases[name] = step
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for title, cases in (("draw of one 784x784 layer", draw_cases(device)), ("PLA step, fc2 {2}", step_cases(device))):
        for run in cases.values():  # warm-up
            run()
        median = round_robin(cases, args.repeats, device)
        base = median["hard box"]
        print(f"\n{title}: median, and ratio to the hard box")
        for name, seconds in median.items():
            print(f"  {name:30s} {seconds * 1e3:8.2f} ms  {seconds / base:5.2f}x")


if __name__ == "__main__":
    main()
