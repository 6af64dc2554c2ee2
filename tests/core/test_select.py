import pytest
import torch.nn.functional as F
from conftest import cnn
from torch import nn

import pleat
from pleat.runs.models import cnn_cifar10, fc


def names(model, layers, include_bias=False):
    return [s.name for s in pleat.select(model, layers, include_bias)]


def test_paper_indices_names_patterns_types_callables():
    model = fc(3)
    assert names(model, [1]) == ["fc1.weight"]
    assert names(model, [2, 1]) == ["fc1.weight", "fc2.weight"]  # registration order, no duplicates
    assert names(model, 2) == ["fc2.weight"]
    assert names(model, "fc3") == ["fc3.weight"]
    assert names(model, "fc3.weight") == ["fc3.weight"]
    assert names(model, "fc*") == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert names(model, nn.Linear) == ["fc1.weight", "fc2.weight", "fc3.weight", "out.weight"]
    assert names(model, lambda n, m: n.endswith("2")) == ["fc2.weight"]
    assert names(model, "all") == names(model, None) == names(model, nn.Linear)
    assert names(model, [1], include_bias=True) == ["fc1.weight", "fc1.bias"]


def test_cnn_head_layers_match_paper_numbering():
    model = cnn_cifar10()
    assert names(model, [6]) == names(model, "head1") == ["head1.weight"]
    assert names(model, [7]) == ["head2.weight"]
    assert names(model, "head*") == ["head1.weight", "head2.weight"]
    assert len(pleat.weight_layers(model)) == 8


def test_batchnorm_weight_only_by_explicit_name():
    model = cnn()
    assert names(model, "all") == ["0.weight", "3.weight", "7.weight"]
    assert names(model, "1") == ["1.weight"]  # the BatchNorm's affine weight, when asked for by name


@pytest.mark.parametrize(
    "layers, match",
    [
        ([], "empty"),
        ([9], "out of range 1..4"),
        ([0], "out of range"),
        ("conv*", "matches no layer"),
        ("nope", "matches no layer"),
        ("", "ambiguous"),
        ([True], "bool"),
        ([1.5], "not understood"),
    ],
)
def test_bad_selection_lists_available_layers(layers, match):
    model = fc(3)
    with pytest.raises((ValueError, TypeError), match=match) as info:
        pleat.select(model, layers)
    if isinstance(info.value, ValueError):
        assert "fc2 (Linear" in str(info.value)


def test_container_name_is_ambiguous():
    model = cnn_cifar10()
    with pytest.raises(ValueError, match="features.*"):
        pleat.select(model, "features")


def test_describe_lists_selection():
    obj = pleat.PartialLocalEntropy(fc(2), F.cross_entropy, layers=[1, 2], radius=0.01)
    text = obj.describe()
    assert "fc1.weight" in text and "fc2.weight" in text and "(784, 784)" in text and "1,229,312" in text


def test_a_pattern_selects_weight_layers_not_normalisation_weights():
    from collections import OrderedDict

    block = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(3, 4, 3), bn=nn.BatchNorm2d(4), conv2=nn.Conv2d(4, 4, 3), bn2=nn.BatchNorm2d(4))
    )
    model = nn.Sequential(OrderedDict(layer4=block, head=nn.Linear(4, 2)))
    assert [s.name for s in pleat.select(model, ["layer4.*"])] == ["layer4.conv.weight", "layer4.conv2.weight"]
    assert [s.name for s in pleat.select(model, ["layer4.bn"])] == ["layer4.bn.weight"]  # named: taken as asked
    with pytest.raises(ValueError, match=r"matches only normalisation layers \(layer4.bn, layer4.bn2\)"):
        pleat.select(model, ["layer4.bn*"])


def test_layer4_of_a_resnet18_is_its_five_convolutions():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    chosen = [s.name for s in pleat.select(model, ["layer4.*"])]
    assert chosen == [
        "layer4.0.conv1.weight",
        "layer4.0.conv2.weight",
        "layer4.0.downsample.0.weight",
        "layer4.1.conv1.weight",
        "layer4.1.conv2.weight",
    ]
    with pytest.raises(ValueError, match="'layer4.*'"):  # the container's own error suggests the pattern above
        pleat.select(model, ["layer4"])


def test_norm_selects_the_affine_parameters_of_every_normalisation_layer():
    from collections import OrderedDict

    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3),
            bn=nn.BatchNorm2d(4),
            plain=nn.BatchNorm2d(4, affine=False),  # no affine parameters: nothing to select
            flat=nn.Flatten(),
            ln=nn.LayerNorm(4 * 6 * 6),
            head=nn.Linear(4 * 6 * 6, 2),
        )
    )
    assert [s.name for s in pleat.select(model, "norm")] == ["bn.weight", "bn.bias", "ln.weight", "ln.bias"]
    assert [s.name for s in pleat.select(model, ["norm", "head"])] == [
        "bn.weight",
        "bn.bias",
        "ln.weight",
        "ln.bias",
        "head.weight",
    ]
    assert "norm" not in [s.module_name for s in pleat.select(model, "all")]
    with pytest.raises(ValueError, match="matches no layer"):
        pleat.select(nn.Sequential(nn.Linear(3, 2)), "norm")


def test_the_loss_on_the_norm_parameters_is_the_naive_loop():
    """PLA on every BatchNorm's scale and shift of a small CNN, float64, both engines: the loss and its gradient
    are those of a loop that adds each point's draws to the affine parameters by hand, in selection order."""
    import copy

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 24 * 24, 5),
    ).double()
    x, t = torch.randn(8, 1, 28, 28, dtype=torch.float64), torch.randint(5, (8,))
    for engine in ("vectorised", "sequential"):
        m = copy.deepcopy(model)
        obj = pleat.PartialLocalEntropy(
            m,
            F.cross_entropy,
            layers="norm",
            radius=0.3,
            samples=3,
            engine=engine,
            generator=torch.Generator().manual_seed(1),
        )
        loss = obj(x, t)
        grads = torch.autograd.grad(loss, list(m.parameters()))
        ref = copy.deepcopy(model)
        params = dict(ref.named_parameters())
        g = torch.Generator().manual_seed(1)
        losses = [F.cross_entropy(torch.func.functional_call(ref, params, (x,)), t)]
        names = ["1.weight", "1.bias", "4.weight", "4.bias"]
        assert [s.name for s in obj.selected] == names
        for _ in range(3):
            shifted = dict(params)
            for n in names:
                delta = pleat.Box(0.3).sample_(torch.empty_like(params[n]), g)
                shifted[n] = params[n] + delta
            losses.append(F.cross_entropy(torch.func.functional_call(ref, shifted, (x,)), t))
        expected = torch.stack(losses).mean()
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
        for a, b in zip(grads, torch.autograd.grad(expected, list(ref.parameters()))):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
