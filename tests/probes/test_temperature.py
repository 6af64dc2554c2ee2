import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import batch, cnn, mlp
from torch import nn

import pleat
from pleat.probes.temperature import temperature_correlation


def run_steps(model, probe, steps=6, scale=None):
    recorded = []
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, t = batch(model)
        x = x + torch.randn(x.shape, generator=g, dtype=x.dtype)
        model.zero_grad()
        loss = F.cross_entropy(model(x), t)
        (loss * (scale or 1.0)).backward()
        recorded.append(
            {
                n: float(m.weight.grad.abs().mean()) / (scale or 1.0)
                for n, m in model.named_modules()
                if n in probe.names
            }
        )
        probe.step(scale)
    return recorded


@pytest.mark.parametrize("make", [mlp, cnn])
def test_signal_and_noise_match_hand_computation(make):
    model = make()
    probe = pleat.LayerTemperature(model)
    recorded = run_steps(model, probe)
    out = probe.epoch()
    assert list(out) == [s.module_name for s in pleat.select(model, None)]
    for name, (mean, std) in out.items():
        values = np.array([r[name] for r in recorded])
        assert mean == pytest.approx(values.mean(), rel=1e-12)
        assert std == pytest.approx(values.std(), rel=1e-9)
    assert probe.history == [out]


def test_layer_subset_matches_hand_computation():
    model = mlp()
    probe = pleat.LayerTemperature(model, layers=[2])
    recorded = run_steps(model, probe)
    out = probe.epoch()
    assert list(out) == ["3"]
    assert out["3"][0] == pytest.approx(np.mean([r["3"] for r in recorded]), rel=1e-12)


def test_scaled_equals_unscaled():
    a, b = mlp(), mlp()
    pa, pb = pleat.LayerTemperature(a), pleat.LayerTemperature(b)
    run_steps(a, pa, scale=512.0)
    run_steps(b, pb)
    for (ma, sa), (mb, sb) in zip(pa.epoch().values(), pb.epoch().values()):
        assert ma == pytest.approx(mb, rel=1e-12) and sa == pytest.approx(sb, rel=1e-8)


def test_no_host_sync_per_step(monkeypatch):
    model = mlp()
    probe = pleat.LayerTemperature(model)
    F.cross_entropy(model(batch(model)[0]), batch(model)[1]).backward()

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in probe.step()")

    for name in ["item", "tolist", "__float__", "__bool__", "__int__", "numpy"]:
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for _ in range(3):
        probe.step()
    monkeypatch.undo()
    assert probe.epoch()


def test_state_dict_resumes_mid_window(tmp_path):
    model = mlp()
    whole = pleat.LayerTemperature(model)
    run_steps(model, whole, steps=4)
    whole.epoch()
    run_steps(model, whole, steps=3)
    torch.save(whole.state_dict(), tmp_path / "probe.pt")
    resumed = pleat.LayerTemperature(model)  # as after a restart: same model, state from disk
    resumed.load_state_dict(torch.load(tmp_path / "probe.pt", weights_only=True))
    whole.step()
    resumed.step()
    assert whole.epoch() == resumed.epoch()
    assert whole.history == resumed.history and len(whole.history) == 2
    with pytest.raises(ValueError, match="layers"):
        pleat.LayerTemperature(model, layers=[1]).load_state_dict(whole.state_dict())


def test_errors():
    model = mlp()
    with pytest.raises(ValueError, match="matches no layer"):
        pleat.LayerTemperature(model, layers=["nope"])
    probe = pleat.LayerTemperature(model)
    with pytest.raises(RuntimeError, match="no step"):
        probe.epoch()
    with pytest.raises(RuntimeError, match="after loss.backward"):
        probe.step()


def test_per_weight_estimator_against_a_naive_float64_computation():
    model = mlp().double()
    probe = pleat.LayerTemperature(model, estimator="weight")
    grads = {n: [] for n in probe.names}
    g = torch.Generator().manual_seed(1)
    for _ in range(7):
        x, t = batch(model)
        model.zero_grad()
        F.cross_entropy(model(x.double() + torch.randn(x.shape, generator=g, dtype=torch.float64)), t).backward()
        for n, p in zip(probe.names, probe.params):
            grads[n].append(p.grad.clone())
        probe.step()
    out = probe.epoch()
    for n in probe.names:
        stacked = torch.stack(grads[n])  # [steps, *weight]
        var = stacked.var(0, unbiased=True).mean()
        signal = (stacked.mean(0).square().mean() - var / 7).sqrt().item()
        noise = var.sqrt().item()
        assert out[n][0] == pytest.approx(signal, rel=1e-10) and out[n][1] == pytest.approx(noise, rel=1e-10)
        # the layer-averaged estimator's noise is that of one number per step: far smaller
        per_step = stacked.abs().flatten(1).mean(1)
        assert per_step.std(unbiased=False).item() < 0.5 * noise


def test_per_weight_estimator_resumes_mid_window_and_refuses_another_estimators_state(tmp_path):
    model = mlp()
    whole = pleat.LayerTemperature(model, estimator="weight")
    run_steps(model, whole, steps=3)
    torch.save(whole.state_dict(), tmp_path / "probe.pt")
    resumed = pleat.LayerTemperature(model, estimator="weight")
    resumed.load_state_dict(torch.load(tmp_path / "probe.pt", weights_only=True))
    run_steps(model, whole, steps=2)
    run_steps(model, resumed, steps=2)
    assert whole.epoch() == resumed.epoch()
    with pytest.raises(ValueError, match="estimator"):
        pleat.LayerTemperature(model).load_state_dict(whole.state_dict())
    with pytest.raises(ValueError, match="estimator must be"):
        pleat.LayerTemperature(model, estimator="global")


def test_per_weight_statistics_do_not_depend_on_the_window_length():
    """Drift 0.3 and noise 1 per weight: windows of 2 and of 50 steps estimate the same signal and noise (a plain
    mean |m| would read 0.62 and 0.32 here), and pure noise reads at its resolution, far below the noise."""
    layer = torch.nn.Linear(100, 100, bias=False)
    g = torch.Generator().manual_seed(3)
    for drift, window in ((0.3, 2), (0.3, 50), (0.0, 10)):
        probe = pleat.LayerTemperature(layer, estimator="weight")
        reads = []
        for _ in range(40):
            for _ in range(window):
                layer.weight.grad = drift + torch.randn(100, 100, generator=g)
                probe.step()
            reads.append(probe.epoch()[""])
        signal = sum(r[0] for r in reads) / len(reads)
        noise = sum(r[1] for r in reads) / len(reads)
        assert noise == pytest.approx(1.0, abs=0.02)
        if drift:
            assert signal == pytest.approx(drift, abs=0.03), window
        else:
            assert signal < 0.05


def test_log_windows_grow_by_ten_percent_and_end_at_the_last_step():
    ends = pleat.probes.temperature.log_windows(2, 70_500)
    lengths = [b - a for a, b in zip([0] + ends, ends)]
    assert ends[:6] == [2, 4, 6, 8, 10, 13] and ends[-1] == 70_500 and len(ends) == 86
    assert all(b >= a for a, b in zip(lengths[:-2], lengths[1:-1]))  # non-decreasing but for the cut last one
    assert lengths[-2] / lengths[-10] == pytest.approx(1.1**8, rel=0.05)
    assert pleat.probes.temperature.log_windows(2, 20) == [2, 4, 6, 8, 10, 13, 16, 20]  # no one-step window at the end


def synthetic_gradients(drift_scale: float, steps=3000, seed=0):
    """A layer of 2,000 weights whose gradient is a common drift d(t) (rising from half its peak to the peak at
    step 60, then decaying like 1/t) plus minibatch noise of std 1: the per-weight noise overtakes the signal where
    d(t) falls below about 1."""
    layer = torch.nn.Linear(40, 50, bias=False)
    probe = pleat.LayerTemperature(layer, estimator="weight")
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(50, 40, generator=g).sign()
    ends = set(pleat.probes.temperature.log_windows(4, steps))
    times = []
    for t in range(1, steps + 1):
        d = drift_scale * (0.5 + 0.5 * t / 60 if t <= 60 else 60 / t)
        layer.weight.grad = d * direction + torch.randn(50, 40, generator=g)
        probe.step()
        if t in ends:
            probe.epoch()
            times.append(t)
    return probe.history, times


def test_regimes_find_a_known_transition_in_per_weight_statistics():
    history, times = synthetic_gradients(drift_scale=8.0)  # d = 1 at t = 480
    r = pleat.regimes(history, times=times)
    (layer,) = r.layers
    assert 40 <= layer.peak <= 80  # the windows around step 60
    assert 300 <= layer.crossover <= 700 and r.signal_end == layer.crossover
    # with one layer the late regime is trivially parallel; the order peak -> crossover holds
    assert layer.peak < layer.crossover


def test_regimes_report_no_transition_when_the_drift_dominates_throughout():
    history, times = synthetic_gradients(drift_scale=500.0)  # d >= 10 everywhere: the noise never wins
    r = pleat.regimes(history, times=times)
    assert r.layers[0].crossover is None and r.signal_end is None and not r.ordered


@pytest.mark.parametrize("spread", [0.0, 0.3])
def test_temperature_correlation_is_zero_for_a_common_temperature_and_the_closed_form_otherwise(spread):
    """Footnote 7's test on gradients of known per-weight noise: σ_ω = exp(spread · N(0, 1)), Gaussian noise over
    L = 20 steps per window. A common temperature (spread 0) gives r = 0 within a few 1/sqrt(weights); a spread
    gives Var(σ²) / (Var(σ²) + 2 E[σ⁴] / (L - 1)) (lognormal moments)."""
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(40, 50).double()
    probe = pleat.LayerTemperature(layer, estimator="weight")
    sigma = torch.exp(spread * torch.randn(50, 40, generator=g, dtype=torch.float64))
    windows, steps = [], 20
    for _ in range(2):
        for _ in range(steps):
            probe.step(grads=[sigma * torch.randn(50, 40, generator=g, dtype=torch.float64)])
        windows.append(probe.variances())
        probe.epoch()
    r = temperature_correlation(*windows)[""]
    if spread == 0:
        assert abs(r) < 5 / math.sqrt(2000)
    else:
        s2 = spread**2
        var, fourth = math.exp(8 * s2) - math.exp(4 * s2), math.exp(8 * s2)
        assert r == pytest.approx(var / (var + 2 * fourth / (steps - 1)), abs=0.05)
