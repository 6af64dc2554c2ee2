"""Overhead of the layer-temperature probe as a fraction of a plain training step (paper MLP, CPU by default).

Run:  python benchmarks/probes.py [--device cuda] [--repeats 200]

Prints, for each estimator ("layer", and "weight": per-weight Welford buffers, Figure 1's decisive budget), the
overhead in context: training steps with and without probe.step(), timed round-robin in one process (median of
each). Also the time of probe.step() alone, called repeatedly on the same gradients: a lower bound, since those
gradients then sit in cache. Target: below 3% for "layer"; "weight" reads and writes two buffers per weight.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import pleat
from pleat.runs.models import fc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = fc(2).to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(256, 1, 28, 28, device=args.device)
    t = torch.randint(0, 10, (256,), device=args.device)
    print(f"paper MLP 784-784-784-10, batch 256, {args.device}, torch {torch.__version__}")
    for estimator in ("layer", "weight"):
        probe = pleat.LayerTemperature(model, estimator=estimator)

        def step(with_probe: bool) -> float:
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), t).backward()
            if with_probe:
                probe.step()  # noqa: B023 (the probe of this loop's turn, called within it)
            opt.step()
            if args.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

        for _ in range(10):
            step(False), step(True)
        plain, probed = [], []
        for _ in range(args.repeats):
            plain.append(step(False))
            probed.append(step(True))
        probe.epoch()
        alone = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            probe.step()
            if args.device == "cuda":
                torch.cuda.synchronize()
            alone.append(time.perf_counter() - start)
        p, q, a = statistics.median(plain), statistics.median(probed), statistics.median(alone)
        print(
            f"{estimator:>6}: plain step {p * 1e3:.2f} ms, with probe.step() {q * 1e3:.2f} ms: "
            f"overhead {100 * (q / p - 1):+.1f}%; probe.step() alone, gradients in cache: {a * 1e3:.3f} ms "
            f"= {100 * a / p:.1f}% of a plain step"
        )


if __name__ == "__main__":
    main()
