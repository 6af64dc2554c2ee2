"""PLA on the last hidden layer of an MLP, trained by Lightning, with the layer temperature logged by a callback.

    python examples/lightning_pla.py [--epochs 2] [--out lightning_logs]

Synthetic data (a random linear teacher), so that it runs anywhere in seconds; swap in your own DataLoader.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

import pleat
from pleat.integrations.lightning import LayerTemperatureCallback


class SmoothedClassifier(pl.LightningModule):
    def __init__(self, radius: float = 0.01, samples: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
        # smooth the second weight layer only: the partial local average of eq 23
        self.objective = pleat.PartialLocalEntropy(
            self.net, F.cross_entropy, layers=[2], radius=radius, samples=samples
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.objective(x, y)  # Lightning calls backward on it: .grad is the smoothed loss's gradient
        self.log("train/loss_at_centre", self.objective.last.centre_loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def data(n: int = 512, seed: int = 0) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x @ torch.randn(20, 5, generator=g)).argmax(1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True, generator=g)


def main(argv=None) -> LayerTemperatureCallback:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="lightning_logs")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    probe = LayerTemperatureCallback(every_n_steps=2)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(args.out),
        callbacks=[probe],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(SmoothedClassifier(), data())
    print(f"logged {len(probe.probe.history)} temperature windows to {trainer.logger.log_dir}")
    return probe


if __name__ == "__main__":
    main()
