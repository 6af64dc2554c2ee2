"""The paper's claims as code: each check quotes its sentence, reads a sweep's results table and states the tests
that encode it; `judge` runs them, corrects the whole report for multiplicity and returns one verdict per claim.

The table has one row per finished run: its arm, its config keys (`layers` as a tuple, `radius`, `seed`, ...),
`best_test_accuracy`, `final_test_accuracy` and `metrics` (the per-epoch records). A test compares two sets of
runs through one value per seed (the mean over the keys it pools, e.g. the R grid): paired over common seeds,
Welch otherwise (see `pleat.reproduce.stats`). Each test is one hypothesis in the report's Holm family, so that no
setting is chosen on the runs that then test it: a claim about "some setting" tests every setting the budget has
(fixed in advance by the spec) and survives the correction or not.

Verdict of a test whose claim has a direction:
- "supported": the Holm-adjusted test excludes zero in the paper's direction;
- "contradicted": it excludes zero in the other direction;
- "no effect within ±m": the Holm-adjusted equivalence test puts the difference within the spec's margin m;
- "inconclusive": anything else; "not enough runs" below 2 seeds a side;
- "collapsed": an arm's final train accuracy is more than 5 points below plain SGD's. A collapsed run is an
  optimisation failure, not the paper's effect, so it supports nothing; the report lists collapses as a finding.
A claim that two things match ("y = 8 is comparable to y = 4") is supported by the equivalence test and
contradicted when the difference is beyond the margin. A claim's verdict combines its tests by its rule: `all`
(each must hold), `any` (one setting suffices), `best` (never beaten, beating some) or `not_worse`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pleat.config import radius_text
from pleat.reproduce.stats import ALPHA, Estimate, compare, holm

METRIC = "best_test_accuracy"  # the paper's early-stopping view
COLLAPSE = 0.05  # train accuracy this far below plain SGD's is a collapse, not a regularisation effect
RULES = ("all", "any", "best", "not_worse", "not_better")


@dataclass(frozen=True)
class Test:
    """One comparison a - b: the paper says a > b (direction +1), a < b (-1) or a = b within the margin (0)."""

    what: str
    estimate: Estimate | None
    direction: int
    margin: float = 0.0
    collapsed: str = ""  # which side collapsed, if one did
    # filled by `judge`: Holm-adjusted p-values of "no difference" (or, direction 0, "beyond the margin") and
    # of "at least the margin away" (equivalence), and the verdict
    p: float | None = None
    q: float | None = None
    verdict: str = ""


@dataclass(frozen=True)
class Finding:
    """What a check found: tests (or nested findings) and the rule that combines their verdicts."""

    rule: str
    parts: tuple = ()
    note: str = ""  # said in the report's detail column
    verdict: str = ""  # set directly by checks that count runs (Figure 1), or when nothing could be compared


@dataclass(frozen=True)
class Verdict:
    """A claim, the sentence it encodes, what the runs show and the verdict. Differences are in accuracy units."""

    claim: str  # the check's name
    text: str  # the claim in a few words
    verdict: str  # supported | contradicted | no effect within ±m | inconclusive | not enough runs | finding
    difference: float | None = None  # of the test shown (the one that decided the verdict)
    interval: tuple[float, float] | None = None  # its 95% interval (unadjusted)
    seeds: int = 0
    detail: str = ""  # every test, with its difference, interval and verdict
    quote: str = ""  # the paper's sentence, with its section
    p: float | None = None  # Holm-adjusted p-value of the test shown
    paired: bool = False
    tests: tuple[Test, ...] = field(default_factory=tuple)


def no_effect(margin: float) -> str:
    return f"no effect within ±{100 * margin:g} points"


# The table


def per_seed(rows, metric: str = METRIC) -> dict:
    """{seed: the mean of `metric` over that seed's rows} (pooling, e.g., the R grid)."""
    if rows.empty:
        return {}
    values = rows[metric] if metric in rows else rows.apply(_METRICS[metric], axis=1)
    return {int(s): float(v) for s, v in values.groupby(rows["seed"]).mean().items()}


def _last(row, key: str) -> float:
    metrics = row.get("metrics")
    if not isinstance(metrics, list) or not metrics or key not in metrics[-1]:
        return float("nan")
    return float(metrics[-1][key])


def _early_gain(row) -> float:
    """Test accuracy at a quarter of training minus the final one (per run; compared between arms)."""
    metrics = row.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        return float("nan")
    early = metrics[max(0, len(metrics) // 4 - 1)]
    return float(early["test_accuracy"]) - float(metrics[-1]["test_accuracy"])


_METRICS: dict[str, Callable] = {
    "final_train_accuracy": lambda row: _last(row, "train_accuracy"),
    "early_minus_final": _early_gain,
}


def _collapsed(rows, plain) -> bool:
    if plain is None or plain.empty or rows.empty or "metrics" not in rows:
        return False
    mine = [v for v in per_seed(rows, "final_train_accuracy").values() if v == v]  # NaN: no train accuracy
    theirs = [v for v in per_seed(plain, "final_train_accuracy").values() if v == v]
    return bool(mine and theirs) and sum(mine) / len(mine) < sum(theirs) / len(theirs) - COLLAPSE


def versus(what: str, a, b, direction: int, spec, plain=None, metric: str = METRIC) -> Test:
    """The test of a - b (rows of the table); `plain`: plain SGD's rows, against which collapse is judged."""
    estimate = compare(per_seed(a, metric), per_seed(b, metric))
    collapsed = " and ".join(side for side, rows in (("first", a), ("second", b)) if _collapsed(rows, plain))
    return Test(what, estimate, direction, spec.margin, collapsed)


def smoothed(table):
    return table[table["kind"].isin(["pla", "plea"])]


def subset(table, *layers):
    return table[(table["kind"].isin(["pla", "plea"])) & (table["layers"] == tuple(layers))]


def plain(table):
    return table[(table["kind"] == "none") & (table["weight_decay"] == 0)]


def name(layers) -> str:
    return "{" + ",".join(str(x) for x in layers) + "}"


def radii(table) -> list[float]:
    return sorted(smoothed(table)["radius"].unique())


def _at(table, r):
    return table[table["radius"] == r]


def _r(r) -> str:
    return f"R = {radius_text(r)}"


def _settings(rows, keys: list[str]):
    """(setting, rows) for each combination of `keys` present, in the table's order."""
    present = [k for k in keys if k in rows]
    return [(dict(zip(present, v)), g) for v, g in rows.groupby(present, sort=False)] if present else []


def _describe(setting: dict) -> str:
    parts = []
    for k, v in setting.items():
        if k == "layers":
            parts.append(name(v))
        elif k == "radius":
            parts.append(_r(v))
        elif k == "samples":
            parts.append(f"y = {v}")
        elif k == "weight_decay":
            parts.append(f"weight decay {v:g}")
        else:
            parts.append(str(v))
    return " ".join(parts)


def empty(why: str) -> Finding:
    return Finding("all", verdict="not enough runs", note=why)


# Figures 3 and 4 left: the 2-layer net, subsets {1}, {2}, {1,2}


def _beats_plain(table, spec, metric: str) -> Finding:
    base = plain(table)
    runs = smoothed(table)
    if runs.empty or base.empty:
        return empty("needs smoothed and plain runs")
    tests = [
        versus(f"{_describe(s)} against plain SGD", rows, base, +1, spec, base, metric)
        for s, rows in _settings(runs, ["arm", "layers", "radius", "samples"])
    ]
    return Finding("any", tuple(tests), "every smoothed setting of the budget against plain SGD")


def smoothing_helps(table, spec) -> Finding:
    return _beats_plain(table, spec, METRIC)


def smoothing_helps_final(table, spec) -> Finding:
    return _beats_plain(table, spec, "final_test_accuracy")


def anisotropic_beats_fixed(table, spec) -> Finding:
    """Radii per layer (relative to the weights, or scoped by curvature) against the paper's one fixed R."""
    runs = smoothed(table)
    fixed = runs[runs["radius"].map(lambda r: isinstance(r, float))]
    per_layer = runs[runs["radius"].map(lambda r: not isinstance(r, float))]
    if fixed.empty or per_layer.empty:
        return empty("needs runs with a fixed R and runs with radii per layer")
    tests = [
        versus(f"{_describe(s)} against {_describe(f)}", rows, base, +1, spec, plain(table))
        for s, rows in _settings(per_layer, ["arm", "layers", "radius"])
        for f, base in _settings(fixed, ["arm", "layers", "radius"])
    ]
    return Finding("any", tuple(tests), "every setting with radii per layer against every fixed-R setting")


def _curve_ends(table, layers):
    """The rows of a subset at its smallest and largest R, or plain SGD as the R -> 0 end when it has one R."""
    curve = subset(table, *layers)
    rs = sorted(curve["radius"].unique())
    if not rs:
        return None
    if len(rs) == 1:
        return (plain(table), "plain SGD (R = 0)"), (_at(curve, rs[0]), f"{name(layers)} at {_r(rs[0])}")
    return (_at(curve, rs[0]), f"{name(layers)} at {_r(rs[0])}"), (
        _at(curve, rs[-1]),
        f"{name(layers)} at {_r(rs[-1])}",
    )


def rise_then_degrade(table, spec) -> Finding:
    parts = []
    for layers in sorted(set(smoothed(table)["layers"])):
        curve = subset(table, *layers)
        rs = sorted(curve["radius"].unique())
        for r in rs[1:-1]:
            mid = _at(curve, r)
            rise = versus(f"{name(layers)} at {_r(r)} against {_r(rs[0])}", mid, _at(curve, rs[0]), +1, spec)
            fall = versus(f"{name(layers)} at {_r(r)} against {_r(rs[-1])}", mid, _at(curve, rs[-1]), +1, spec)
            parts.append(Finding("all", (rise, fall)))
    if not parts:
        return empty("needs a subset at 3 or more radii")
    return Finding(
        "any", tuple(parts), "some subset has an inner R above both ends of its R grid (every inner R tested)"
    )


def single_layer_saturates(table, spec) -> Finding:
    tests = []
    for layers in ((1,), (2,)):
        ends = _curve_ends(table, layers)
        if ends and len(subset(table, *layers)["radius"].unique()) > 1:
            (small, s_name), (large, l_name) = ends
            tests.append(versus(f"{l_name} against {s_name}", large, small, +1, spec, plain(table)))
    if not tests:
        return empty("needs {1} or {2} at 2 or more radii")
    return Finding("all", tuple(tests), "each single layer's largest R against its smallest")


def isotropic_degrades(table, spec) -> Finding:
    ends = _curve_ends(table, (1, 2))
    if ends is None or ends[0][0].empty:
        return empty("needs {1,2} at 2 radii, or at 1 radius and plain SGD")
    (small, s_name), (large, l_name) = ends
    return Finding("all", (versus(f"{l_name} against {s_name}", large, small, -1, spec, plain(table)),))


def single_beats_isotropic(table, spec) -> Finding:
    tests = [
        versus(
            f"{{2}} against {{1,2}} at {_r(r)}",
            subset(_at(table, r), 2),
            subset(_at(table, r), 1, 2),
            +1,
            spec,
            plain(table),
        )
        for r in radii(table)
        if not subset(_at(table, r), 2).empty and not subset(_at(table, r), 1, 2).empty
    ]
    if not tests:
        return empty("needs {2} and {1,2} at a common R")
    return Finding("best", tuple(tests), "at every R both were run: never behind, ahead somewhere")


def _is_best(table, spec, winner: tuple, rivals: list[tuple], rs: list[float]) -> Finding:
    tests = []
    for r in rs:
        at = _at(table, r)
        for rival in rivals:
            if not subset(at, *winner).empty and not subset(at, *rival).empty:
                what = f"{name(winner)} against {name(rival)} at {_r(r)}"
                tests.append(versus(what, subset(at, *winner), subset(at, *rival), +1, spec, plain(table)))
    if not tests:
        return empty(f"needs {name(winner)} and a rival at a common R")
    return Finding("best", tuple(tests), f"{name(winner)} never behind another subset, ahead of some")


def layer2_best(table, spec) -> Finding:
    return _is_best(table, spec, (2,), [(1,), (1, 2)], radii(table))


def isotropic_small_r_only(table, spec) -> Finding:
    rs = [r for r in radii(table) if not subset(_at(table, r), 1).empty and not subset(_at(table, r), 1, 2).empty]
    if len(rs) < 2:
        return empty("needs {1} and {1,2} at 2 or more common radii")
    small, large = _at(table, rs[0]), _at(table, rs[-1])
    base = plain(table)
    competitive = versus(f"{{1,2}} against {{1}} at {_r(rs[0])}", subset(small, 1, 2), subset(small, 1), +1, spec, base)
    behind = versus(f"{{1}} against {{1,2}} at {_r(rs[-1])}", subset(large, 1), subset(large, 1, 2), +1, spec, base)
    return Finding(
        "all",
        (Finding("not_worse", (competitive,)), behind),
        "isotropic not behind the 1st layer at the smallest R, behind it at the largest",
    )


# Figure 4 right: the 3-layer net, the 7 subsets of {1,2,3}

SUBSETS3 = [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]


def isotropic_worst_large_r(table, spec) -> Finding:
    rs = radii(table)
    if not rs:
        return empty("needs smoothed runs")
    at = _at(table, rs[-1])
    tests = [
        versus(
            f"{name(s)} against {{1,2,3}} at {_r(rs[-1])}", subset(at, *s), subset(at, 1, 2, 3), +1, spec, plain(table)
        )
        for s in SUBSETS3[:-1]
        if not subset(at, *s).empty and not subset(at, 1, 2, 3).empty
    ]
    if not tests:
        return empty("needs {1,2,3} and other subsets at the largest R")
    return Finding("all", tuple(tests), "every other subset ahead of {1,2,3} at the largest R")


def layers13_best_small_r(table, spec) -> Finding:
    rs = radii(table)
    if not rs:
        return empty("needs smoothed runs")
    return _is_best(table, spec, (1, 3), [s for s in SUBSETS3 if s != (1, 3)], rs[:1])


def single_deep_best_large_r(table, spec) -> Finding:
    rs = radii(table)
    if not rs:
        return empty("needs smoothed runs")
    rest = [s for s in SUBSETS3 if s not in ((2,), (3,))]
    parts = tuple(_is_best(table, spec, w, rest, rs[-1:]) for w in ((2,), (3,)))
    return Finding("any", parts, "{2} or {3} never behind the other subsets at the largest R, ahead of some")


def deeper_profit_more(table, spec) -> Finding:
    tests = [
        versus(f"{name(s)} against {{1}}, averaged over R", subset(table, *s), subset(table, 1), +1, spec)
        for s in ((2,), (3,))
        if not subset(table, *s).empty and not subset(table, 1).empty
    ]
    if not tests:
        return empty("needs {1} and a deeper single layer")
    return Finding("all", tuple(tests), "each deeper single layer ahead of the first")


# Figure 5


def y8_matches_y4(table, spec) -> Finding:
    runs = smoothed(table)
    tests = [
        versus(
            f"y = 8 against y = 4 on {name(s)}, averaged over R",
            rows[rows["samples"] == 8],
            rows[rows["samples"] == 4],
            0,
            spec,
        )
        for s, rows in runs.groupby("layers", sort=False)
    ]
    if not tests:
        return empty("needs runs at y = 4 and y = 8")
    return Finding("all", tuple(tests), f"each subset, equivalence margin ±{100 * spec.margin:g} points")


# Figures 6-8: the CNNs


def arm(table, prefix: str):
    return table[table["arm"].str.startswith(prefix)]


def _heads(table, spec, metric: str, direction: int = +1) -> tuple[Test, ...]:
    base = plain(table)
    return tuple(
        versus(f"{label} against none", rows, base, direction, spec, base, metric)
        for label, rows in arm(table, "PLA head").groupby("arm", sort=False)
    )


def head_helps(table, spec) -> Finding:
    tests = _heads(table, spec, METRIC)
    if not tests or plain(table).empty:
        return empty("needs PLA runs on a head layer and plain runs")
    return Finding("any", tests, "each head layer against none, best test accuracy")


def head_helps_in_sample(table, spec) -> Finding:
    tests = _heads(table, spec, "final_train_accuracy")
    if not tests or plain(table).empty:
        return empty("needs PLA runs on a head layer and plain runs")
    return Finding("any", tests, "each head layer against none, final train accuracy")


def only_with_early_stopping(table, spec) -> Finding:
    best, final = _heads(table, spec, METRIC), _heads(table, spec, "final_test_accuracy")
    if not best or plain(table).empty:
        return empty("needs PLA runs on a head layer and plain runs")
    return Finding(
        "all",
        (Finding("any", best), Finding("not_better", tuple(t for t in final), "final test accuracy")),
        "a head layer ahead of none in best test accuracy, and none ahead in final test accuracy",
    )


def conv_hurts(table, spec) -> Finding:
    conv = arm(table, "PLA conv")
    if conv.empty or plain(table).empty:
        return empty("needs PLA runs on the convolutions and plain runs")
    return Finding("all", (versus("PLA on the convolutions against none", conv, plain(table), -1, spec, plain(table)),))


def weight_decay_no_use(table, spec) -> Finding:
    decayed = table[(table["kind"] == "none") & (table["weight_decay"] > 0)]
    tests = tuple(
        versus(f"weight decay {wd:g} against none", rows, plain(table), 0, spec)
        for wd, rows in decayed.groupby("weight_decay")
    )
    if not tests or plain(table).empty:
        return empty("needs weight-decay and plain runs")
    return Finding("all", tests, f"each weight decay, equivalence margin ±{100 * spec.margin:g} points")


def pla_early_phase(table, spec) -> Finding:
    if "metrics" not in table or plain(table).empty:
        return empty("needs PLA and plain runs with per-epoch records")
    tests = _heads(table, spec, "early_minus_final")
    if not tests:
        return empty("needs PLA runs on a head layer")
    return Finding("any", tests, "per head: (PLA - none) at a quarter of training minus (PLA - none) at the end")


def _beats_each(table, spec, rivals, rival_keys: list[str]) -> Finding:
    """Some PLA setting ahead of every setting of a rival method (no setting chosen on the runs)."""
    pla = table[table["kind"] == "pla"]
    if pla.empty or rivals.empty:
        return empty("needs PLA runs and runs of the rival method")
    parts = []
    for s, rows in _settings(pla, ["arm", "layers", "radius"]):
        tests = tuple(
            versus(f"{_describe(s)} against {_describe(r)}", rows, rival, +1, spec, plain(table))
            for r, rival in _settings(rivals, rival_keys)
        )
        parts.append(Finding("all", tests))
    return Finding("any", tuple(parts), "some PLA setting ahead of every setting of the rival")


def pla_beats_weight_decay(table, spec) -> Finding:
    rivals = table[(table["kind"] == "none") & (table["weight_decay"] > 0)]
    return _beats_each(table, spec, rivals, ["weight_decay"])


def pla_beats_sam(table, spec) -> Finding:
    return _beats_each(table, spec, table[table["kind"] == "sam"], ["arm", "radius"])


def pla_beats_noise(table, spec) -> Finding:
    return _beats_each(table, spec, table[table["kind"] == "noise"], ["arm", "layers", "radius"])


def pla_plea_analogous(table, spec) -> Finding:
    pla, plea = table[table["kind"] == "pla"], table[table["kind"] == "plea"]
    tests = tuple(
        versus(
            f"PLEA against PLA on {name(layers)} at {_r(r)}",
            rows,
            pla[(pla["radius"] == r) & (pla["layers"] == layers)],
            0,
            spec,
        )
        for (layers, r), rows in plea.groupby(["layers", "radius"], sort=False)
        if not pla[(pla["radius"] == r) & (pla["layers"] == layers)].empty
    )
    if not tests:
        return empty("needs PLA and PLEA runs at common settings")
    return Finding("all", tests, f"at every common setting, equivalence margin ±{100 * spec.margin:g} points")


# Figure 1: the layer temperature


def hidden_layers(temperature: dict) -> dict:
    """The hidden layers of a probe record: all but the output layer, the last weight layer.

    The paper's Figure 1 shows layers I = 1..4 of its "4-layer" net, which counts hidden layers (its "2-layer" net
    is 784-784-784-10): the output layer is recorded in the store but left out of Figure 1 and its claims.
    """
    names = list(temperature)
    return {n: temperature[n] for n in names[:-1]} if len(names) > 1 else dict(temperature)


def _regimes_per_run(table):
    from pleat.regimes import regimes

    out = []
    for _, row in table.iterrows():
        windows = [w for m in row["metrics"] for w in m.get("windows", [])]
        if len(windows) < 8:
            continue
        history = [{k: tuple(v) for k, v in hidden_layers(w["temperature"]).items()} for w in windows]
        out.append((row, regimes(history, times=[w["step"] for w in windows]), windows[-1]["step"]))
    return out


def _share(table, holds: Callable, detail: str) -> Finding:
    found = _regimes_per_run(table)
    if len(found) < 2:
        return empty("needs at least 2 runs with probe windows (probe_every > 0)")
    yes = sum(bool(holds(r, end)) for _, r, end in found)
    verdict = "supported" if yes == len(found) else "contradicted" if yes == 0 else "inconclusive"
    return Finding("all", verdict=verdict, note=f"{yes} of {len(found)} runs: {detail}")


def three_regimes(table, spec) -> Finding:
    return _share(
        table,
        lambda r, end: r.ordered,
        "in the paper's order: every layer's signal peaks, then its noise overtakes it, then a late regime of parallel "
        "log-curves starts",
    )


def transition_at_peak(table, spec) -> Finding:
    return _share(
        table,
        lambda r, end: r.transition_at_peak(),
        "every layer's noise overtakes its signal between its signal peak and twice the peak time",
    )


def relu_tanh_alike(table, spec) -> Finding:
    if "activation" not in table or table["activation"].nunique() < 2:
        return empty("needs runs of both activations")
    shares = {}
    for activation, rows in table.groupby("activation"):
        found = _regimes_per_run(rows)
        if len(found) < 2:
            return empty(f"needs at least 2 {activation} runs with probe windows")
        shares[activation] = sum(r.ordered and r.common_cooling for _, r, _ in found) / len(found)
    values = set(shares.values())
    # alike in showing the regimes; alike in not showing them says nothing of the paper's sentence
    verdict = "supported" if values == {1.0} else "contradicted" if values == {0.0, 1.0} else "inconclusive"
    what = ", ".join(f"{a}: {100 * v:.0f}% of runs" for a, v in shares.items())
    return Finding("all", verdict=verdict, note=f"three ordered regimes with a common cooling: {what}")


def common_cooling(table, spec) -> Finding:
    return _share(
        table,
        lambda r, end: r.common_cooling,
        "a late regime of parallel log-curves whose common fit beats independent fits by the BIC",
    )


# The registry: the claim in a few words, the paper's sentence (with its section), the check


@dataclass(frozen=True)
class Claim:
    text: str
    quote: str
    check: Callable


CHECKS: dict[str, Claim] = {
    "smoothing_helps": Claim(
        "Smoothing improves the best test accuracy over plain SGD",
        '§4.1: "In general, the entropic regularizations (22) and (23) improve test accuracy."',
        smoothing_helps,
    ),
    "smoothing_helps_final": Claim(
        "Smoothing improves the final test accuracy over plain SGD (Figure 3 right)",
        '§4.1: "In general, the entropic regularizations (22) and (23) improve test accuracy." Figure 3: '
        '"Comparison of the best (left) and final (right) test accuracy"',
        smoothing_helps_final,
    ),
    "anisotropic_beats_fixed": Claim(
        "Beyond the paper: radii per layer (relative to the weights, or scoped by curvature) beat its one fixed R",
        'Footnote 5: "information about the eigenvalues of the Hessian matrix could be useful in scoping the '
        'hyper-parameter γ"; the paper smooths every chosen weight with the same R.',
        anisotropic_beats_fixed,
    ),
    "rise_then_degrade": Claim(
        "Accuracy rises with R up to a maximum, then degrades",
        '§4.1: "The effect increases rapidly with the size R of the smoothening region, up to a maximum size '
        'beyond which performance gets degraded."',
        rise_then_degrade,
    ),
    "single_layer_saturates": Claim(
        "Single-layer smoothing keeps improving with R (saturating)",
        '§4.2: "the single-layer regularizations continue to improve the test accuracy, showing a saturating '
        'behavior."',
        single_layer_saturates,
    ),
    "isotropic_degrades": Claim(
        "Isotropic smoothing ({1,2}) degrades as R grows",
        '§4.2: "the isotropic choice leads soon to degraded results as R increases"',
        isotropic_degrades,
    ),
    "single_beats_isotropic": Claim(
        "Single-layer smoothing ({2}) clearly beats isotropic ({1,2})",
        '§4.1: "When implemented on suitable subsets of weights (e.g. single layers), the entropic '
        'regularizations outperform significantly their isotropic counterparts."',
        single_beats_isotropic,
    ),
    "layer2_best": Claim(
        "Layer 2 alone is the best subset over the whole R range",
        '§4.2: "Regularization on the 2nd layer alone proved to be the best strategy for both choices of loss '
        'functions and in the entire range of R probed by the experiments."',
        layer2_best,
    ),
    "isotropic_small_r_only": Claim(
        "Isotropic smoothing can beat the 1st layer alone only at very small R",
        '§4.2: "The isotropic regularization can outperform the regularization on the 1st layer alone, but only '
        'at very small values for R."',
        isotropic_small_r_only,
    ),
    "isotropic_worst_large_r": Claim(
        "3-layer net: isotropic ({1,2,3}) is the worst subset at large R",
        '§4.3: "the isotropic choice proves to be the worst among all the possible choices of subsets as soon as '
        'the smoothening radius R is sufficiently big."',
        isotropic_worst_large_r,
    ),
    "layers13_best_small_r": Claim(
        "3-layer net: {1,3} is the best subset at the smallest R",
        '§4.3: "at the lowest values of R the best choice consists in regularizing with respect to the 1st and '
        '3rd layers jointly"',
        layers13_best_small_r,
    ),
    "single_deep_best_large_r": Claim(
        "3-layer net: {2} or {3} alone is best at large R",
        '§4.3: "at large values of R, regularizing with respect to the 2nd or 3rd layer alone proves to be the '
        'best choice."',
        single_deep_best_large_r,
    ),
    "deeper_profit_more": Claim(
        "Smoothing a deeper single layer helps more than the first",
        '§4.1: "the layer-wise entropic regularization is more effective when performed on deeper levels."',
        deeper_profit_more,
    ),
    "y8_matches_y4": Claim(
        "y = 8 sample points give about the same accuracy as y = 4",
        '§4.4: "The results obtained with y = 8 are comparable to those obtained with y = 4"',
        y8_matches_y4,
    ),
    "head_helps": Claim(
        "Smoothing a fully-connected head layer helps (best accuracy: early stopping)",
        '§5: "When applied to the fully-connected head of convolutional networks, partial entropic '
        "regularizations can improve the classification accuracy ... Especially when adopting an early stopping "
        'strategy"',
        head_helps,
    ),
    "head_helps_in_sample": Claim(
        "Smoothing a head layer also improves in-sample (train) accuracy",
        '§5.1: "The PLA modification of the loss function yields better performance, both in-sample and '
        'out-of-sample, especially if combined with an early stopping strategy"',
        head_helps_in_sample,
    ),
    "only_with_early_stopping": Claim(
        "STL-10: smoothing a head layer helps only with early stopping",
        '§5.2: "The partial entropic regularization, applied to one layer at a time, improves the training and '
        'validation performances, but only if accompanied with an early stopping strategy."',
        only_with_early_stopping,
    ),
    "conv_hurts": Claim(
        "Smoothing the convolutional layers hurts",
        '§5: "Partial entropic regularizations involving the convolutional layers lead, in general, to worse '
        'classification accuracy with respect to the non-regularized case"',
        conv_hurts,
    ),
    "weight_decay_no_use": Claim(
        "Weight decay 1e-2, 1e-3, 1e-4 changes nothing",
        '§5.2.1: "weight decay regularization proved to be of essentially no utility in the present experiments."',
        weight_decay_no_use,
    ),
    "pla_beats_weight_decay": Claim(
        "PLA beats weight decay",
        '§5.2.1: "On the contrary, partial entropic regularization proved to improve the performance"',
        pla_beats_weight_decay,
    ),
    "pla_early_phase": Claim(
        "PLA's gain over none is larger early in training than at the end",
        '§5.2.1: "partial entropic regularization proved to improve the performance, more significantly in the '
        'early phase of the training, only slightly in later stages."',
        pla_early_phase,
    ),
    "pla_beats_sam": Claim(
        "PLA beats SAM (beyond the paper)", "not in the paper: a baseline pleat adds", pla_beats_sam
    ),
    "pla_beats_noise": Claim(
        "PLA beats Gaussian weight noise of the same variance (beyond the paper)",
        "not in the paper: a baseline pleat adds",
        pla_beats_noise,
    ),
    "pla_plea_analogous": Claim(
        "PLA and PLEA give the same accuracy at each setting",
        '§4.2: "The results obtained with the two loss functions are qualitatively analogous."',
        pla_plea_analogous,
    ),
    "three_regimes": Claim(
        "Three regimes: signal peak, abrupt noise crossover, long noise-dominated phase",
        '§2: "the signal/noise ratio switches from being initially dominated by the signal to being later '
        "dominated by noise. This occurs quite abruptly ... and approximately at the moment when the training "
        'signal attains its maximum value"',
        three_regimes,
    ),
    "transition_at_peak": Claim(
        "The noise overtakes the signal at about the signal's peak",
        '§2: "This occurs quite abruptly (in terms of optimization time) and approximately at the moment when the '
        'training signal attains its maximum value"',
        transition_at_peak,
    ),
    "relu_tanh_alike": Claim(
        "ReLU and TanH nets show the same regimes",
        '§2: "we have obtained qualitatively similar results both with ReLU and TanH activation functions"',
        relu_tanh_alike,
    ),
    "common_cooling": Claim(
        "Late common cooling: layers' log-curves differ by constant offsets",
        '§2: "the contraction of the signal and the noise for all the layers is characterized by a common '
        'decaying behavior. At late times, the hierarchy between layers is therefore preserved and gets frozen"',
        common_cooling,
    ),
}


# Judging: Holm over the report, then each test's verdict, then each claim's


def _tests(finding: Finding) -> list[Test]:
    out: list[Test] = []
    for part in finding.parts:
        out += _tests(part) if isinstance(part, Finding) else [part]
    return out


def _test_verdict(t: Test, p: float | None, q: float | None) -> str:
    if t.estimate is None:
        return "not enough runs"
    if t.collapsed:
        return "collapsed"
    if t.direction == 0:
        if q is not None and q < ALPHA:
            return "supported"
        return "contradicted" if p is not None and p < ALPHA else "inconclusive"
    if p is not None and p < ALPHA:
        return "supported" if (t.estimate.difference > 0) == (t.direction > 0) else "contradicted"
    if t.margin and q is not None and q < ALPHA:
        return no_effect(t.margin)
    return "inconclusive"


def _combine(rule: str, verdicts: list[str]) -> str:
    """A finding's verdict from its parts' verdicts."""
    if not verdicts or all(v == "not enough runs" for v in verdicts):
        return "not enough runs"
    nulls = [v for v in verdicts if v.startswith("no effect")]
    null = nulls[0] if nulls else ""
    if rule == "not_worse":
        (v,) = verdicts
        return "supported" if v == "supported" or null else v
    if rule == "not_better":  # the paper says the difference is not positive
        v = verdicts[0] if len(verdicts) == 1 else _combine("any", verdicts)
        return "contradicted" if v == "supported" else "supported" if v == "contradicted" or null else v
    if rule == "all":
        if "contradicted" in verdicts:
            return "contradicted"
        if all(v == "supported" for v in verdicts):
            return "supported"
        return null or "inconclusive"
    if rule == "any":
        if "supported" in verdicts:
            return "supported"
        if all(v == "contradicted" for v in verdicts):
            return "contradicted"
        if all(v == "contradicted" or v.startswith("no effect") for v in verdicts):
            return null
        return "inconclusive"
    if rule == "best":
        if "contradicted" in verdicts:
            return "contradicted"
        if "supported" in verdicts and all(v == "supported" or v.startswith("no effect") for v in verdicts):
            return "supported"
        if all(v.startswith("no effect") for v in verdicts):
            return null
        return "inconclusive"
    raise ValueError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")


def _resolve(finding: Finding, verdict_of: dict) -> str:
    if finding.verdict:
        return finding.verdict
    parts = [_resolve(p, verdict_of) if isinstance(p, Finding) else verdict_of[id(p)] for p in finding.parts]
    return _combine(finding.rule, parts)


def _fmt(t: Test) -> str:
    if t.estimate is None:
        return f"{t.what}: not enough runs"
    lo, hi = t.estimate.interval()
    kind = "paired" if t.estimate.paired else "Welch"
    p = "-" if t.p is None else f"{t.p:.3g}"
    if t.q is not None:
        p += f", equivalence p = {t.q:.3g}"
    collapse = f"; the {t.collapsed} side collapsed" if t.collapsed else ""
    return (
        f"{t.what}: {100 * t.estimate.difference:+.2f} points [{100 * lo:+.2f}, {100 * hi:+.2f}] "
        f"({kind}, {t.estimate.seeds} seeds, Holm p = {p}){collapse}: {t.verdict}"
    )


def judge(table, spec) -> list[Verdict]:
    """Every claim the spec names, judged on `table`, with Holm's correction over all of their tests.

    When the table has training regimes (a `regime` column: the sensitivity spec), each claim is judged within each
    regime, as "claim [regime]", all in one Holm family. When any run collapsed (train accuracy more than 5 points
    below plain SGD's) a last row, "collapse", says which.
    """
    regimes = list(dict.fromkeys(table["regime"])) if "regime" in table and not table.empty else []
    if regimes:
        findings = {
            (claim, regime): CHECKS[claim].check(table[table["regime"] == regime], spec)
            for regime in regimes
            for claim in spec.claims
        }
    else:
        findings = {(claim, ""): CHECKS[claim].check(table, spec) for claim in spec.claims}
    tests = [(t, t.estimate) for f in findings.values() for t in _tests(f) if t.estimate and not t.collapsed]
    p = holm([e.p_zero() if t.direction else _beyond(t) for t, e in tests])
    equivalence = [(t, e) for t, e in tests if t.margin]
    q = holm([e.p_equivalent(t.margin) for t, e in equivalence])
    adjusted: dict[int, list[float | None]] = {id(t): [pv, None] for (t, _), pv in zip(tests, p)}
    for (t, _), q_value in zip(equivalence, q):
        adjusted[id(t)][1] = q_value
    done: dict[int, Test] = {}
    verdict_of: dict[int, str] = {}
    for f in findings.values():
        for t in _tests(f):
            pv, qv = adjusted.get(id(t), [None, None])
            verdict_of[id(t)] = _test_verdict(t, pv, qv)
            done[id(t)] = Test(t.what, t.estimate, t.direction, t.margin, t.collapsed, pv, qv, verdict_of[id(t)])
    out = []
    for (claim, regime), f in findings.items():
        verdict = _resolve(f, verdict_of)
        ts = [done[id(t)] for t in _tests(f)]
        shown = _shown(ts, verdict)
        detail = "; ".join(_fmt(t) for t in ts) if ts else ""
        if f.note:
            detail = f"{f.note}. {detail}" if detail else f.note
        out.append(
            Verdict(
                f"{claim} [{regime}]" if regime else claim,
                f"{CHECKS[claim].text} ({regime})" if regime else CHECKS[claim].text,
                verdict,
                shown.estimate.difference if shown and shown.estimate else None,
                shown.estimate.interval() if shown and shown.estimate else None,
                shown.estimate.seeds
                if shown and shown.estimate
                else min((t.estimate.seeds for t in ts if t.estimate), default=0),
                detail,
                CHECKS[claim].quote,
                _decisive_p(shown) if shown else None,
                bool(shown and shown.estimate and shown.estimate.paired),
                tuple(ts),
            )
        )
    collapsed = []
    for regime in regimes or [""]:
        rows = table[table["regime"] == regime] if regime else table
        if "kind" in rows:
            settings = _settings(rows[rows["kind"] != "none"], ["arm", "layers", "radius", "samples"])
            collapsed += [_describe(s) for s, runs in settings if _collapsed(runs, plain(rows))]
    if collapsed:
        out.append(
            Verdict(
                "collapse",
                f"Settings that collapsed: final train accuracy more than {100 * COLLAPSE:g} points below plain SGD's",
                "finding",
                detail="; ".join(collapsed),
                quote="not a claim of the paper: a collapsed run is an optimisation failure, so it supports no claim",
            )
        )
    return out


def _beyond(t: Test) -> float:
    """Direction-0 tests: p-value of 'the difference lies within ±margin' (rejected: beyond the margin)."""
    e = t.estimate
    assert e is not None
    shifted = Estimate(abs(e.difference) - t.margin, e.se, e.df, e.seeds, e.paired)
    return 1.0 if shifted.difference <= 0 else shifted.p_zero()  # two-sided: the side is the data's


def _shown(tests: list[Test], verdict: str) -> Test | None:
    """The test that best explains the verdict: the strongest one with the claim's verdict, else the first."""
    usable = [t for t in tests if t.estimate is not None]
    if not usable:
        return None
    matching = [t for t in usable if t.verdict == verdict] or usable
    return min(matching, key=_sort_p)


def _sort_p(t: Test) -> tuple[bool, float, float]:
    """Tests leaning the paper's way first, then the smallest adjusted p: for an inconclusive "some setting" claim
    the report shows the setting that came closest to supporting it."""
    p = _decisive_p(t)
    leaning = t.direction == 0 or (t.estimate is not None and (t.estimate.difference > 0) == (t.direction > 0))
    raw = t.estimate.p_zero() if t.estimate is not None else 1.0
    return (not leaning, 1.0 if p is None else p, raw)


def _decisive_p(t: Test) -> float | None:
    """The adjusted p-value behind a test's verdict: equivalence for "no effect" and for matching claims."""
    return t.q if t.verdict.startswith("no effect") or (t.direction == 0 and t.verdict == "supported") else t.p
