import math

import pytest
import torch
from conftest import synthetic

import pleat


def test_recovers_breakpoints_and_cooling():
    r = pleat.regimes(synthetic())
    assert all(layer.peak == 10 for layer in r.layers)
    assert all(layer.crossover == 12 for layer in r.layers) and r.signal_end == 12
    assert r.onset == 40
    assert r.common_cooling
    assert abs(r.alpha - 0.5) < 0.05 and abs(r.tau - 20) / 20 < 0.15
    offsets = [layer.offset for layer in r.layers]
    # offsets are determined up to the noise: differences match the construction
    assert abs((offsets[1] - offsets[0]) - (-1.0)) < 0.02 and abs((offsets[2] - offsets[0]) - 0.7) < 0.02
    assert r.delta_bic > 0
    # both fits leave only the noise (σ = 0.01 on ln s over 3 x 161 late points): RSS ≈ n σ², common ≈ independent
    assert r.rss_independent <= r.rss_common <= 1.02 * r.rss_independent
    assert abs(r.rss_common / (3 * 161 * 0.01**2) - 1) < 0.2
    text = str(r)
    assert "alpha = 0.5" in text or "alpha = 0.4" in text
    assert "late regime" in text


def test_exact_curves_give_exact_fit():
    r = pleat.regimes(synthetic(noise=0.0, alpha=0.7, tau=35.0))
    assert abs(r.alpha - 0.7) < 1e-3 and abs(r.tau - 35.0) < 0.1


def test_cooling_fit_beats_every_point_of_a_naive_grid():
    """_fit scores its starting grid in one broadcast and refines it: on noisy curves, a naive double loop over a
    finer (α, τ) grid, with each c_I the mean residual, finds no lower residual sum than the fit returns."""
    from pleat.probes.regimes import _fit

    g = torch.Generator().manual_seed(1)
    t = torch.arange(1.0, 121.0, dtype=torch.float64)
    y = torch.stack([c - (t / 30.0) ** 0.6 for c in (0.0, -1.0, 0.5)])
    y = y + 0.05 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    alpha, tau, c, rss = _fit(t, y)
    best = math.inf
    for a in torch.linspace(0.2, 1.5, 66, dtype=torch.float64):
        for log_tau in torch.linspace(math.log(3.0), math.log(300.0), 66, dtype=torch.float64):
            f = -((t / log_tau.exp()) ** a)
            best = min(best, float(((y - f - (y - f).mean(dim=1, keepdim=True)) ** 2).sum()))
    assert rss <= best * (1 + 1e-9)
    f = -((t / tau) ** alpha)
    assert torch.allclose(c, (y - f).mean(dim=1)) and abs(float(((y - c[:, None] - f) ** 2).sum()) - rss) < 1e-9


def test_no_common_cooling_when_decays_differ():
    r = pleat.regimes(synthetic(shared=False))
    assert not r.common_cooling
    assert "no common cooling found" in str(r)


@pytest.mark.parametrize(
    "history, match",
    [([], "empty"), ([{"a": (1.0, 0.1)}, {"b": (1.0, 0.1)}], "layers"), ([{"a": (0.0, 0.1)}] * 6, "non-positive")],
)
def test_bad_history(history, match):
    with pytest.raises(ValueError, match=match):
        pleat.regimes(history)


def test_times_must_match():
    with pytest.raises(ValueError, match="times"):
        pleat.regimes(synthetic(T=20, t_on=5), times=[1.0, 2.0])
    r = pleat.regimes(synthetic(T=60, t_on=20), times=[0.5 * k for k in range(1, 61)])
    assert r.onset == 10.0 and math.isfinite(r.alpha)


def test_one_noisy_window_is_not_the_crossover():
    history = synthetic()
    for name in ("fc1", "fc2", "out"):  # window 3: a burst of noise, then the signal dominates again
        s, _ = history[2][name]
        history[2][name] = (s, 2 * s)
    r = pleat.regimes(history)
    assert all(layer.crossover == 12 for layer in r.layers) and r.signal_end == 12
    assert pleat.regimes(history, persist=1).signal_end == 3  # the literal first crossing


def test_a_signal_flat_within_its_noise_has_no_identifiable_peak():
    """A signal that rises clearly has a peak; one flat within its noise and then falling has only a maximum
    (here the argmax of the plateau lands wherever the draws put it), and `transition_at_peak` says so: None."""
    rising = pleat.regimes(synthetic())
    assert all(layer.peak_identified for layer in rising.layers) and rising.transition_at_peak() is not None
    flat = synthetic(t_peak=1, t_on=40)  # no rise: the curve starts at its highest and cools
    g = torch.Generator().manual_seed(3)
    wobbly = [  # a plateau for 20 entries, wobbling by 5% where the noise is 30% of the signal
        {k: (v[0] * (1 + 0.05 * float(torch.randn((), generator=g))) if i < 20 else v[0], v[1]) for k, v in h.items()}
        for i, h in enumerate(flat)
    ]
    r = pleat.regimes(wobbly, lengths=[4] * len(wobbly))
    assert not any(layer.peak_identified for layer in r.layers)
    assert r.transition_at_peak() is None
    # the same plateau read from windows of 10,000 minibatches: a 5% wobble is now far beyond its standard error,
    # but a maximum at the first entry is still no peak
    first = [dict(h) for h in flat]
    assert not any(layer.peak_identified for layer in pleat.regimes(first, lengths=[10_000] * len(first)).layers)
