"""Experiment specs: one TOML file per figure of the paper, expanded into the run configs of a sweep.

A spec holds the paper's protocol (config keys shared by every run), its arms (the curves of the figure, each a
few config keys and a grid of values crossed with each other) and three budgets that override the protocol:

    name = "fig3"
    title = "..."
    plot = "radius"            # radius: accuracy against R | curves: per-epoch curves | temperature: Figure 1
    claims = ["smoothing_helps", ...]   # checks in pleat.reproduce.claims
    [protocol]                 # Config keys
    [[arm]]                    # label = "PLA", config keys, and grid.<key> = [values...]; optional regime = "..."
                               # (a training regime: each claim is judged within each regime)
    [regime."noise 0.4"]       # optional: config keys of a regime that every arm without its own regime runs in
    [budget.smoke]             # config keys for every run, seeds = N, grid.<key> = [...] replacing an arm's grid
    [budget.decisive]          # optional: the paper's protocol on settings fixed in advance, listed as
    only = [{arm = "plain"}, {arm = "PLA", layers = [2], radius = 0.01}]   # keep a run matching any entry

Specs shipped with pleat live in `pleat/reproduce/specs/`; a user's own file of the same format works as well.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

from pleat.runs.config import Config, read_toml

BUDGETS = ("smoke", "quick", "decisive", "paper")
OPTIONAL_BUDGETS = ("decisive",)  # the paper's protocol restricted to each claim's settings, fixed in advance
METRICS = ("best_test_accuracy", "selected_test_accuracy", "final_mean_test_accuracy")
PLOTS = ("radius", "curves", "temperature", "baselines", "regimes")
SPECS = Path(__file__).parent / "specs"
_TOP = {
    "name", "title", "plot", "claims", "notes", "protocol", "arm", "budget", "colours", "margin", "reuse", "regime",
    "metric",
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One run of a sweep: the arm (curve) it belongs to, its training regime (if the spec names regimes) and its
    full config."""

    arm: str
    config: Config
    regime: str = ""


@dataclass(frozen=True)
class Spec:
    """A figure's sweep; see the module docstring for the file format."""

    name: str
    title: str
    plot: str
    claims: tuple[str, ...]
    protocol: dict
    arms: tuple[dict, ...]
    budgets: dict
    notes: str = ""
    colours: str = ""  # "rgb": colour a subset by red = layer 1, green = 2, blue = 3 (Figure 4 right)
    margin: float = 0.01  # equivalence margin on test accuracy for "matches" claims (Figure 5)
    source: Path | None = None  # the file it was read from
    reuse: tuple[str, ...] = ()  # sweeps (spec names) whose finished runs of the same config are taken, not retrained
    # {name: config keys}: regimes every arm without a `regime` of its own is crossed with, in this order
    regimes: dict = dataclasses.field(default_factory=dict)
    # the accuracy the claims compare: best_test_accuracy (the paper's view), selected_test_accuracy (early stopping
    # on the even test examples, reported on the odd ones) or final_mean_test_accuracy (the last 10 epochs)
    metric: str = "best_test_accuracy"

    def seeds(self, budget: str) -> int:
        return int(self.budgets[budget].get("seeds", 3))

    def notes_for(self, budget: str | None) -> str:
        """The notes that hold at every budget, and `budget`'s own: a line that begins "Decisive budget" (or
        Smoke, Quick, Paper) begins the notes of that budget, which run to the next such line or the end."""
        kept, owner = [], None
        for line in self.notes.strip().splitlines():
            first = line.split(" budget", 1)[0].lower() if " budget" in line[:16] else None
            owner = first if first in BUDGETS else owner
            if owner is None or owner == budget:
                kept.append(line)
        return "\n".join(kept)


def available() -> list[str]:
    """Names of the specs shipped with pleat, the paper's figures first."""
    return sorted((p.stem for p in SPECS.glob("*.toml")), key=lambda n: (not n.startswith("fig"), n))


def load_spec(name: str | Path) -> Spec:
    """A shipped spec by name (`fig3`), or a spec file by path; errors name what is wrong and what is known."""
    path = Path(name)
    if not (path.suffix == ".toml" and path.exists()):
        path = SPECS / f"{name}.toml"
        if not path.exists():
            raise ValueError(f"unknown figure {str(name)!r}: choose one of {', '.join(available())} or a spec file")
    raw = read_toml(path, "spec")
    unknown = set(raw) - _TOP
    if unknown:
        raise ValueError(f"spec {path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_TOP))}")
    for key in ("name", "title", "plot", "protocol", "arm", "budget"):
        if key not in raw:
            raise ValueError(f"spec {path}: missing key {key!r}")
    if raw["plot"] not in PLOTS:
        raise ValueError(f"spec {path}: plot must be one of {', '.join(PLOTS)}, got {raw['plot']!r}")
    missing = [b for b in BUDGETS if b not in raw["budget"] and b not in OPTIONAL_BUDGETS]
    if missing or set(raw["budget"]) - set(BUDGETS):
        raise ValueError(
            f"spec {path}: [budget] needs the tables {', '.join(b for b in BUDGETS if b not in OPTIONAL_BUDGETS)}"
            f" and may have {', '.join(OPTIONAL_BUDGETS)}"
        )
    spec = Spec(
        name=raw["name"],
        title=raw["title"],
        plot=raw["plot"],
        claims=tuple(raw.get("claims", ())),
        protocol=raw["protocol"],
        arms=tuple(raw["arm"]),
        budgets=raw["budget"],
        notes=raw.get("notes", ""),
        colours=raw.get("colours", ""),
        margin=float(raw.get("margin", 0.01)),
        source=path,
        reuse=tuple(raw.get("reuse", ())),
        regimes=dict(raw.get("regime", {})),
        metric=raw.get("metric", "best_test_accuracy"),
    )
    if spec.metric not in METRICS:
        raise ValueError(f"spec {path}: metric must be one of {', '.join(METRICS)}, got {spec.metric!r}")
    from pleat.reproduce.claims import CHECKS  # the claims a spec may name

    bad = [c for c in spec.claims if c not in CHECKS]
    if bad:
        raise ValueError(f"spec {path}: unknown claim(s) {', '.join(bad)}; known: {', '.join(sorted(CHECKS))}")
    for budget in spec.budgets:  # every budget must expand to real configs: errors surface now, not mid-sweep
        expand(spec, budget)
    return spec


def expand(spec: Spec, budget: str, seeds: int | None = None, **where) -> list[Run]:
    """The runs of `spec` at `budget`: every arm's grid crossed, times seeds 0..N-1.

    Args:
        seeds: how many seeds (default: the budget's, else 3).
        where: keys that say where and how to run (out_dir, data_dir, device, progress), set on every config.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    if budget not in spec.budgets:
        raise ValueError(f"spec {spec.name} has no {budget} budget: choose one of {', '.join(spec.budgets)}")
    overrides = dict(spec.budgets[budget])
    only = overrides.pop("only", None)
    n_seeds = spec.seeds(budget) if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    overrides.pop("seeds", None)
    budget_grid = overrides.pop("grid", {})
    runs = []
    for arm in spec.arms:
        arm = dict(arm)
        label = arm.pop("label", None)
        own = arm.pop("regime", "")
        regimes = [(own, {})] if own or not spec.regimes else list(spec.regimes.items())
        if not label:
            raise ValueError(f"spec {spec.name}: every [[arm]] needs a label")
        grid = dict(arm.pop("grid", {}))
        grid.update({k: v for k, v in budget_grid.items() if k in grid})
        empty = [k for k, v in grid.items() if not isinstance(v, list) or not v]
        if empty:
            raise ValueError(f"spec {spec.name}, arm {label!r}: grid.{empty[0]} must be a non-empty list")
        keys = list(grid)
        for (regime, setting), values in itertools.product(regimes, itertools.product(*(grid[k] for k in keys))):
            point = {**arm, **setting, **dict(zip(keys, values))}
            if only is not None and not any(_matches(entry, label, point) for entry in only):
                continue
            for seed in range(n_seeds):
                # a budget's keys win over an arm's: smoke and quick compress every regime alike
                config = {**spec.protocol, **point, **overrides, "seed": seed, **where}
                try:
                    runs.append(Run(label, Config.from_dict(config), regime))
                except ValueError as e:
                    raise ValueError(f"spec {spec.name}, arm {label!r}, budget {budget}: {e}") from e
    if not runs:
        raise ValueError(f"spec {spec.name}: budget {budget} expands to no run")
    position = {name: i for i, name in enumerate(spec.regimes)}
    runs.sort(key=lambda r: position.get(r.regime, -1))  # a regime's runs together, in the spec's order
    unique = {r.config.key(): r for r in runs}
    return list(unique.values())


def _matches(entry: dict, label: str, setting: dict) -> bool:
    """Does an arm's setting (its keys and grid point) match an `only` entry (layers as lists or tuples)?"""
    if "arm" in entry and entry["arm"] != label:
        return False
    norm = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    return all(k in setting and norm(v) == norm(setting[k]) for k, v in entry.items() if k != "arm")


def swept(runs: list[Run]) -> list[str]:
    """The config keys whose values differ between runs (besides seed), in Config's field order."""
    fields = [f.name for f in dataclasses.fields(Config) if f.name != "seed"]
    return [k for k in fields if len({repr(getattr(r.config, k)) for r in runs}) > 1]
