"""The layer temperature as a Lightning callback: logged to the loggers a Lightning run already has.

    from pleat.integrations.lightning import LayerTemperatureCallback
    trainer = lightning.Trainer(callbacks=[LayerTemperatureCallback(estimator="weight")], ...)

Needs `lightning` (`pip install 'torch-pleat[lightning]'`); the core of pleat never imports it.
"""

from __future__ import annotations

import lightning.pytorch as pl

from pleat.core.select import LayerSpec
from pleat.integrations import as_metrics
from pleat.probes.regimes import Regimes, regimes
from pleat.probes.temperature import LayerTemperature


class LayerTemperatureCallback(pl.Callback):
    """Read each optimiser step's gradients (after accumulation and AMP unscaling) into a `LayerTemperature`;
    close a window at every epoch's end, or every `every_n_steps` optimiser steps, and log it with
    `pl_module.log_dict`. At the end of training `self.regimes` holds `pleat.regimes` of the windows (with 5 or more).

    Args:
        layers: which weight layers, as in `pleat.LayerTemperature` (None: every one).
        estimator: "layer" or "weight" (see `pleat.LayerTemperature`).
        every_n_steps: window length in optimiser steps; None: one window per epoch.
    """

    def __init__(
        self, layers: LayerSpec | list | None = None, estimator: str = "layer", every_n_steps: int | None = None
    ):
        self.layers, self.estimator, self.every_n_steps = layers, estimator, every_n_steps
        self.probe: LayerTemperature | None = None
        self.steps: list[float] = []  # the global step at which each window closed
        self.regimes: Regimes | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.probe = LayerTemperature(pl_module, self.layers, estimator=self.estimator)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        assert self.probe is not None
        self.probe.step()
        if self.every_n_steps and self.probe.count == self.every_n_steps:
            self._close(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        enough = 2 if self.estimator == "weight" else 1  # a per-weight std needs two minibatches
        if self.every_n_steps is None and self.probe is not None and self.probe.count >= enough:
            self._close(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.probe is not None and len(self.probe.history) >= 5:
            self.regimes = regimes(self.probe.history, times=self.steps)

    def _close(self, trainer, pl_module) -> None:
        assert self.probe is not None
        record = self.probe.epoch()
        self.steps.append(trainer.global_step + 1)
        by_step = self.every_n_steps is not None
        pl_module.log_dict(as_metrics(record), on_step=by_step, on_epoch=not by_step)
