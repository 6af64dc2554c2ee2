import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import batch, cnn, mlp

import pleat


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
