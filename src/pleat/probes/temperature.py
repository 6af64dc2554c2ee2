"""The layer temperature s_I (eq 2) and its noise across minibatches, accumulated on the device."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pleat.core.select import LayerSpec, select, unwrapped


@torch.no_grad()
def welford_(mean: Tensor, m2: Tensor, value: Tensor, count: int) -> None:
    """Welford's update, in place: the running mean and sum of squared deviations after the `count`-th value."""
    delta = value - mean
    mean.add_(delta, alpha=1 / count)
    # delta · (value - new mean) = delta² (count - 1) / count: one fused pass, no second temporary (3x faster on a CPU)
    m2.addcmul_(delta, delta, value=(count - 1) / count)


ESTIMATORS = ("layer", "weight")


class LayerTemperature:
    """Per-layer training signal and its noise across the minibatches of a window (eq 2 and Figure 1).

    Two estimators of the same idea:
    - `"layer"` (default; the paper's eq 2 read literally): s_I = (1/N_I) Σ_{ω∈Ω_I} |∂L/∂ω| per minibatch; the
      window gives (mean of s_I, std of s_I across its minibatches). The std is that of an average over N_I weights
      (614,656 for a 784-wide layer), so it barely moves: over the quick Figure 1 runs its ratio to the signal has a
      median of 0.12-0.17 and never passes 0.40. It can never show the noise overtaking the signal.
    - `"weight"` (the statistic of the paper's reference [33], whose transition Figure 1 describes): per weight, the
      mean gradient over the window's L minibatches against its fluctuation, as norms over the layer scaled to a
      per-weight size: signal = sqrt(<m_ω²> - <v_ω>/L), the RMS of the mean gradient with the part its own noise
      adds removed (E m_ω² = drift² + v_ω/L), and noise = sqrt(<v_ω>), with v_ω the unbiased variance across the
      window and <.> the mean over the layer's weights. Both estimate quantities that do not depend on L, so windows
      of any length (log-spaced ones, `log_windows`) give comparable numbers; a plain |mean| would
      carry a floor of about std·sqrt(2/(πL)) and an L-dependent crossing. A signal below its own resolution
      (the debiased square under its standard error, about <v_ω>/L·sqrt(2/N_I)) is reported at that resolution.
      The noise overtakes the signal when the drift common to the minibatches falls below their disagreement. It
      keeps two buffers of each watched weight's size (Welford's running mean and squared deviations, in the
      gradient's dtype) on the device; a window needs 2 steps or more.

    Call `step()` after each backward (and after `scaler.unscale_(optimizer)` when using a GradScaler, or pass
    the scale). Values are accumulated on the gradients' device with Welford's updates: no host synchronisation per
    step. `epoch()` closes the window: it returns {layer name: (signal, noise)} (the "layer" std with ddof=0, as
    numpy's default; one host sync) and appends it to `history`.

    Args:
        model: the network, or a DistributedDataParallel wrapper (read after the all-reduce).
        layers: which weight layers, as in `PartialLocalEntropy`; None: every weight layer (Linear/Conv).
        estimator: "layer" or "weight" (above).
    """

    def __init__(self, model: nn.Module, layers: LayerSpec | list | None = None, estimator: str = "layer"):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        module = unwrapped(model)
        self.selected = select(module, layers)
        params = dict(module.named_parameters())
        self.params = [params[s.name] for s in self.selected]
        self.names = [s.module_name for s in self.selected]
        self.estimator = estimator
        self.history: list[dict[str, tuple[float, float]]] = []
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None  # layer: [layers], float64, on the device
        self._m2: Tensor | None = None
        self._weights: list[tuple[Tensor, Tensor]] = []  # weight: (mean, m2) per layer, the layer's shape

    @torch.no_grad()
    def step(self, scale: float | Tensor | None = None, grads: list[Tensor] | None = None) -> Tensor:
        """Record s_I for the current gradients; returns them as a `[layers]` tensor on the device.

        Args:
            scale: the factor the gradients are multiplied by (a GradScaler's `get_scale()`, or its scale tensor),
                when they have not been unscaled yet.
            grads: gradients to read instead of the parameters' `.grad`, one per watched layer (`self.params`
                order), e.g. ∇L(W) at the centre from `torch.autograd.grad` when training on a smoothed loss.
        """
        if grads is None:
            missing = [n for n, p in zip(self.names, self.params) if p.grad is None]
            if missing:
                raise RuntimeError(f"no gradient on layers {missing}: call probe.step() after loss.backward()")
            grads = [p.grad for p in self.params if p.grad is not None]  # every one, checked above
        elif len(grads) != len(self.params):
            raise ValueError(f"grads holds {len(grads)} tensors; the probe watches {len(self.params)} layers")
        # abs().mean() beats the fused L1 norms on a CPU (vectorised abs, threaded sum)
        s = torch.stack([g.abs().mean() for g in grads]).to(torch.float64)
        if scale is not None:
            s = s / scale
        self.count += 1
        if self.estimator == "weight":
            if not self._weights:
                self._weights = [(torch.zeros_like(g), torch.zeros_like(g)) for g in grads]
            for (mean, m2), g in zip(self._weights, grads, strict=True):
                welford_(mean, m2, g if scale is None else g / scale, self.count)
            return s
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = s.clone(), torch.zeros_like(s)
        else:
            welford_(self._mean, self._m2, s, self.count)
        return s

    def epoch(self) -> dict[str, tuple[float, float]]:
        """Close the window: {layer name: (mean of s_I, std of s_I across its minibatches)}; one host sync."""
        if self.count == 0:
            raise RuntimeError("no step recorded since the last epoch(): call probe.step() after each backward")
        if self.estimator == "weight":
            if self.count < 2:
                raise RuntimeError("the per-weight estimator needs 2 steps or more in a window to measure a noise")
            mean, std = per_weight_signal_noise(self._weights, self.count)
        else:
            assert self._mean is not None and self._m2 is not None
            mean = self._mean.tolist()
            std = (self._m2 / self.count).sqrt().tolist()
        record = {n: (m, s) for n, m, s in zip(self.names, mean, std, strict=True)}
        self.history.append(record)
        self._reset()
        return record

    def variances(self) -> dict[str, Tensor]:
        """The open window's unbiased gradient variance of every watched weight ("weight" estimator), float64, on
        the device, by layer: the per-weight temperatures that `temperature_correlation` compares between windows."""
        if self.estimator != "weight" or self.count < 2:
            raise RuntimeError("variances() needs the 'weight' estimator and 2 steps or more in the open window")
        return {n: m2.double() / (self.count - 1) for n, (_, m2) in zip(self.names, self._weights, strict=True)}

    def state_dict(self) -> dict:
        """History and the open window, so that a resumed run continues exactly."""
        state = {
            "names": list(self.names),
            "history": [{n: list(v) for n, v in h.items()} for h in self.history],
            "count": self.count,
            "mean": None if self._mean is None else self._mean.cpu(),
            "m2": None if self._m2 is None else self._m2.cpu(),
        }
        if self.estimator == "weight":  # the key is absent for "layer": checkpoints keep their earlier format
            state["weights"] = [(m.cpu(), m2.cpu()) for m, m2 in self._weights]
        return state

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"probe state is for layers {state['names']}, this probe watches {self.names}")
        self.history = [{n: tuple(v) for n, v in h.items()} for h in state["history"]]
        self.count = int(state["count"])
        device = self.params[0].device
        self._mean = None if state["mean"] is None else state["mean"].to(device)
        self._m2 = None if state["m2"] is None else state["m2"].to(device)
        if ("weights" in state) != (self.estimator == "weight"):
            raise ValueError(f"probe state is not that of a {self.estimator!r} estimator")
        self._weights = [(m.to(device), m2.to(device)) for m, m2 in state.get("weights", [])]


def per_weight_signal_noise(buffers: list[tuple[Tensor, Tensor]], count: int) -> tuple[list[float], list[float]]:
    """Signal and noise of each layer from its Welford buffers (mean, m2) over `count` steps; see the "weight"
    estimator of `LayerTemperature`."""
    rows = []
    for mean, m2 in buffers:
        n = mean.numel()
        var = m2.double().sum() / (count - 1) / n  # <v>: unbiased variance, mean over the weights
        square = mean.double().square().mean() - var / count  # <m²> - <v>/L, unbiased for <drift²>
        resolution = var / count * math.sqrt(2 / n)
        rows.append(torch.stack([torch.maximum(square, resolution).sqrt(), var.sqrt()]))
    signal, noise = torch.stack(rows).T.tolist()  # one host sync
    return signal, noise


def temperature_correlation(first: dict[str, Tensor], second: dict[str, Tensor]) -> dict[str, float]:
    """Per layer, the Pearson correlation across its weights of their gradient variances in two disjoint windows
    (`LayerTemperature.variances`). The paper's footnote 7: "the weights belonging to the same layer can not be
    characterized by a common temperature". If they were, every weight's variance would scatter around one value
    independently in each window, and the correlation would be 0 up to about 1/sqrt(weights); a weight whose noise
    stays hotter than its neighbours' correlates the windows. With per-weight variances σ² spread across the layer
    and Gaussian noise over L steps, it is Var(σ²) / (Var(σ²) + 2 E[σ⁴] / (L - 1))."""
    out = {}
    for name, a in first.items():
        a, b = a.flatten(), second[name].flatten()
        a, b = a - a.mean(), b - b.mean()
        out[name] = float((a * b).sum() / (a.norm() * b.norm()))
    return out


def log_windows(first: int, total: int, growth: float = 1.1) -> list[int]:
    """The last step (1-based) of each probe window: `first` steps at first, each window `growth` times longer
    than the one before (rounded down, never shorter than `first`), the last one ending at `total` (a remainder
    shorter than `first` joins the window before it: a one-step window has no noise to measure)."""
    if first < 1:
        raise ValueError(f"the first window must hold at least 1 step, got {first}")
    ends, length, end = [], float(first), 0
    while end < total:
        end = min(total, end + max(first, int(length)))
        ends.append(end)
        length *= growth
    if len(ends) > 1 and ends[-1] - ends[-2] < first:
        del ends[-2]
    return ends


def curves(history: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[list[float], list[float]]]:
    """{layer: (signal means, noise stds)} over the epochs of a history; raises on an empty or ragged history."""
    if not history:
        raise ValueError("the history is empty: record some epochs with LayerTemperature.epoch() first")
    names = list(history[0])
    for i, h in enumerate(history):
        if list(h) != names:
            raise ValueError(f"epoch {i + 1} of the history has layers {list(h)}, the first has {names}")
    out = {n: ([h[n][0] for h in history], [h[n][1] for h in history]) for n in names}
    for n, (m, _) in out.items():
        if any(not math.isfinite(v) or v <= 0 for v in m):
            raise ValueError(f"layer {n!r} has a non-positive or non-finite signal: its log is undefined")
    return out
