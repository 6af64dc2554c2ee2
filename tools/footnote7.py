"""Footnote 7 of the paper, measured: can the weights of one layer share one temperature?

Trains the paper's 2-layer net (fc2, Fashion-MNIST, plain SGD at the protocol of Figure 3: lr 1e-4, momentum 0.9,
batch 256, Kaiming init) and, at a few points of training, reads two consecutive windows of W steps with the
per-weight probe. `pleat.probes.temperature.temperature_correlation` gives, per layer, the correlation across its
weights of their gradient variances in the two windows: about 0 (within a few 1/sqrt(weights)) if the layer's
weights share one temperature, larger the more some weights stay hotter than others.

    PLEAT_DATA=data python tools/footnote7.py [--epochs 10] [--window 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

import pleat
from pleat.probes.temperature import temperature_correlation
from pleat.runs.data import load
from pleat.runs.models import build


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of training (default 10)")
    parser.add_argument("--window", type=int, default=100, help="steps per window (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-subset", type=int, default=0, help="training examples (0: all 60,000)")
    args = parser.parse_args(argv)
    data = load("fashion-mnist", train_subset=args.train_subset, test_subset=100)
    torch.manual_seed(args.seed)
    model = build("fc2")
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    probe = pleat.LayerTemperature(model, estimator="weight")
    n = len(data.y_train)
    steps_per_epoch = n // 256
    total = args.epochs * steps_per_epoch
    # measure at the start, after one epoch and at the end: two consecutive windows each
    starts = sorted({0, steps_per_epoch, max(0, total - 2 * args.window)})
    measured, windows, step = {}, [], 0
    g = torch.Generator().manual_seed(args.seed)
    while step < total:
        order = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * 256 : (i + 1) * 256]
            opt.zero_grad()
            F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            start = next((s for s in starts if s <= step < s + 2 * args.window), None)
            if start is not None:
                probe.step()
                if (step - start + 1) % args.window == 0:
                    windows.append(probe.variances())
                    probe.epoch()
                    if len(windows) == 2:
                        # also among the weights with some noise in both windows only: a weight of a dead unit or
                        # of an always-blank pixel has variance 0 in both, a temperature of its own, but a trivial one
                        live = {k: (windows[0][k] > 0) & (windows[1][k] > 0) for k in windows[0]}
                        alive = [{k: w[k][live[k]] for k in w} for w in windows]
                        measured[start] = (temperature_correlation(*windows), temperature_correlation(*alive))
                        windows = []
            opt.step()
            step += 1
            if step >= total:
                break
    sizes = {name: p.numel() for name, p in model.named_parameters() if name.endswith("weight")}
    print(f"fc2, Fashion-MNIST, plain SGD lr 1e-4, seed {args.seed}: correlation across each layer's weights of")
    print(f"their gradient variances in two consecutive windows of {args.window} steps (0 = one temperature)")
    layers = list(next(iter(measured.values()))[0])
    print("from step   " + "  ".join(f"{name + ' (all, live)':>22}" for name in layers))
    for start, (r, live) in measured.items():
        print(f"{start:>9}   " + "  ".join(f"{r[name]:>14.3f}, {live[name]:>6.3f}" for name in layers))
    noise = {name: 1 / math.sqrt(sizes[f"{name}.weight"]) for name in layers}
    print("1/sqrt(n)   " + "  ".join(f"{noise[name]:>22.4f}" for name in layers))
    return measured


if __name__ == "__main__":
    main()
