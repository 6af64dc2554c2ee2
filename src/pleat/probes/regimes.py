"""The three dynamical regimes of the layer temperature and the late common cooling (paper, Figure 1).

Given a history of per-layer signals s_I(t) and noises (see `LayerTemperature`), `regimes` finds
1. the signal peak of each layer and the crossover where its noise overtakes its signal (end of the early,
   signal-dominated regime);
2. the onset of the late regime, from which the layers' log-curves stay parallel: ln s_I(t) - <ln s(t)>_layers is
   constant within `tolerance`;
3. the common cooling on the late regime: ln s_I(t) = c_I + f(t) with f(t) = -(t/τ)^α shared by all layers, fitted by
   least squares, and compared with independent per-layer fits (3 parameters each) by the BIC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pleat.probes.temperature import curves


@dataclass(frozen=True)
class LayerRegime:
    """One layer: time of its signal peak, time its noise first exceeds its signal, its offset c_I in the fit, and
    whether the peak stands out: a signal flat within its noise and then falling has a maximum but no peak."""

    name: str
    peak: float
    crossover: float | None
    offset: float | None
    peak_identified: bool = True


@dataclass(frozen=True)
class Regimes:
    """What `regimes` found; `str()` prints a table. Times are in the units of `times` (epochs by default)."""

    layers: list[LayerRegime]
    signal_end: float | None  # first time at which every layer is noise-dominated
    onset: float | None  # start of the late regime with parallel log-curves
    alpha: float | None  # f(t) = -(t/τ)^α
    tau: float | None
    rss_common: float | None
    rss_independent: float | None
    delta_bic: float | None  # BIC(independent) - BIC(common): > 0 favours one common cooling

    @property
    def common_cooling(self) -> bool:
        return self.alpha is not None

    @property
    def ordered(self) -> bool:
        """The paper's three regimes in its order: every layer's signal peaks before (or as) its noise overtakes
        it, every layer turns noise-dominated, and the late regime of parallel log-curves starts after that."""
        return (
            self.signal_end is not None
            and self.onset is not None
            and all(r.crossover is not None and r.peak <= r.crossover for r in self.layers)
            and self.onset >= self.signal_end
        )

    def transition_at_peak(self, factor: float = 2.0) -> bool | None:
        """Does each layer's crossover come "approximately at the moment when the training signal attains its
        maximum": no later than `factor` times its peak time (times counted from the start of training)? None
        when some layer's signal has no identifiable peak: the question has no answer there."""
        if not all(r.peak_identified for r in self.layers):
            return None
        return all(r.crossover is not None and r.peak <= r.crossover <= factor * r.peak for r in self.layers)

    def __str__(self) -> str:
        rows = [f"{'layer':<12} {'peak':>8} {'crossover':>10} {'offset c_I':>11}"]
        for r in self.layers:
            cross = "-" if r.crossover is None else f"{r.crossover:g}"
            off = "-" if r.offset is None else f"{r.offset:.4f}"
            rows.append(f"{r.name:<12} {r.peak:>8g} {cross:>10} {off:>11}")
        end = "never" if self.signal_end is None else f"{self.signal_end:g}"
        rows.append(f"signal-dominated regime ends at: {end}")
        rows.append(
            f"the paper's order (peak, crossover, then the parallel late regime): {'yes' if self.ordered else 'no'}"
        )
        if not self.common_cooling:
            rows.append("no common cooling found" + ("" if self.onset is None else f" (parallel from {self.onset:g})"))
        else:
            rows.append(f"late regime (parallel log-curves) from: {self.onset:g}")
            rows.append(
                f"common cooling ln s_I = c_I - (t/tau)^alpha: alpha = {self.alpha:.4f}, tau = {self.tau:.4g}; "
                f"RSS common {self.rss_common:.4g} vs independent {self.rss_independent:.4g}, "
                f"BIC favours common by {self.delta_bic:.1f}"
            )
            if self.alpha is not None and self.alpha < 1.5 * ALPHA_RANGE[0]:
                rows.append("alpha sits at its lower bound: the common decay is closer to a power law")
        return "\n".join(rows)


ALPHA_RANGE = (0.02, 5.0)  # stretched-exponential exponents the fit may take; at the lower end the decay is a power law


def _fit(t: torch.Tensor, y: torch.Tensor) -> tuple[float, float, torch.Tensor, float]:
    """Least squares of y[I, t] = c_I - (t/τ)^α: returns (α, τ, c, rss); c is profiled out exactly.

    α and ln τ are kept inside ALPHA_RANGE and ln t ± 5 through a sigmoid, so the fit cannot run off to the
    degenerate power-law limit (α -> 0, τ -> 0) on curves that decay like a power law.
    """
    lt = t.log()
    bounds = torch.tensor(
        [[math.log(ALPHA_RANGE[0]), math.log(ALPHA_RANGE[1])], [float(lt.min()) - 5, float(lt.max()) + 5]],
        dtype=t.dtype,
    )

    def unpack(u):  # unconstrained u [..., 2] -> (ln α, ln τ) [..., 2] inside the bounds
        return bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * torch.sigmoid(u)

    def rss_of(u):  # u [..., 2] -> rss [...], c [..., I]
        log_alpha, log_tau = unpack(u).unbind(-1)
        f = -torch.exp(log_alpha.exp()[..., None] * (lt - log_tau[..., None]))[..., None, :]  # -(t/τ)^α, [..., 1, T]
        c = (y - f).mean(dim=-1, keepdim=True)
        return ((y - c - f) ** 2).sum(dim=(-2, -1)), c.squeeze(-1)

    grid = torch.linspace(-4, 4, 41, dtype=t.dtype)
    scores = rss_of(torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1))[0]  # every grid point at once
    i, j = divmod(int(torch.argmin(scores)), len(grid))
    start = torch.stack([grid[i], grid[j]])
    u = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = rss_of(u)[0]
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        rss, c = rss_of(u)
        if not torch.isfinite(rss) or rss > scores[i, j]:  # keep the grid point if the refinement wandered off
            u = start
            rss, c = rss_of(u)
        log_alpha, log_tau = unpack(u.detach())
    return float(log_alpha.exp()), float(log_tau.exp()), c.detach(), float(rss)


def _sustained(flags: torch.Tensor, persist: int) -> torch.Tensor:
    """flags[:, k] and the `persist - 1` entries after it (those that exist) all true."""
    out = flags.clone()
    for shift in range(1, persist):
        out[:, :-shift] &= flags[:, shift:]
    return out


def regimes(
    history: list[dict[str, tuple[float, float]]],
    times: list[float] | None = None,
    tolerance: float = 0.1,
    min_points: int = 5,
    persist: int = 3,
    lengths: list[int] | None = None,
) -> Regimes:
    """Signal peaks, signal/noise crossovers, onset of the parallel late regime and its common cooling.

    Args:
        history: `LayerTemperature.history`: one {layer: (mean, std)} per epoch.
        times: the time of each entry (default 1, 2, ...), > 0.
        tolerance: how far (in ln units) a layer's log-ratio to the others may stray in the late regime.
        min_points: the fewest entries a late regime must span.
        persist: a crossover is where the noise exceeds the signal for this many entries in a row (or to the end).
        lengths: the minibatches each entry averages (a window's steps); default 1, which reads each signal
            value as uncertain by its whole noise.
    A layer's peak is identified when its maximum exceeds the first entry by more than twice the standard error
    of that difference (each value's noise / sqrt(its length)); a maximum at the first entry is no peak.
    """
    data = curves(history)
    names = list(data)
    t = torch.tensor(times if times is not None else range(1, len(history) + 1), dtype=torch.float64)
    if t.shape[0] != len(history) or (t <= 0).any():
        raise ValueError("times must hold one positive time per history entry")
    signal = torch.tensor([data[n][0] for n in names], dtype=torch.float64)  # [L, T]
    noise = torch.tensor([data[n][1] for n in names], dtype=torch.float64)

    # noise-dominated from here on for `persist` windows in a row: one noisy window (two-step windows early on
    # are) is not a regime change
    noisy = _sustained(noise > signal, persist)
    peaks = [float(t[int(torch.argmax(s))]) for s in signal]
    counts = torch.tensor(lengths if lengths is not None else [1] * len(history), dtype=torch.float64)
    se = noise / counts.sqrt()
    identified = []
    for s, e in zip(signal, se):
        k = int(torch.argmax(s))
        identified.append(k > 0 and float(s[k] - s[0]) > 2 * math.hypot(float(e[k]), float(e[0])))
    crossovers = []
    for row in noisy:
        hits = torch.nonzero(row).flatten()
        crossovers.append(float(t[hits[0]]) if len(hits) else None)
    all_noisy = torch.nonzero(noisy.all(dim=0)).flatten()
    signal_end = float(t[all_noisy[0]]) if len(all_noisy) else None

    logs = signal.log()
    ratios = logs - logs.mean(dim=0, keepdim=True)
    onset_index = None
    for k in range(0, len(t) - min_points + 1):
        tail = ratios[:, k:]
        if (tail - tail.median(dim=1, keepdim=True).values).abs().max() <= tolerance:
            onset_index = k
            break
    fit = None
    if onset_index is not None:
        tt, yy = t[onset_index:], logs[:, onset_index:]
        alpha, tau, c, rss = _fit(tt, yy)
        rss_ind = sum(_fit(tt, yy[i : i + 1])[3] for i in range(len(names)))
        n = yy.numel()
        floor = 1e-300  # perfect synthetic fits

        def bic(r, k):
            return n * math.log(max(r, floor) / n) + k * math.log(n)

        delta = bic(rss_ind, 3 * len(names)) - bic(rss, len(names) + 2)
        if delta > 0:
            fit = (alpha, tau, c.tolist(), rss, rss_ind, delta)
    layers = [
        LayerRegime(n, peaks[i], crossovers[i], None if fit is None else fit[2][i], identified[i])
        for i, n in enumerate(names)
    ]
    onset = None if onset_index is None else float(t[onset_index])
    if fit is None:
        return Regimes(layers, signal_end, onset, None, None, None, None, None)
    alpha, tau, _, rss, rss_ind, delta = fit
    return Regimes(layers, signal_end, onset, alpha, tau, rss, rss_ind, delta)
