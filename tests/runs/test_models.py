import math

import pytest
import torch

import pleat
from pleat.runs.models import build, cnn_cifar10, cnn_stl10, fc


def count(model):
    return sum(p.numel() for p in model.parameters())


def linear(i, o):
    return i * o + o


def conv(i, o):
    return i * o * 9 + o


def test_fc_shapes_and_counts():
    for depth in (2, 3, 4):
        model = fc(depth)
        assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
        assert count(model) == linear(784, 784) * depth + linear(784, 10)
        assert [s.name for s in pleat.select(model, list(range(1, depth + 1)))] == [
            f"fc{i}.weight" for i in range(1, depth + 1)
        ]


def test_cnn_shapes_and_counts():
    model = cnn_cifar10()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, 2048)  # 128 x 4 x 4 (eq 24)
    expected = conv(3, 64) + conv(64, 64) + conv(64, 128) + 2 * conv(128, 128) + 2 * linear(2048, 2048)
    assert count(model) == expected + linear(2048, 10)
    model = cnn_stl10()
    assert model.features(torch.rand(1, 3, 96, 96)).shape == (1, 6400)  # 16 x 20 x 20 (eq 25)
    expected = conv(3, 8) + conv(8, 8) + conv(8, 16) + 2 * conv(16, 16) + 2 * linear(6400, 6400)
    assert count(model) == expected + linear(6400, 10)


@pytest.mark.parametrize("activation, gain", [("relu", math.sqrt(2)), ("tanh", 5 / 3)])
def test_kaiming_initialisation(activation, gain):
    torch.manual_seed(0)
    model = fc(2, activation=activation)
    for layer in (model.fc1, model.fc2):
        w = layer.weight.detach()
        expected = gain / math.sqrt(w.shape[1])
        assert abs(float(w.std()) - expected) < 0.01 * expected
        assert abs(float(w.mean())) < 4 * expected / math.sqrt(w.numel())
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    conv_w = cnn_cifar10().features[2].weight.detach()
    assert abs(float(conv_w.std()) - math.sqrt(2 / (64 * 9))) < 0.02 * math.sqrt(2 / (64 * 9))


def test_build_errors():
    with pytest.raises(ValueError, match="model must be one of"):
        build("resnet")
    with pytest.raises(ValueError, match="activation"):
        fc(2, activation="gelu")


def test_torch_init_keeps_pytorchs_own_initialisation():
    from pleat.runs.config import Config

    torch.manual_seed(0)
    kaiming = build("fc2")
    torch.manual_seed(0)
    own = build("fc2", init="torch")
    # nn.Linear's default: weights and biases uniform on ±1/sqrt(fan_in), so std 1/sqrt(3 fan_in)
    assert abs(own.fc1.weight.std().item() - 1 / math.sqrt(3 * 784)) < 1e-3
    assert own.fc1.bias.abs().max().item() > 0 and kaiming.fc1.bias.abs().max().item() == 0
    assert abs(kaiming.fc1.weight.std().item() - math.sqrt(2 / 784)) < 1e-3
    assert Config(init="kaiming").key() == Config().key() != Config(init="torch").key()
    with pytest.raises(ValueError, match="init"):
        build("fc2", init="xavier")
