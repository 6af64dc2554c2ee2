"""PLA on the classification head of a torchvision ResNet-18, in a plain training loop, with the layer temperature.

    python examples/resnet_head.py [--steps 4]

Random 32x32 images stand in for a dataset; the network is built without downloading weights.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision

import pleat


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    obj = pleat.PartialLocalEntropy(model, F.cross_entropy, layers=["fc"], radius=0.01, samples=4)
    print(obj.describe())  # what is smoothed: the head's 512x10 weight matrix
    probe = pleat.LayerTemperature(model, layers=["layer4.*", "fc"])  # patterns pick convolutions, not BatchNorms
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(args.steps):
        x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
        opt.zero_grad()
        loss = obj(x, y)
        loss.backward()
        probe.step()
        opt.step()
        losses.append(obj.last.centre_loss.item())
    window = probe.epoch()
    print(f"centre loss {losses[0]:.3f} -> {losses[-1]:.3f}; temperature of fc: {window['fc'][0]:.2e}")
    return {"losses": losses, "temperature": window}


if __name__ == "__main__":
    main()
