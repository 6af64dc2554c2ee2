import pytest
import torch.nn.functional as F
from conftest import cnn
from torch import nn

import pleat
from pleat.models import cnn_cifar10, fc


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
