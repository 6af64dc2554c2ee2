import math

import pytest
import torch
import torch.nn.functional as F
from conftest import Quadratic, mlp
from torch import nn

import pleat
from pleat.probes.flatness import flatness_profile, hutchinson_traces


def exact_traces(model, x, t):
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        w = m.weight

        def loss_at(flat, m=m, w=w):
            return F.cross_entropy(torch.func.functional_call(model, {f"{name}.weight": flat.view_as(w)}, (x,)), t)

        h = torch.autograd.functional.hessian(loss_at, w.detach().flatten())
        out[name] = float(h.diagonal().sum())
    return out


def test_hutchinson_matches_exact_hessian_trace():
    model = mlp()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    exact = exact_traces(model, x, t)
    est = hutchinson_traces(model, F.cross_entropy, (x, t), probes=400, generator=g)
    for name, value in exact.items():
        mean, se = est[name]
        assert abs(mean - value) < 4 * se + 1e-12, (name, mean, se, value)


def test_flatness_rise_on_quadratic_matches_trace():
    model = Quadratic()
    x = torch.zeros(1, 12, dtype=torch.float64)
    profile = flatness_profile(
        model, lambda out, _: out, (x, None), subsets=[[1]], radii=[0.1, 0.3], samples=64, repeats=20, probes=50
    )
    trace = float(model.A.trace())
    for row in profile.rows:
        expected = row.radius**2 / 6 * trace
        assert abs(row.rise - expected) < 4 * row.rise_se
        assert abs(row.predicted - expected) < 0.2 * expected
    assert "lin" in str(profile)


def test_default_subsets_and_mode_restored():
    model = mlp(dropout=0.3)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))] * 2
    profile = flatness_profile(model, F.cross_entropy, data, radii=[0.05], samples=4, probes=2)
    assert [r.subset for r in profile.rows] == ["{1} (0)", "{2} (3)", "{3} (5)", "all (0+3+5)"]
    assert model.training
    assert all(r.rise_se >= 0 and math.isfinite(r.rise) for r in profile.rows)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(radii=[0.0]), "radii"),
        (dict(radii=[-1.0]), "radii"),
        (dict(radii=[]), "radii"),
        (dict(radii=[0.1], subsets=[["nope"]]), "matches no layer"),
        (dict(radii=[0.1], samples=1), "samples"),
    ],
)
def test_bad_input(kwargs, match):
    x, t = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match=match):
        flatness_profile(mlp(), F.cross_entropy, (x, t), **kwargs)
    with pytest.raises(ValueError, match="no batch"):
        flatness_profile(mlp(), F.cross_entropy, [], radii=[0.1])


def trained_mlp(activation):
    g = torch.Generator().manual_seed(0)
    teacher = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 4)).double()
    x = torch.randn(512, 20, generator=g, dtype=torch.float64)
    t = teacher(x).argmax(1).detach()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 64), activation(), nn.Linear(64, 64), activation(), nn.Linear(64, 4)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(300):  # a real minimum, not an initialisation
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()
    return model, x, t


def test_profile_of_a_trained_mlp_is_positive_quadratic_in_r_and_matches_hutchinson():
    """With antithetic pairs the rise is positive at small R, grows as R² and agrees with (R²/6) tr H."""
    model, x, t = trained_mlp(nn.Tanh)
    profile = flatness_profile(
        model,
        F.cross_entropy,
        (x, t),
        subsets=[[1], [2], [1, 2]],
        radii=[1e-4, 1e-3, 1e-2],
        samples=32,
        repeats=8,
        probes=64,
    )
    for subset in ("{1} (0)", "{2}", "{1,2} (0+2)"):
        rows = [r for r in profile.rows if r.subset == subset]
        assert all(r.rise > 4 * r.rise_se for r in rows), subset  # positive, well outside its error bar
        scaled = [(r.rise / r.radius**2, r.rise_se / r.radius**2) for r in rows]
        for (a, sa), (b, sb) in zip(scaled, scaled[1:]):
            assert abs(a - b) < 4 * math.hypot(sa, sb), subset  # rise / R² is constant: the rise grows as R²
        for r in rows:
            assert abs(r.rise - r.predicted) < 0.1 * r.predicted + 4 * r.rise_se, subset  # the Hutchinson line


def test_relu_kinks_make_the_small_r_rise_exceed_the_hessian_line():
    """A ReLU net is piecewise linear: units whose pre-activation the perturbation flips add a rise the Hessian
    does not see, which dominates at small R (measured: rise/R² grows about tenfold from R = 1e-2 to 1e-4)."""
    model, x, t = trained_mlp(nn.ReLU)
    profile = flatness_profile(model, F.cross_entropy, (x, t), subsets=[[1]], radii=[1e-4, 1e-2], samples=32, repeats=8)
    small, large = profile.rows
    assert small.rise / small.radius**2 > 5 * large.rise / large.radius**2
    assert small.rise > 4 * small.predicted


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_probe_runs_on_a_gpu_with_a_cpu_generator():
    model = mlp().cuda()
    x, t = torch.randn(16, 6, dtype=torch.float64).cuda(), torch.randint(0, 3, (16,)).cuda()
    cpu = torch.Generator().manual_seed(0)
    traces = hutchinson_traces(model, F.cross_entropy, (x, t), probes=4, generator=cpu)
    assert set(traces) == {"0", "3", "5"}
    profile = flatness_profile(model, F.cross_entropy, (x, t), radii=[0.01], samples=4, probes=2, generator=cpu)
    assert all(math.isfinite(r.rise) for r in profile.rows)
    probe = pleat.LayerTemperature(model)
    F.cross_entropy(model(x), t).backward()
    probe.step()
    assert set(probe.epoch()) == {"0", "3", "5"}
    history = [{"0": (1.0 / k, 0.5), "3": (2.0 / k, 0.6)} for k in range(1, 30)]
    assert pleat.regimes(history).signal_end is not None


def test_the_keywords_before_0_3_still_work_with_a_warning():
    x, t = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    cpu = torch.Generator().manual_seed(1)
    new = flatness_profile(mlp(), F.cross_entropy, (x, t), subsets=[[1]], radii=[0.01], samples=4, probes=2,
                           generator=cpu)  # fmt: skip
    cpu.manual_seed(1)
    with pytest.warns(DeprecationWarning) as warned:
        old = flatness_profile(mlp(), F.cross_entropy, (x, t), layers=[[1]], radii=[0.01], samples=4, hutchinson=2,
                               generator=cpu)  # fmt: skip
    assert sorted(str(w.message).split(" is now ")[1] for w in warned) == ["probes=", "subsets="]
    assert old.rows == new.rows and old.trace == new.trace
    with pytest.raises(TypeError, match="hutchinsn"):
        flatness_profile(mlp(), F.cross_entropy, (x, t), radii=[0.01], hutchinsn=2)
