"""Per-layer radii: a mapping, a callable, relative to the weights' scale; against a naive loop in float64."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pleat
from pleat.core import radii
from pleat.core.kernels import Box, Scaled
from pleat.runs.config import Config
from pleat.runs.models import fc


def case(seed=0):
    torch.manual_seed(seed)
    model = fc(2).double()
    x = torch.randn(16, 1, 28, 28, dtype=torch.float64)
    t = torch.randint(0, 10, (16,))
    return model, x, t


def naive(model, x, t, boxes: dict, samples: int, kind: str, generator: torch.Generator):
    """The sampled loss by hand: point by point, each weight drawn from its own box, in selection order."""
    params = dict(model.named_parameters())
    losses = [F.cross_entropy(model(x), t)]
    for _ in range(samples):
        shifted = dict(params)
        for name, box in boxes.items():
            with torch.no_grad():
                delta = box.sample_(torch.empty_like(params[name]), generator)
            shifted[name] = params[name] + delta
        losses.append(F.cross_entropy(torch.func.functional_call(model, shifted, (x,)), t))
    stacked = torch.stack(losses)
    return pleat.aggregate(kind, stacked, torch.zeros_like(stacked))


def assert_naive(model, x, t, radius, boxes: dict, kind: str, sharpness: float, engine: str):
    """The loss object on layers {1, 2} with `radius`, and its gradient, equal the naive loop over `boxes`."""
    obj = pleat.PartialLocalEntropy(
        model,
        F.cross_entropy,
        layers=[1, 2],
        radius=radius,
        sharpness=sharpness,
        samples=3,
        kind=kind,
        engine=engine,
        generator=torch.Generator().manual_seed(1),
    )
    loss = obj(x, t)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = naive(model, x, t, boxes, 3, kind, torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    for g, e in zip(grads, torch.autograd.grad(expected, list(model.parameters()))):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)
    return obj


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("kind, sharpness", [("pla", math.inf), ("plea", math.inf), ("pla", 400.0)])
def test_a_radius_per_layer_is_the_naive_loop_with_a_box_per_layer(engine, kind, sharpness):
    model, x, t = case()
    radius = {"fc1": 0.005, "fc2": 0.02}
    boxes = {"fc1.weight": Box(0.005, sharpness), "fc2.weight": Box(0.02, sharpness)}
    obj = assert_naive(model, x, t, radius, boxes, kind, sharpness, engine)
    assert {n: k.radius for n, k in obj.kernels().items()} == {"fc1.weight": 0.005, "fc2.weight": 0.02}
    assert "fc1.weight: 0.005" in repr(obj) and "fc2.weight: 0.02" in obj.describe()
    # a callable of the selected parameter gives the same radii, and so the same loss from the same generator
    assert_naive(model, x, t, lambda s: radius[s.module_name], boxes, kind, sharpness, engine)


def rescaled(model: nn.Module, c: float) -> nn.Module:
    """The same function: layer 1 (weight and bias) times c, layer 2's weight divided by c (ReLU is 1-homogeneous)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc1.weight.mul_(c)
        other.fc1.bias.mul_(c)
        other.fc2.weight.div_(c)
    return other


def test_relative_radii_do_not_see_a_rescaling_of_the_layers_and_absolute_ones_do():
    model, x, t = case()
    other = rescaled(model, 3.0)
    torch.testing.assert_close(other(x), model(x), rtol=1e-12, atol=1e-12)

    def per_point(m, radius):
        obj = pleat.PartialLocalEntropy(
            m, F.cross_entropy, layers=[1, 2], radius=radius, samples=4, generator=torch.Generator().manual_seed(2)
        )
        loss = obj(x, t)
        return loss, obj.last.losses, obj

    loss, losses, obj = per_point(model, pleat.relative(0.05))
    loss_b, losses_b, obj_b = per_point(other, pleat.relative(0.05))
    torch.testing.assert_close(losses_b, losses, rtol=1e-10, atol=1e-12)  # every point, not only the mean
    rms = model.fc1.weight.detach().square().mean().sqrt().item()
    assert obj.kernels()["fc1.weight"].radius == pytest.approx(0.05 * rms, rel=1e-12)
    assert obj_b.kernels()["fc1.weight"].radius == pytest.approx(3 * 0.05 * rms, rel=1e-12)
    _, absolute, _ = per_point(model, 0.01)
    _, absolute_b, _ = per_point(other, 0.01)
    assert (absolute_b[1:] - absolute[1:]).abs().max() > 1e-4  # an absolute R smooths the two nets differently
    # re-read at every call: scaling the weights in place scales the boxes
    with torch.no_grad():
        model.fc2.weight.mul_(2)
    assert obj.kernels()["fc2.weight"].radius == pytest.approx(
        0.05 * model.fc2.weight.detach().square().mean().sqrt().item(), rel=1e-12
    )


@pytest.mark.parametrize("per", ["layer", "weight"])
def test_the_curvature_estimate_with_radii_per_layer_is_the_variance_weighted_trace(per):
    """A quadratic L = Σ_l c_l |W_l|² / 2 has H = c_l I on layer l; with per-coordinate variances v_i the mean rise
    is Σ_i v_i c_i / 2 and the estimate Σ_i (v_i / v) c_i, v the mean variance over the smoothed weights. Per layer
    (a mapping of R): v_i = R_l²/3; per weight (relative, R_i = rho |w_i|): v_i = rho² w_i² / 3."""

    from test_scoping import Quadratic, quadratic_loss

    c = {"a": 2.0, "b": 5.0}
    loss_fn = quadratic_loss((c["a"], c["b"]))
    model = Quadratic()
    radius = {"a": 0.01, "b": 0.03} if per == "layer" else pleat.relative(0.2, per="weight")
    obj = pleat.PartialLocalEntropy(
        model,
        loss_fn,
        layers=["a", "b"],
        radius=radius,
        samples=8,
        engine="sequential",
        generator=torch.Generator().manual_seed(0),
    )
    weights = {n: getattr(model, n).weight.detach() for n in c}
    if per == "layer":
        v = {n: torch.full_like(w, radius[n] ** 2 / 3) for n, w in weights.items()}
    else:
        v = {n: 0.2**2 * w.square() / 3 for n, w in weights.items()}
    mean_v = float(sum(x.sum() for x in v.values()) / sum(x.numel() for x in v.values()))
    assert obj.variance() == pytest.approx(mean_v, rel=1e-8)
    expected = float(sum(v[n].sum() / mean_v * c[n] for n in c))
    estimates = []
    for _ in range(200):
        obj(torch.zeros(1), None)
        estimates.append(float(obj.last.curvature))
    mean = sum(estimates) / len(estimates)
    se = (sum((e - mean) ** 2 for e in estimates) / (len(estimates) - 1) / len(estimates)) ** 0.5
    assert abs(mean - expected) < 4 * se, (mean, expected, se)


def test_radius_mappings_must_cover_every_smoothed_weight_once():
    model, _, _ = case()
    with pytest.raises(ValueError, match="no R for fc2.weight"):
        pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1, 2], radius={"fc1": 0.01})
    with pytest.raises(ValueError, match="falls under two entries"):
        pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1], radius={"fc1": 0.01, 1: 0.02})
    with pytest.raises(ValueError, match="radius of fc1.weight must be a finite number >= 0"):
        pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1], radius={"fc1": -0.01})
    with pytest.raises(ValueError, match="rho must be"):
        pleat.relative(-1)
    zero = pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1, 2], radius={"fc1": 0.0, "fc2": 0.0})
    assert "the plain loss" in zero.describe()


class ByHand:
    """A box of half-side rho |w_i| per weight, drawn by hand: the box of half-side rho, times |w| (no gradient)."""

    def __init__(self, rho, weight, sharpness=math.inf):
        self.box, self.scale = Box(rho, sharpness), weight.detach().abs().clone()

    def sample_(self, out, generator):
        return self.box.sample_(out, generator) * self.scale


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("kind, sharpness", [("pla", math.inf), ("plea", math.inf), ("pla", 400.0)])
def test_a_radius_per_weight_is_the_naive_loop_with_a_box_per_weight(engine, kind, sharpness):
    model, x, t = case()
    with torch.no_grad():
        model.fc1.weight[:3] = 0.0  # weights at zero: never perturbed
    boxes = {n: ByHand(0.3, model.get_parameter(n), sharpness) for n in ("fc1.weight", "fc2.weight")}
    obj = assert_naive(model, x, t, pleat.relative(0.3, per="weight"), boxes, kind, sharpness, engine)
    assert "per='weight'" in repr(obj)
    # each layer's mean variance: the unit box's times mean(w²); for the hard box, the per-layer relative radius's
    per_layer = pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1, 2], radius=pleat.relative(0.3))
    for name, k in obj.kernels().items():
        mean_square = model.get_parameter(name).detach().square().mean().item()
        assert k.variance == pytest.approx(Box(0.3, sharpness).variance * mean_square, rel=1e-12)
        if math.isinf(sharpness):
            assert k.variance == pytest.approx(per_layer.kernels()[name].variance, rel=1e-12)
    delta = obj.kernels()["fc1.weight"].sample_(torch.empty_like(model.fc1.weight), torch.Generator().manual_seed(0))
    assert (delta[:3] == 0).all() and (delta[3:] != 0).any()


def test_a_radius_per_weight_does_not_see_a_rescaling_of_each_neuron_and_one_per_layer_does():
    """Scale each hidden neuron i by c_i > 0 (its row of fc1 and its bias) and column i of fc2 by 1 / c_i: the same
    function. R_i = rho |w_i| scales with every weight, so the sampled loss is the same point by point; RMS(W_l)
    does not follow a per-neuron rescaling, so R_l = rho x RMS(W_l) smooths the two nets differently."""
    model, x, t = case()
    other = copy.deepcopy(model)
    c = torch.rand(model.fc1.weight.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 4
    c += 0.25
    with torch.no_grad():
        other.fc1.weight.mul_(c[:, None])
        other.fc1.bias.mul_(c)
        other.fc2.weight.div_(c[None, :])
    torch.testing.assert_close(other(x), model(x), rtol=1e-12, atol=1e-12)

    def losses(m, radius):
        obj = pleat.PartialLocalEntropy(
            m, F.cross_entropy, layers=[1, 2], radius=radius, samples=4, generator=torch.Generator().manual_seed(2)
        )
        obj(x, t)
        return obj.last.losses

    torch.testing.assert_close(
        losses(other, pleat.relative(0.3, per="weight")),
        losses(model, pleat.relative(0.3, per="weight")),
        rtol=1e-10,
        atol=1e-12,
    )
    per_layer = losses(other, pleat.relative(0.3)) - losses(model, pleat.relative(0.3))
    assert per_layer[1:].abs().max() > 1e-4


def test_a_radius_per_weight_needs_a_flat_kernel_and_a_known_rule():
    model, _, _ = case()
    with pytest.raises(ValueError, match="per must be one of"):
        pleat.relative(0.1, per="neuron")
    with pytest.raises(ValueError, match="needs a flat kernel"):
        Scaled(Box(0.1, 50.0, sampling="uniform"), model.fc2.weight.detach().abs())
    config = Config(radius="relative-weight:0.2")
    assert radii.from_config(config.radius) == pleat.relative(0.2, per="weight")
    assert config.key() not in (Config().key(), Config(radius="relative:0.2").key())


def test_a_config_string_is_the_same_radius_in_the_loss_object():
    """radius="relative:RHO" (a config's form) is pleat.relative(RHO), point for point; "scoped:RISE" needs data,
    and the error says how to scope."""
    model, x, t = case()

    def losses(radius):
        obj = pleat.PartialLocalEntropy(
            model, F.cross_entropy, layers=[1, 2], radius=radius, generator=torch.Generator().manual_seed(3)
        )
        obj(x, t)
        return obj.last.losses

    torch.testing.assert_close(losses("relative:0.05"), losses(pleat.relative(0.05)), rtol=0, atol=0)
    weight = losses(pleat.relative(0.05, per="weight"))
    torch.testing.assert_close(losses("relative-weight:0.05"), weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"radius=pleat.scope\(model, loss_fn, data, layers, rise=0.01\)"):
        pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1], radius="scoped:0.01")
    with pytest.raises(ValueError, match="a string must read relative:RHO"):
        pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1], radius="0.01")


class FilterByHand:
    """A box of half-side rho x RMS(w_f) for every weight of output unit f, written out row by row."""

    def __init__(self, rho, weight):
        w = weight.detach()
        self.box = Box(rho)
        self.scale = torch.stack([row.square().mean().sqrt() * torch.ones_like(row) for row in w])

    def sample_(self, out, generator):
        return self.box.sample_(out, generator) * self.scale


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("kind", ["pla", "plea"])
def test_a_radius_per_filter_is_the_naive_loop_with_a_box_per_output_unit(engine, kind):
    model, x, t = case()
    with torch.no_grad():
        model.fc2.weight[:2] *= 10.0  # two units ten times larger: their boxes too
    boxes = {n: FilterByHand(0.3, model.get_parameter(n)) for n in ("fc1.weight", "fc2.weight")}
    obj = assert_naive(model, x, t, pleat.relative(0.3, per="filter"), boxes, kind, math.inf, engine)
    assert "per='filter'" in repr(obj)
    delta = obj.kernels()["fc2.weight"].sample_(torch.empty_like(model.fc2.weight), torch.Generator().manual_seed(0))
    ratio = delta[:2].abs().max(1).values.min() / delta[2:].abs().max(1).values.max()
    assert ratio > 3  # the boxes of the large units are about 10x wider


def sampled(model, x, t, radius, layers):
    """The per-point losses of PLA with y = 4 on `layers`, from a fixed generator."""
    obj = pleat.PartialLocalEntropy(
        model, F.cross_entropy, layers=layers, radius=radius, samples=4, generator=torch.Generator().manual_seed(2)
    )
    obj(x, t)
    return obj.last.losses


def test_a_radius_per_filter_does_not_see_a_rescaling_of_one_filter_and_one_per_layer_does():
    """Scale one conv filter (its weights and bias) of a ReLU CNN by c and the next layer's input channel by 1/c:
    the same function. R_f = rho RMS(W_f) follows the filter, so smoothing that layer samples the same losses point
    by point; a per-layer relative radius does not follow it. (The next layer's filters change too, their input
    channel shrank, so it is the rescaled layer that is invariant.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.ReLU(), nn.Flatten()).double()
    model.append(nn.Linear(3 * 24 * 24, 10).double())
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    t = torch.randint(0, 10, (6,))
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight[1] *= 7.0
        other[0].bias[1] *= 7.0
        other[2].weight[:, 1] /= 7.0
    torch.testing.assert_close(other(x), model(x), rtol=1e-12, atol=1e-12)
    per_filter, per_layer = pleat.relative(0.2, per="filter"), pleat.relative(0.2)
    torch.testing.assert_close(
        sampled(other, x, t, per_filter, [1]), sampled(model, x, t, per_filter, [1]), rtol=1e-10, atol=1e-12
    )
    assert (sampled(other, x, t, per_layer, [1]) - sampled(model, x, t, per_layer, [1]))[1:].abs().max() > 1e-4


def test_a_config_string_relative_filter():
    config = Config(radius="relative-filter:0.2")
    assert radii.from_config(config.radius) == pleat.relative(0.2, per="filter")
    assert config.key() not in (Config(radius="relative:0.2").key(), Config(radius="relative-weight:0.2").key())


def test_a_mapping_entry_outside_the_smoothed_layers_is_an_error():
    model, x, t = case()
    with pytest.raises(ValueError, match=r"entry 'out' names no smoothed layer .*add it to layers="):
        pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1, 2], radius={"fc1": 0.01, "fc2": 0.01, "out": 0.1})(
            x, t
        )
