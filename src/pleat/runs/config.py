"""A run's configuration: a frozen dataclass, read from TOML and `--set key=value`, checked before any work."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from pleat.core import radii
from pleat.core.radii import RADIUS_RULES, radius_rule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATASETS = ("mnist", "fashion-mnist", "cifar10", "stl10")
MODELS = ("fc2", "fc3", "fc4", "cnn-cifar10", "cnn-stl10", "cnn-bn", "cnn-bn-32")
KINDS = ("none", "pla", "plea", "sam", "noise")
DTYPES = ("float32", "float64", "bfloat16", "tf32")
# keys that say where and how to run, not what to compute: they do not enter the run's identity
NOT_HASHED = ("data_dir", "out_dir", "device", "tensorboard", "progress")
# keys of earlier versions, accepted when reading their stores and ignored: `engine` chose PartialLocalEntropy's
# engine, and CLI runs no longer go through it (their network is evaluated by pleat.runs.stacked, see pleat.runs.train)
RETIRED_KEYS = ("engine",)
# keys added after 0.1.0 enter the identity only when they differ from their default, so that adding a key never
# changes the identity of the runs a store already holds (a new key must default to the old behaviour)
ADDED_KEYS = {
    "probe_every": 0,
    "probe_gradient": "objective",
    "init": "kaiming",
    "probe_estimator": "layer",
    "probe_windows": "fixed",
    "rescope_every": 0,
    "label_noise": 0.0,
    "augment": False,
    "schedule": "constant",
    "normalize": False,
}


@dataclass(frozen=True)
class Config:
    """One training run; defaults are the paper's Figure 3 protocol (2-layer FC net, Fashion-MNIST, PLA on layer 2)."""

    dataset: str = "fashion-mnist"  # mnist | fashion-mnist | cifar10 | stl10
    # fc2 | fc3 | fc4 (784-wide hidden layers) | cnn-cifar10 (eq 24) | cnn-stl10 (eq 25) | cnn-bn (beyond the
    # paper: a small BatchNorm CNN for MNIST and Fashion-MNIST, models.cnn_bn, of width 16) | cnn-bn-32 (width 32)
    model: str = "fc2"
    activation: str = "relu"  # relu | tanh
    # kaiming (He normal weights, zero biases: the paper's CNNs; pleat's default for every net) | torch (PyTorch's
    # own nn.Linear / nn.Conv2d initialisation: the paper states no initialisation for its FC nets)
    init: str = "kaiming"
    # none (plain training) | pla (eq 23) | plea (eq 22); baselines beyond the paper: sam (sharpness-aware
    # minimisation, `pleat.SAM`: its ascent perturbs the parameters of `layers`, every parameter when `layers` is
    # empty, and its descent updates every one) | noise (each step's gradient is taken at
    # W + ΔW, ΔW Gaussian on `layers` with the box's per-weight variance R²/3)
    kind: str = "pla"
    layers: tuple = (2,)  # smoothed layers, as in PartialLocalEntropy: 1-based indices or module names
    # R: half-side of the hypercube, per weight (sam: ρ, the L2 norm of the ascent step); per layer (pla, plea,
    # noise): a table of layer to R, {fc1 = 0.005, fc2 = 0.02}, "relative:RHO" (R_l = RHO x RMS(W_l)),
    # "relative-filter:RHO" (R = RHO x RMS of each output unit's weights), "relative-weight:RHO" (R_i = RHO x |w_i|), or
    # "scoped:RISE" (R_l with tr(H_ll) R_l²/6 = RISE, from Hutchinson traces on 4 training batches; see rescope_every)
    radius: float = 0.01
    samples: int = 4  # y: extra points besides the centre
    sharpness: float = math.inf  # k: soft-box sharpness; inf is the hard box
    lr: float = 1e-4  # SGD learning rate
    schedule: str = "constant"  # constant | cosine (lr x (1 + cos(pi e / epochs)) / 2 in epoch e, 0-based)
    momentum: float = 0.9  # SGD momentum, no Nesterov
    batch_size: int = 256  # examples per minibatch
    epochs: int = 120  # passes over the training set
    weight_decay: float = 0.0  # L2 coefficient of SGD
    rescope_every: int = 0  # radius = "scoped:RISE": epochs between re-scopings; 0: scoped once, at the start
    probe_every: int = 0  # layer-temperature window in training steps; 0: one window per epoch
    # fixed (every window probe_every steps) | log (windows of probe_every steps at first, each 10% longer than
    # the last: evenly spaced in log time, so the early rise and the late decay are both resolved)
    probe_windows: str = "fixed"
    # layer (noise: std across minibatches of the layer-averaged |dL/dw|) | weight (per weight: size of the mean
    # gradient against its std across the window's minibatches, as in the paper's reference [33]; see
    # pleat.LayerTemperature)
    probe_estimator: str = "layer"
    # what the layer temperature reads: objective (the gradient the step uses; for pla/plea that of the smoothed
    # loss) | centre (pla/plea only: ∇L(W) at the centre, one more forward and backward per step)
    probe_gradient: str = "objective"
    seed: int = 0  # initialisation, shuffling, augmentation and perturbations all derive from it
    train_subset: int = 0  # first N training examples; 0: the whole training set
    test_subset: int = 0  # first N test examples; 0: the whole test set
    # fraction of the training labels replaced by a class drawn uniformly from all classes (the true one included),
    # drawn from the run's seed alone: every arm of a seed sees the same labels; the test set stays clean
    label_noise: float = 0.0
    # MNIST and Fashion-MNIST: random crops of the image padded by 2 pixels and horizontal flips, per sample (the
    # CIFAR-10 and STL-10 runs always take the paper's augmentation)
    augment: bool = False
    # standardise the inputs by the training images' mean and standard deviation per channel (the test images by
    # the same numbers); off: pixels in [0, 1], as the paper's runs
    normalize: bool = False
    data_dir: str = ""  # empty: $PLEAT_DATA, else ~/.cache/pleat/data
    out_dir: str = "runs"  # where the run store lives
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    # float32 | float64 | bfloat16 (autocast) | tf32 (float32 weights, TF32 matmuls and convolutions on CUDA GPUs;
    # the same as float32 on a CPU)
    dtype: str = "float32"
    tensorboard: bool = False  # also write TensorBoard event files into the run directory
    progress: bool = True  # progress bars

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.radius, dict):  # stored as pairs, so that a config stays hashable
            object.__setattr__(self, "radius", tuple(self.radius.items()))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the key for any value out of its domain."""

        def bad(key, why):
            raise ValueError(f"config key {key!r}: {why} (got {getattr(self, key)!r})")

        for key, options in (
            ("dataset", DATASETS),
            ("model", MODELS),
            ("kind", KINDS),
            ("dtype", DTYPES),
            ("activation", ("relu", "tanh")),
            ("init", ("kaiming", "torch")),
            ("probe_windows", ("fixed", "log")),
            ("probe_estimator", ("layer", "weight")),
            ("probe_gradient", ("objective", "centre")),
            ("schedule", ("constant", "cosine")),
        ):
            if getattr(self, key) not in options:
                bad(key, f"must be one of {', '.join(options)}")
        if isinstance(self.radius, str):
            if radius_rule(self.radius) is None:
                bad(
                    "radius",
                    "a string must read relative:RHO, relative-filter:RHO, relative-weight:RHO or scoped:RISE, a "
                    "finite number >= 0 "
                    "(RISE > 0)",
                )
        elif isinstance(self.radius, tuple):
            for layer, r in self.radius:
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
                    bad("radius", f"the radius of {layer!r} must be a finite number >= 0")
            if not self.radius:
                bad("radius", "a table of radii must name at least one layer")
        elif not math.isfinite(self.radius) or self.radius < 0:
            bad("radius", "must be a finite number >= 0")
        if self.kind == "sam" and not isinstance(self.radius, float):
            bad("radius", "kind 'sam' takes one number, ρ")
        if not self.sharpness > 0:
            bad("sharpness", "must be > 0 (inf for the hard box)")
        if self.rescope_every and (radius_rule(self.radius) or ("",))[0] != "scoped":
            bad("rescope_every", "re-scopes radius = 'scoped:RISE' only")
        for key in ("samples", "train_subset", "test_subset", "seed", "probe_every", "rescope_every"):
            if getattr(self, key) < 0:
                bad(key, "must be >= 0")
        for key in ("batch_size", "epochs"):
            if getattr(self, key) < 1:
                bad(key, "must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "must be a finite number > 0")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if self.augment and self.dataset not in ("mnist", "fashion-mnist"):
            bad("augment", "is for MNIST and Fashion-MNIST: CIFAR-10 and STL-10 always take the paper's augmentation")
        if not 0 <= self.label_noise <= 1:
            bad("label_noise", "must be a fraction in [0, 1]")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", "must be a finite number >= 0")
        if self.probe_windows == "log" and not self.probe_every:
            bad("probe_windows", "'log' grows windows from probe_every steps: set probe_every > 0")
        if self.probe_gradient == "centre" and self.kind not in ("pla", "plea"):
            bad("probe_gradient", "'centre' differs from 'objective' only for kind pla or plea")
        if self.kind in ("pla", "plea", "noise") and not self.layers:
            bad("layers", f"must name at least one layer when kind is {self.kind!r}")
        for entry in self.layers:
            if isinstance(entry, bool) or not isinstance(entry, (int, str)):
                bad("layers", "entries must be 1-based layer indices or module names")
        wants = {
            "fc2": ("mnist", "fashion-mnist"),
            "fc3": ("mnist", "fashion-mnist"),
            "fc4": ("mnist", "fashion-mnist"),
            "cnn-cifar10": ("cifar10",),
            "cnn-stl10": ("stl10",),
            "cnn-bn": ("mnist", "fashion-mnist"),
            "cnn-bn-32": ("mnist", "fashion-mnist"),
        }
        if self.dataset not in wants[self.model]:
            bad("model", f"takes the inputs of {' or '.join(wants[self.model])}, not of {self.dataset}")

    def key(self) -> str:
        """The run's identity: a hash of every key that changes what is computed."""
        identity = {k: v for k, v in self.to_dict().items() if k not in NOT_HASHED and ADDED_KEYS.get(k, object()) != v}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["layers"] = list(self.layers)
        if isinstance(self.radius, tuple):
            out["radius"] = {str(layer): r for layer, r in self.radius}  # TOML and JSON keys are strings
        out["sharpness"] = "inf" if math.isinf(self.sharpness) else self.sharpness
        return out

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """Build from plain values (TOML or JSON), checking keys and types; errors name the key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = {}
        for key, value in values.items():
            if key in RETIRED_KEYS:
                continue
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown config key {key!r}; {hint}known keys: {', '.join(fields)}")
            out[key] = _coerce(key, value, fields[key].default)
        return cls(**out)


# what a config asks of the trainer, read without training

# keys that must be equal for runs to share a program (the rest may differ run by run)
SHARED_KEYS = (
    "dataset",
    "model",
    "activation",
    "batch_size",
    "dtype",
    "train_subset",
    "test_subset",
    "data_dir",
    "device",
)


def group_key(config: Config) -> tuple:
    """Runs with equal keys can be trained as one group; runs with label noise share their seed too, since the
    group shares one dataset and the noisy labels are drawn from the seed."""
    noisy = (config.label_noise, config.seed) if config.label_noise else ()
    return (*(getattr(config, k) for k in SHARED_KEYS), *noisy)


def effective_kind(config: Config) -> str:
    """The kind, or none for pla, plea and noise runs that perturb nothing (samples = 0 or radius = 0)."""
    nothing = radii.is_zero(radii.from_config(config.radius))
    if config.kind in ("pla", "plea") and (config.samples == 0 or nothing):
        return "none"
    return "none" if config.kind == "noise" and nothing else config.kind


def draws(config: Config) -> int:
    """Perturbed points a step of this run evaluates besides the centre: y for pla/plea, 1 for noise, else 0."""
    kind = effective_kind(config)
    return config.samples if kind in ("pla", "plea") else int(kind == "noise")


def points(config: Config) -> int | None:
    """Points per step of a run that perturbs (the centre included); None for one that does not."""
    return draws(config) + 1 if draws(config) else None


def help_texts() -> dict[str, str]:
    """Each key's meaning and allowed values, from the comments beside (or above) its field in `Config`."""
    import inspect
    import re

    texts, above = {}, []
    for line in inspect.getsource(Config).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        field = re.match(r"(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", stripped)
        if field and field.group(1) in {f.name for f in dataclasses.fields(Config)}:
            texts[field.group(1)] = " ".join(above + [field.group(2) or ""]).strip()
        above = []
    return texts


def radius_text(radius) -> str:
    """A radius in words: 0.01, relative:0.2, scoped:0.0025, or {fc1: 0.005, 2: 0.02}."""
    if isinstance(radius, tuple):
        return "{" + ", ".join(f"{layer}: {r:g}" for layer, r in radius) + "}"
    return f"{radius:g}" if isinstance(radius, (int, float)) else str(radius)


def shown(value) -> str:
    """A config value as it is written in TOML and on the command line: layers as [2], not (2,)."""
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):  # a table of radii
        return "{" + ", ".join(f"{k} = {r:g}" for k, r in value) + "}"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return json.dumps(value) if isinstance(value, (bool, str)) else str(value)


def _coerce(key: str, value, default):
    """Check `value` against the type of `default`; ints are accepted for floats, 'inf' for sharpness; a radius may
    also be a table of layer to R (layer indices come back as ints) or a string."""
    if key == "radius" and isinstance(value, str) and value.partition(":")[0] in RADIUS_RULES:
        return value
    if key == "radius" and isinstance(value, dict):
        return tuple(
            (int(k) if isinstance(k, str) and k.isdigit() else k, _coerce(key, v, default)) for k, v in value.items()
        )
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str) and value.lower() in ("inf", "+inf", "infinity"):
            value = math.inf
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = [value]
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"config key {key!r} must be of type {type(default).__name__}, got {value!r}")
    return value


def parse_set(assignments: list[str]) -> dict:
    """Parse `key=value` overrides; values are TOML literals, bare words are strings (`dataset=mnist`)."""
    out = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        key = key.strip().replace("-", "_")
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """The tables of a TOML file; a missing file or bad TOML raises an error naming `what` and the file."""
    path = Path(path)
    if not path.exists():
        hint = ""
        if "=" in path.name:  # `--set a=1 b=2`: the second override was read as the config file
            hint = f"; to override a key, give each its own --set: --set {path.name}"
        raise FileNotFoundError(f"{what} {path} does not exist{hint}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{what} {path} is not valid TOML: {e}") from e


def load(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """A config from an optional TOML file and overrides (overrides win)."""
    values = {} if path is None else read_toml(path)
    values.update(overrides or {})
    return Config.from_dict(values)
