"""The networks of the paper, with module names and layer numbers that match its figures.

Fully-connected nets (Section 4): `fc(depth)` has `depth` hidden layers of 784 units, named fc1..fc{depth}
(the paper's layers 1..depth, the ones that may be smoothed) and an output layer `out` that is never smoothed.
CNNs (Section 5, eq 24 and 25): 3x3 convolutions without padding in `features`, then the head layers
`head1` (the paper's head layer I), `head2` (head layer II) and `out`. Weight layer indices: conv 1-5, head I = 6,
head II = 7, out = 8.
All weights use Kaiming (He) normal initialisation, as the paper does for its CNNs; biases start at zero.
`init="torch"` keeps PyTorch's own initialisation instead (the paper states none for its FC nets).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


INITS = ("kaiming", "torch")


def _kaiming_(model: nn.Module, activation: str) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity=activation)  # type: ignore[arg-type]  # relu | tanh
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def fc(depth: int = 2, width: int = 784, activation: str = "relu", inputs: int = 784, classes: int = 10) -> nn.Module:
    """The paper's fully-connected net: inputs -> width x depth -> classes ("2-layer" is depth=2)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1 hidden layer, got {depth}")
    act = _activation(activation)
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i in range(1, depth + 1):
        layers += [(f"fc{i}", nn.Linear(inputs if i == 1 else width, width)), (f"act{i}", act())]
    layers.append(("out", nn.Linear(width, classes)))
    return _kaiming_(nn.Sequential(OrderedDict(layers)), activation)


def _cnn(channels: tuple[int, int], flat: int, activation: str, classes: int) -> nn.Module:
    a, b = channels
    act = _activation(activation)
    features = nn.Sequential(
        nn.Conv2d(3, a, 3),
        act(),
        nn.Conv2d(a, a, 3),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(a, b, 3),
        act(),
        nn.Conv2d(b, b, 3),
        act(),
        nn.Conv2d(b, b, 3),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    model = nn.Sequential(
        OrderedDict(
            [
                ("features", features),
                ("head1", nn.Linear(flat, flat)),
                ("act1", act()),
                ("head2", nn.Linear(flat, flat)),
                ("act2", act()),
                ("out", nn.Linear(flat, classes)),
            ]
        )
    )
    return _kaiming_(model, activation)


def cnn_cifar10(activation: str = "relu", classes: int = 10) -> nn.Module:
    """Eq 24: 32x32x3 -> conv 64, 64, pool, 128, 128, 128, pool -> 2048 -> 2048 (I) -> 2048 (II) -> 10."""
    return _cnn((64, 128), 2048, activation, classes)


def cnn_stl10(activation: str = "relu", classes: int = 10) -> nn.Module:
    """Eq 25: 96x96x3 -> conv 8, 8, pool, 16, 16, 16, pool -> 6400 -> 6400 (I) -> 6400 (II) -> 10."""
    return _cnn((8, 16), 6400, activation, classes)


def cnn_bn(width: int = 16, classes: int = 10, channels: int = 1) -> nn.Module:
    """Beyond the paper: a small BatchNorm CNN for 28x28 images (the modern recipe's net on the data the team has):
    conv-BN-ReLU blocks of width w, w, pool, 2w, 2w, pool, 4w, global average pool, a linear head. Sequential, so
    that groups of runs train it vectorised; 35,674 parameters at w = 16."""
    blocks: list[tuple[str, nn.Module]] = []
    widths = [(channels, width), (width, width), None, (width, 2 * width), (2 * width, 2 * width), None]
    widths.append((2 * width, 4 * width))
    for i, io in enumerate(widths):
        if io is None:
            blocks.append((f"pool{i}", nn.MaxPool2d(2)))
            continue
        blocks += [(f"conv{i}", nn.Conv2d(*io, 3, padding=1, bias=False)), (f"bn{i}", nn.BatchNorm2d(io[1]))]
        blocks.append((f"act{i}", nn.ReLU()))
    blocks += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("out", nn.Linear(4 * width, classes))]
    return _kaiming_(nn.Sequential(OrderedDict(blocks)), "relu")


MODELS = {
    "fc2": lambda activation="relu": fc(2, activation=activation),
    "fc3": lambda activation="relu": fc(3, activation=activation),
    "fc4": lambda activation="relu": fc(4, activation=activation),
    "cnn-cifar10": cnn_cifar10,
    "cnn-stl10": cnn_stl10,
    "cnn-bn": lambda activation="relu": cnn_bn(),
    "cnn-bn-32": lambda activation="relu": cnn_bn(32),
}


def build(name: str, activation: str = "relu", init: str = "kaiming") -> nn.Module:
    """A paper model by its config name (see `MODELS`), Kaiming-initialised, or with torch's own init."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    model = MODELS[name](activation=activation)
    if init == "torch":  # redrawn from the same seeded stream: nn.Linear / nn.Conv2d's own reset_parameters
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.reset_parameters()
    return model
