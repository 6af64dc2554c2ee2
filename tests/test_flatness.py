import math

import pytest
import torch
import torch.nn.functional as F
from conftest import mlp
from test_objective import Quadratic
from torch import nn

import pleat
from pleat.flatness import flatness_profile, hutchinson_traces


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
        model, lambda out, _: out, (x, None), layers=[[1]], radii=[0.1, 0.3], samples=64, repeats=20, hutchinson=50
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
    profile = flatness_profile(model, F.cross_entropy, data, radii=[0.05], samples=4, hutchinson=2)
    assert [r.subset for r in profile.rows] == ["0", "3", "5", "0+3+5"]
    assert model.training
    assert all(r.rise_se >= 0 and math.isfinite(r.rise) for r in profile.rows)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(radii=[0.0]), "radii"),
        (dict(radii=[-1.0]), "radii"),
        (dict(radii=[]), "radii"),
        (dict(radii=[0.1], layers=[["nope"]]), "matches no layer"),
        (dict(radii=[0.1], samples=1), "samples"),
    ],
)
def test_bad_input(kwargs, match):
    x, t = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match=match):
        flatness_profile(mlp(), F.cross_entropy, (x, t), **kwargs)
    with pytest.raises(ValueError, match="no batch"):
        flatness_profile(mlp(), F.cross_entropy, [], radii=[0.1])
    assert pleat.flatness_profile is flatness_profile
