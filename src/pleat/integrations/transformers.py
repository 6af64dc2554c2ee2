"""The layer temperature as a Hugging Face `TrainerCallback`: logged with the Trainer's own logs, to its reporters.

    from pleat.integrations.transformers import LayerTemperatureCallback
    trainer = transformers.Trainer(model=model, args=args, ...)
    LayerTemperatureCallback(estimator="weight").attach(trainer)

`attach` puts the callback first: a Trainer hands one `logs` dict to its callbacks in order, and its reporting
callbacks (TensorBoard, W&B, ...) come before any added by `Trainer(callbacks=...)` or `add_callback`, so a callback
added there would add its numbers after the reporters have written theirs.

Needs `transformers` (`pip install 'torch-pleat[hf]'`); the core of pleat never imports it.
"""

from __future__ import annotations

import transformers

from pleat.core.select import LayerSpec
from pleat.integrations import as_metrics
from pleat.probes.regimes import Regimes, regimes
from pleat.probes.temperature import LayerTemperature


class LayerTemperatureCallback(transformers.TrainerCallback):
    """Read each optimiser step's gradients (after accumulation, before the step) into a `LayerTemperature`; at
    every logging step close the window and add it to the Trainer's logs as temperature/<layer>/signal and
    .../noise. At the end of training `self.regimes` holds `pleat.regimes` of the windows (with 5 or more).

    Args:
        layers: which weight layers, as in `pleat.LayerTemperature` (None: every one).
        estimator: "layer" or "weight" (see `pleat.LayerTemperature`).
    """

    def __init__(self, layers: LayerSpec | list | None = None, estimator: str = "layer"):
        self.layers, self.estimator = layers, estimator
        self.probe: LayerTemperature | None = None
        self.steps: list[float] = []
        self.regimes: Regimes | None = None

    def attach(self, trainer: transformers.Trainer) -> LayerTemperatureCallback:
        """Add this callback to `trainer` ahead of its reporters (see the module docstring); returns it."""
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.probe = LayerTemperature(model, self.layers, estimator=self.estimator)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.probe is not None:
            self.probe.step()

    def on_log(self, args, state, control, logs=None, **kwargs):
        enough = 2 if self.estimator == "weight" else 1
        if self.probe is None or logs is None or self.probe.count < enough:
            return
        logs.update(as_metrics(self.probe.epoch()))
        self.steps.append(float(max(1, state.global_step)))

    def on_train_end(self, args, state, control, **kwargs):
        if self.probe is not None and len(self.probe.history) >= 5:
            self.regimes = regimes(self.probe.history, times=self.steps)
