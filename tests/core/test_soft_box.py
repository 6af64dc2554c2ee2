"""The soft box's draws from the normalised kernel, and error bars that mean what they say (float64, fixed seeds)."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import Quadratic, mlp, smooth
from torch import nn

import pleat


def kernel_1d(x, radius, k):
    """Eq 5-6 for one coordinate, literally: K = (1 - σ(2k(x - R))) σ(2k(x + R))."""
    return (1 - torch.sigmoid(2 * k * (x - radius))) * torch.sigmoid(2 * k * (x + radius))


def quadrature_grid(radius, k, n=4001):
    """Nodes and normalised weights of K/Z on a grid wide enough for its tails (trapezoid rule)."""
    h = radius + 25 / k
    x = torch.linspace(-h, h, n, dtype=torch.float64)
    w = kernel_1d(x, radius, k) * (x[1] - x[0])
    w[0] /= 2
    w[-1] /= 2
    return x, w / w.sum()


@pytest.mark.parametrize("radius, k", [(0.3, 5.0), (0.3, 50.0), (0.01, 300.0)])
def test_draws_follow_the_normalised_kernel(radius, k):
    n = 400_000
    draws = pleat.Box(radius, k).sample_(torch.empty(n, dtype=torch.float64), torch.Generator().manual_seed(0))
    x, w = quadrature_grid(radius, k)
    cdf = w.cumsum(0)
    for q in torch.linspace(0.05, 0.95, 19):
        at = x[int(torch.searchsorted(cdf, q))]
        empirical = float((draws <= at).double().mean())
        expected = float(cdf[x <= at][-1])
        assert abs(empirical - expected) < 5 * math.sqrt(expected * (1 - expected) / n) + 1e-3
    variance = float((w * x * x).sum())
    assert math.isclose(pleat.Box(radius, k).variance, variance, rel_tol=1e-5)
    se = float(draws.pow(2).std()) / math.sqrt(n)
    assert abs(float(draws.pow(2).mean()) - variance) < 4 * se


def test_kernel_mode_tends_to_the_hard_box():
    """From the hard box's seed, the soft box moves each of the hard box's points by a logistic of scale 1/(2k)
    (std π/(2k√3)): the draws, and the variance, tend to the hard box's as 1/k."""
    radius, n = 0.2, 200_000
    hard = pleat.Box(radius).sample_(torch.empty(n, dtype=torch.float64), torch.Generator().manual_seed(0))
    for k in (10 / radius, 100 / radius, 1e4 / radius):
        box = pleat.Box(radius, k)
        gap = box.sample_(torch.empty(n, dtype=torch.float64), torch.Generator().manual_seed(0)) - hard
        assert float(gap.std()) == pytest.approx(math.pi / (2 * k * math.sqrt(3)), rel=0.01)  # 5 standard errors
        assert box.variance - pleat.Box(radius).variance == pytest.approx(math.pi**2 / (12 * k**2), rel=1e-12)


def test_kernel_mode_float32_draws_are_the_float64_draws_rounded():
    """The same generator state gives the same draws in either dtype (the logistic is taken in float64)."""
    box = pleat.Box(1e-3, 50.0)
    wide = box.sample_(torch.empty(10**6, dtype=torch.float64), torch.Generator().manual_seed(4))
    narrow = box.sample_(torch.empty(10**6, dtype=torch.float32), torch.Generator().manual_seed(4))
    torch.testing.assert_close(narrow, wide.float(), rtol=1e-6, atol=1e-9)


def test_kernel_mode_a_zero_uniform_gives_the_cut_tail_not_minus_infinity(monkeypatch):
    """u = 0 (probability 2^-53 per coordinate) is clamped to 2^-54: the logistic's tail cut there, a finite draw."""
    box, n = pleat.Box(0.1, 40.0), 1000
    lattice = pleat.Box(0.1).sample_(torch.empty(n, dtype=torch.float64), torch.Generator().manual_seed(1))
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.zeros(shape, dtype=kw["dtype"]))
    draws = box.sample_(torch.empty(n, dtype=torch.float64), torch.Generator().manual_seed(1))
    tail = math.log(2**-54 / (1 - 2**-54)) / (2 * box.sharpness)
    torch.testing.assert_close(draws, lattice + tail, rtol=0, atol=1e-15)


class TwoWeights(nn.Module):
    """A loss that is an explicit, non-quadratic function of two weights."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2, bias=False).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.1], [-0.3]]))

    def forward(self, x):
        return self.lin(x)[0]


def two_weight_loss(w0, w1):
    return 2 * (w0 - 0.2) ** 2 + torch.sin(3 * w1) + w0 * w1


@pytest.mark.parametrize("k", [2.0, 20.0])  # kR = 1 and 10
@pytest.mark.parametrize("kind", ["pla", "plea"])
def test_kernel_mode_matches_quadrature_of_eq14_and_eq19(kind, k):
    radius, y = 0.5, 40_000
    model = TwoWeights()
    obj = smooth(
        model,
        lambda out, _: two_weight_loss(out[0], out[1]),
        layers=[1],
        kernel=pleat.Box(radius, k),
        samples=y,
        kind=kind,
        seed=1,
        engine="vectorised",
    )
    value = float(obj(torch.ones(1, 1, dtype=torch.float64), None).detach())
    x, w = quadrature_grid(radius, k, n=1201)
    surface = two_weight_loss(0.1 + x[:, None], -0.3 + x[None, :])
    weights = w[:, None] * w[None, :]  # K/Z: the constant ln Z is what separates this from eq 14/19's d
    centre = float(two_weight_loss(torch.tensor(0.1), torch.tensor(-0.3)))
    perturbed = obj.last.losses[1:]
    if kind == "pla":  # eq 19: (L(W) + Σ_a L_a) / (y+1), L_a drawn from K/Z
        expected = (centre + y * float((weights * surface).sum())) / (y + 1)
        se = float(perturbed.std()) / math.sqrt(y) * y / (y + 1)
    else:  # eq 14: -log{(e^{-L(W)} + Σ_a e^{-L_a}) / (y+1)}
        mean = (math.exp(-centre) + y * float((weights * (-surface).exp()).sum())) / (y + 1)
        expected = -math.log(mean)
        se = float((-perturbed).exp().std()) / math.sqrt(y) * y / (y + 1) / mean
    assert abs(value - expected) < 4 * se


@pytest.mark.slow
def test_soft_box_smooths_a_real_layer_where_importance_weights_vanish():
    """The paper MLP's 784x784 layer at R = 0.01: the kernel mode's loss rise is the hard box's, scaled by the
    variances; the importance-weighted mode gives every perturbed point a weight of about zero."""
    from pleat.runs.models import build

    torch.manual_seed(0)
    model = build("fc2").double()
    g = torch.Generator().manual_seed(2)
    x, t = torch.rand(256, 784, generator=g, dtype=torch.float64), torch.randint(0, 10, (256,), generator=g)
    radius = 0.01

    def mean_rise(kernel):
        obj = smooth(model, layers=[2], kernel=kernel, samples=8, antithetic=True, seed=3)
        rises = []
        for _ in range(6):
            obj(x, t)
            rises.append(obj.last.losses[1:] - obj.last.centre_loss)
        rises = torch.cat(rises).view(-1, 2).mean(1)  # pair means cancel the first-order term
        return float(rises.mean()), float(rises.std()) / math.sqrt(len(rises)), obj

    hard, hard_se, _ = mean_rise(pleat.Box(radius))
    assert hard > 4 * hard_se  # a real, measurable rise
    for kr in (3, 30, 300):
        box = pleat.Box(radius, kr / radius)
        soft, soft_se, _ = mean_rise(box)
        expected = hard * box.variance / pleat.Box(radius).variance  # the rise is (variance / 2) tr H
        assert abs(soft - expected) < 4 * math.hypot(soft_se, hard_se * expected / hard), kr
    _, _, weighted = mean_rise(pleat.Box(radius, 30 / radius, "uniform"))
    assert (weighted.last.log_weights[1:] < -100).all()  # the degenerate mode the default avoids


@pytest.mark.parametrize("antithetic", [False, True])
@pytest.mark.parametrize("case", ["quadratic", "mlp"])
def test_curvature_se_matches_the_spread_over_calls(case, antithetic):
    if case == "quadratic":
        model, loss_fn, radius = Quadratic(), (lambda out, _: out), 0.3
        x, t = torch.zeros(1, 12, dtype=torch.float64), None
    else:
        model, loss_fn, radius = mlp(), F.cross_entropy, 0.3
        g = torch.Generator().manual_seed(5)
        x, t = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)
    obj = smooth(model, loss_fn, layers=[1], radius=radius, samples=4, antithetic=antithetic, seed=7)
    estimates, errors = [], []
    for _ in range(4000):
        with torch.no_grad():  # only the estimates are needed: a third faster without the graph
            obj(x, t)
        estimates.append(float(obj.last.curvature))
        errors.append(float(obj.last.curvature_se))
    spread = float(torch.tensor(estimates).std())
    reported = sum(errors) / len(errors)
    # 4000 calls pin both to about 1.5%: 5% (tighter than the 15% asked) catches the 8% bias of s without c4
    assert abs(reported / spread - 1) < 0.05, (reported, spread)


def test_no_curvature_under_reduced_precision_autocast():
    model = mlp().float()
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    obj = smooth(model, layers=[1], radius=0.1, samples=4, seed=0)
    obj(x, t)
    assert obj.last.curvature is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        obj(x, t)
    assert obj.last.curvature is None and obj.last.curvature_se is None


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_with_dropout_each_engine_is_the_gradient_of_its_own_loss(engine):
    """With dropout the engines draw different masks (they cannot agree), but each one's gradient is exact."""
    model = mlp(dropout=0.3)
    g = torch.Generator().manual_seed(8)
    x, t = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    obj = smooth(model, layers=[1, 2], radius=0.1, samples=4, seed=11, engine=engine)
    gen_state, rng_state = obj._generator(torch.device("cpu")).get_state(), torch.get_rng_state()

    def loss():  # the same perturbations and dropout masks at every evaluation
        obj.generator.set_state(gen_state)
        torch.set_rng_state(rng_state)
        return obj(x, t)

    loss().backward()
    direction = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}
    analytic = sum(float((p.grad * direction[n]).sum()) for n, p in model.named_parameters())
    eps, values = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.add_(sign * eps * direction[n])
        values.append(float(loss().detach()))
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.sub_(sign * eps * direction[n])
    assert math.isclose((values[0] - values[1]) / (2 * eps), analytic, rel_tol=1e-6)
