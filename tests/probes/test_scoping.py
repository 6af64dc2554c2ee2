"""Radii scoped by curvature: exact on a quadratic, the target rise on a trained MLP."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED, needs_data
from torch import nn

import pleat
from pleat.runs.models import fc


class Quadratic(nn.Module):
    """L = Σ_l c_l |W_l|² / 2 through `loss`: H_ll = c_l I, tr(H_ll) = c_l n_l, and vᵀHv = c_l n_l for every
    Rademacher v, so Hutchinson's estimate is exact."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(30, 20, bias=False).double()
        self.b = nn.Linear(20, 10, bias=False).double()

    def forward(self, x):
        return self.a.weight, self.b.weight


def quadratic_loss(c):
    return lambda out, _: (c[0] * out[0].square().sum() + c[1] * out[1].square().sum()) / 2


def test_scope_gives_a_quadratics_exact_radii():
    c = (2.0, 5.0)
    radii = pleat.scope(Quadratic(), quadratic_loss(c), (torch.zeros(1), None), ["a", "b"], rise=0.01, probes=3)
    assert radii["a"] == pytest.approx(math.sqrt(6 * 0.01 / (c[0] * 600)), rel=1e-12)
    assert radii["b"] == pytest.approx(math.sqrt(6 * 0.01 / (c[1] * 200)), rel=1e-12)
    with pytest.raises(ValueError, match="layer b has a Hessian trace of -"):
        pleat.scope(Quadratic(), quadratic_loss((2.0, -1.0)), (torch.zeros(1), None), ["a", "b"], rise=0.01)
    with pytest.raises(ValueError, match="rise must be"):
        pleat.scope(Quadratic(), quadratic_loss(c), (torch.zeros(1), None), ["a"], rise=0)


@needs_data
def test_scoped_radii_raise_a_trained_mlps_loss_by_the_target_within_20_percent():
    """fc2 after 150 SGD steps on Fashion-MNIST, float64. Tolerance 20%: the second-order rise, Hutchinson's
    estimate (32 probes) and the sampled rise (4 x 32 antithetic points) each carry a few percent (measured on
    2,000 examples at rise 0.005: 0.00458, 0.00453, 0.00536 for fc1, fc2, out)."""
    from pleat.runs import data

    torch.manual_seed(0)
    ds = data.load("fashion-mnist", str(SHARED), device=torch.device("cpu"), train_subset=4000, test_subset=100)
    model = fc(2).double()
    x, y = ds.x_train.double(), ds.y_train
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(150):
        i = torch.randint(0, len(x), (128,))
        optimizer.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        optimizer.step()
    batch = (x[:1000], y[:1000])
    radii = pleat.scope(
        model, F.cross_entropy, batch, [1, 2, 3], rise=0.005, probes=32, generator=torch.Generator().manual_seed(0)
    )
    assert set(radii) == {"fc1", "fc2", "out"}
    for name, radius in radii.items():
        obj = pleat.PartialLocalEntropy(
            model,
            F.cross_entropy,
            layers=[name],
            radius=radius,
            samples=32,
            antithetic=True,
            generator=torch.Generator().manual_seed(1),
        )
        rises = []
        for _ in range(4):
            with torch.no_grad():
                obj(*batch)
            rises.append(float((obj.last.losses[1:] - obj.last.losses[0]).mean()))
        assert sum(rises) / len(rises) == pytest.approx(0.005, rel=0.2), (name, rises)
    # the radii go straight into the loss object as a mapping: every layer at the same expected rise
    both = pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1, 2, 3], radius=radii)
    assert {n: k.radius for n, k in both.kernels().items()} == {f"{n}.weight": r for n, r in radii.items()}


def test_scope_and_profile_leave_batchnorm_statistics_and_the_mode_alone():
    """The audit's fault: in training mode, scope and profile ran the model and moved its running statistics (even
    when scope then raised); profile on a model in eval mode read eval-mode temperatures."""
    import copy

    import pytest
    import torch.nn.functional as F
    from torch import nn

    import pleat

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)
    ).double()
    batches = [(torch.randn(8, 1, 28, 28, dtype=torch.float64), torch.randint(10, (8,))) for _ in range(2)]
    before = copy.deepcopy(model.state_dict())

    def unchanged():
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k

    pleat.scope(model, F.cross_entropy, batches, [2], rise=0.01, generator=torch.Generator().manual_seed(0))
    unchanged()
    with pytest.raises(ValueError, match="Hessian trace of -"):  # the conv's trace comes out negative here
        pleat.scope(model, F.cross_entropy, batches, [1, 2], rise=0.01, generator=torch.Generator().manual_seed(0))
    unchanged()
    trained = pleat.profile(model, F.cross_entropy, batches, samples=2, probes=2, radii=(0.01,))
    unchanged()
    assert model.training
    model.eval()
    evaluated = pleat.profile(model, F.cross_entropy, batches, samples=2, probes=2, radii=(0.01,))
    unchanged()
    assert not model.training and not model[1].training
    for a, b in zip(trained.layers, evaluated.layers):  # the temperature is a training-mode reading either way
        assert (a.signal, a.noise) == pytest.approx((b.signal, b.noise), rel=1e-12)
