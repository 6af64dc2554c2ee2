"""The paper's claims as code: each check reads a sweep's results table and returns a verdict with its numbers.

The table has one row per finished run: its arm, its config keys (`layers` as a tuple, `radius`, `seed`, ...) and
`best_test_accuracy`, `final_test_accuracy` (and `metrics`, the per-epoch records, for Figure 1). A comparison
averages each seed's runs over the keys it pools (e.g. the R grid), then takes the difference of the two means
with a 95% Welch interval: "supported" when the interval lies on the claimed side of zero (or, for "matches" claims,
inside ±margin), "contradicted" when it lies on the other side (outside the margin), "inconclusive" otherwise, and
"not enough runs" when a side has fewer than 2 seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

METRIC = "best_test_accuracy"  # the paper's early-stopping view
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]
_T975 += [2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


@dataclass(frozen=True)
class Verdict:
    """A claim, what the runs show and the verdict. `difference` and `interval` are in accuracy units."""

    claim: str  # the check's name
    text: str  # the paper's claim in words
    verdict: str  # supported | contradicted | inconclusive | not enough runs
    difference: float | None = None
    interval: tuple[float, float] | None = None
    seeds: int = 0  # the fewest seeds on either side of the comparison
    detail: str = ""  # what was compared with what


def t975(df: float) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (rounded down: conservative)."""
    d = max(1, int(df))
    if d <= 30:
        return _T975[d - 1]
    return 2.021 if d < 60 else 2.000 if d < 120 else 1.980 if d < 1000 else 1.960


def difference(a: list[float], b: list[float]) -> tuple[float, tuple[float, float]]:
    """mean(a) - mean(b) and its 95% Welch interval (a and b: one value per seed)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    d = ma - mb
    if se2 == 0:
        return d, (d, d)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = t975(df) * math.sqrt(se2)
    return d, (d - half, d + half)


def per_seed(rows, metric: str = METRIC) -> list[float]:
    """One value per seed: the mean of `metric` over that seed's rows (pooling, e.g., the R grid)."""
    return [float(v) for v in rows.groupby("seed")[metric].mean()]


def greater(claim: str, a, b, detail: str, margin: float = 0.0) -> Verdict:
    """Is `a` above `b` (rows of the table, pooled per seed)? margin > 0: do they match within ±margin instead?"""
    text = CHECKS[claim][0]
    xa, xb = per_seed(a), per_seed(b)
    n = min(len(xa), len(xb))
    if n < 2:
        return Verdict(claim, text, "not enough runs", seeds=n, detail=detail)
    d, (lo, hi) = difference(xa, xb)
    if margin:
        verdict = (
            "supported"
            if -margin <= lo and hi <= margin
            else "contradicted"
            if lo > margin or hi < -margin
            else "inconclusive"
        )
    else:
        verdict = "supported" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    return Verdict(claim, text, verdict, d, (lo, hi), n, detail)


def missing(claim: str, why: str) -> Verdict:
    return Verdict(claim, CHECKS[claim][0], "not enough runs", detail=why)


def _subset(table, *layers: int):
    return table[(table["kind"].isin(["pla", "plea"])) & (table["layers"] == tuple(layers))]


def _plain(table):
    return table[(table["kind"] == "none") & (table["weight_decay"] == 0)]


def _name(layers) -> str:
    return "{" + ",".join(str(x) for x in layers) + "}"


def best_setting(rows, keys: list[str]):
    """The rows of the setting (values of `keys`) with the highest mean metric, and that setting."""
    setting = rows[keys].astype(str).agg("|".join, axis=1)  # tuples of layers group safely as strings
    best = rows[setting == rows.groupby(setting)[METRIC].mean().idxmax()]
    return best, {k: best[k].iloc[0] for k in keys}


def setting_text(kind: str, setting: dict) -> str:
    """A method's hyperparameters in words: R for the box and the noise, ρ for SAM, none for plain SGD's radius."""
    parts = []
    for k, v in setting.items():
        if k == "layers":
            parts.append(_name(v))
        elif k == "radius" and kind != "none":
            parts.append(f"{'ρ' if kind == 'sam' else 'R'} = {v:g}")
        elif k == "weight_decay" and v:
            parts.append(f"weight decay {v:g}")
    return ", ".join(parts)


def _radii(table) -> list[float]:
    return sorted(table[table["kind"].isin(["pla", "plea"])]["radius"].unique())


# Figures 3 and 4 left: the 2-layer net, subsets {1}, {2}, {1,2}


def smoothing_helps(table, spec) -> Verdict:
    smoothed = table[table["kind"].isin(["pla", "plea"])]
    plain = _plain(table)
    if smoothed.empty or plain.empty:
        return missing("smoothing_helps", "needs smoothed and plain runs")
    best, setting = best_setting(smoothed, ["arm", "layers", "radius", "samples"])
    where = f"{setting['arm']} on {_name(setting['layers'])} at R = {setting['radius']:g}"
    return greater("smoothing_helps", best, plain, f"{where} (the best setting) against plain SGD")


def rise_then_degrade(table, spec) -> Verdict:
    smoothed = table[table["kind"].isin(["pla", "plea"])]
    radii = _radii(table)
    if len(radii) < 3:
        return missing("rise_then_degrade", "needs at least 3 radii")
    best, setting = best_setting(smoothed, ["layers"])
    curve = smoothed[smoothed["layers"] == setting["layers"]]
    peak = curve.groupby("radius")[METRIC].mean().idxmax()
    name = _name(setting["layers"])
    if peak in (radii[0], radii[-1]):
        end = "smallest" if peak == radii[0] else "largest"
        v = greater("rise_then_degrade", curve[curve["radius"] == peak], curve[curve["radius"] != peak], "")
        verdict = "not enough runs" if v.verdict == "not enough runs" else "contradicted"
        return Verdict(v.claim, v.text, verdict, v.difference, v.interval, v.seeds, f"{name} peaks at the {end} R")
    rise = greater("rise_then_degrade", curve[curve["radius"] == peak], curve[curve["radius"] == radii[0]], "")
    fall = greater("rise_then_degrade", curve[curve["radius"] == peak], curve[curve["radius"] == radii[-1]], "")
    worst = min((rise, fall), key=lambda v: v.interval[0] if v.interval else -math.inf)
    detail = f"{name} peaks at R = {peak:g}; shown: the peak against the end of the R grid it beats least"
    return Verdict(worst.claim, worst.text, worst.verdict, worst.difference, worst.interval, worst.seeds, detail)


def single_beats_isotropic(table, spec) -> Verdict:
    return greater(
        "single_beats_isotropic", _subset(table, 2), _subset(table, 1, 2), "{2} against {1,2}, averaged over R"
    )


def layer2_best(table, spec) -> Verdict:
    verdicts = []
    for r in _radii(table):
        at = table[table["radius"] == r]
        others = [s for s in ((1,), (1, 2)) if not _subset(at, *s).empty]
        if not others:
            continue
        rival = max(others, key=lambda s: _subset(at, *s)[METRIC].mean())
        verdicts.append(
            greater("layer2_best", _subset(at, 2), _subset(at, *rival), f"{{2}} against {_name(rival)} at R = {r:g}")
        )
    return _all(verdicts, "layer2_best")


def isotropic_small_r_only(table, spec) -> Verdict:
    radii = _radii(table)
    if len(radii) < 2:
        return missing("isotropic_small_r_only", "needs at least 2 radii")
    small, large = (table[table["radius"] == r] for r in (radii[0], radii[-1]))
    competitive = greater("isotropic_small_r_only", _subset(small, 1, 2), _subset(small, 1), "")
    behind = greater("isotropic_small_r_only", _subset(large, 2), _subset(large, 1, 2), "")
    detail = (
        f"at R = {radii[0]:g}, {{1,2}} - {{1}} = {_fmt(competitive)}; at R = {radii[-1]:g}, {{2}} - {{1,2}} = "
        f"{_fmt(behind)} (shown)"
    )
    if "not enough runs" in (competitive.verdict, behind.verdict):
        verdict = "not enough runs"
    elif behind.verdict == "supported" and competitive.verdict != "contradicted":
        verdict = "supported"
    elif behind.verdict == "contradicted":
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return Verdict(behind.claim, behind.text, verdict, behind.difference, behind.interval, behind.seeds, detail)


# Figure 4 right: the 3-layer net, the 7 subsets of {1,2,3}

SUBSETS3 = [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]


def _against_rest(claim: str, table, r: float, winners: list[tuple], losers: list[tuple], detail: str) -> Verdict:
    """Does the best of `winners` beat the best of `losers` at radius r (or the worst of them when reversed)?"""
    at = table[table["radius"] == r]
    present = [s for s in winners + losers if not _subset(at, *s).empty]
    win = [s for s in winners if s in present]
    lose = [s for s in losers if s in present]
    if not win or not lose:
        return missing(claim, f"needs runs of {', '.join(map(_name, winners + losers))} at R = {r:g}")
    w = max(win, key=lambda s: _subset(at, *s)[METRIC].mean())
    rival = max(lose, key=lambda s: _subset(at, *s)[METRIC].mean())
    return greater(
        claim, _subset(at, *w), _subset(at, *rival), f"{_name(w)} against {_name(rival)} at R = {r:g} {detail}"
    )


def isotropic_worst_large_r(table, spec) -> Verdict:
    radii = _radii(table)
    if not radii:
        return missing("isotropic_worst_large_r", "needs smoothed runs")
    at = table[table["radius"] == radii[-1]]
    others = [s for s in SUBSETS3[:-1] if not _subset(at, *s).empty]
    if not others or _subset(at, 1, 2, 3).empty:
        return missing("isotropic_worst_large_r", "needs {1,2,3} and other subsets at the largest R")
    weakest = min(others, key=lambda s: _subset(at, *s)[METRIC].mean())
    return greater(
        "isotropic_worst_large_r",
        _subset(at, *weakest),
        _subset(at, 1, 2, 3),
        f"the weakest other subset {_name(weakest)} against {{1,2,3}} at R = {radii[-1]:g}",
    )


def layers13_best_small_r(table, spec) -> Verdict:
    radii = _radii(table)
    if not radii:
        return missing("layers13_best_small_r", "needs smoothed runs")
    rest = [s for s in SUBSETS3 if s != (1, 3)]
    return _against_rest("layers13_best_small_r", table, radii[0], [(1, 3)], rest, "(the smallest R)")


def single_deep_best_large_r(table, spec) -> Verdict:
    radii = _radii(table)
    if not radii:
        return missing("single_deep_best_large_r", "needs smoothed runs")
    rest = [s for s in SUBSETS3 if s not in ((2,), (3,))]
    return _against_rest("single_deep_best_large_r", table, radii[-1], [(2,), (3,)], rest, "(the largest R)")


def deeper_profit_more(table, spec) -> Verdict:
    steps = [
        greater("deeper_profit_more", _subset(table, 3), _subset(table, 2), "{3} against {2}, averaged over R"),
        greater("deeper_profit_more", _subset(table, 2), _subset(table, 1), "{2} against {1}, averaged over R"),
    ]
    return _all(steps, "deeper_profit_more")


# Figure 5


def y8_matches_y4(table, spec) -> Verdict:
    smoothed = table[table["kind"].isin(["pla", "plea"])]
    return greater(
        "y8_matches_y4",
        smoothed[smoothed["samples"] == 8],
        smoothed[smoothed["samples"] == 4],
        f"y = 8 against y = 4, averaged over subsets and R; equivalence margin ±{spec.margin:g}",
        margin=spec.margin,
    )


# Figures 6-8: the CNNs


def _arm(table, prefix: str):
    return table[table["arm"].str.startswith(prefix)]


def head_helps(table, spec) -> Verdict:
    heads = _arm(table, "PLA head")
    if heads.empty:
        return missing("head_helps", "needs PLA runs on a head layer")
    best, setting = best_setting(heads, ["arm"])
    return greater("head_helps", best, _plain(table), f"{setting['arm']} (the better head) against none")


def conv_hurts(table, spec) -> Verdict:
    return greater("conv_hurts", _plain(table), _arm(table, "PLA conv"), "none against PLA on the convolutions")


def weight_decay_no_use(table, spec) -> Verdict:
    decayed = table[(table["kind"] == "none") & (table["weight_decay"] > 0)]
    verdicts = [
        greater("weight_decay_no_use", rows, _plain(table), f"weight decay {wd:g} against none", margin=spec.margin)
        for wd, rows in decayed.groupby("weight_decay")
    ]
    return _all(verdicts, "weight_decay_no_use")


def _beats_baseline(claim: str, table, baseline) -> Verdict:
    smoothed = table[table["kind"] == "pla"]
    if smoothed.empty or baseline.empty:
        return missing(claim, "needs PLA runs and baseline runs")
    pla, setting = best_setting(smoothed, ["arm", "layers", "radius"])
    rival, rival_setting = best_setting(baseline, ["arm", "radius", "weight_decay"])
    what = setting_text(rival["kind"].iloc[0], {k: v for k, v in rival_setting.items() if k != "arm"})
    detail = (
        f"PLA on {_name(setting['layers'])} at R = {setting['radius']:g} against {rival_setting['arm']} "
        f"({what or 'default'}), each at its best"
    )
    return greater(claim, pla, rival, detail)


def pla_beats_weight_decay(table, spec) -> Verdict:
    return _beats_baseline(
        "pla_beats_weight_decay", table, table[(table["kind"] == "none") & (table["weight_decay"] > 0)]
    )


def pla_beats_sam(table, spec) -> Verdict:
    return _beats_baseline("pla_beats_sam", table, table[table["kind"] == "sam"])


def pla_beats_noise(table, spec) -> Verdict:
    return _beats_baseline("pla_beats_noise", table, table[table["kind"] == "noise"])


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


def _share(claim: str, table, holds: Callable, detail: str) -> Verdict:
    found = _regimes_per_run(table)
    if len(found) < 2:
        return missing(claim, "needs at least 2 runs with probe windows (probe_every > 0)")
    yes = sum(bool(holds(r, end)) for _, r, end in found)
    verdict = "supported" if yes == len(found) else "contradicted" if yes == 0 else "inconclusive"
    text = CHECKS[claim][0]
    return Verdict(claim, text, verdict, yes / len(found), None, len(found), f"{yes} of {len(found)} runs: {detail}")


def three_regimes(table, spec) -> Verdict:
    def holds(r, end):
        peak = max(layer.peak for layer in r.layers)
        return r.signal_end is not None and peak <= r.signal_end <= end / 2

    return _share(
        "three_regimes",
        table,
        holds,
        "every layer's signal peaks, then all layers turn noise-dominated by mid-training and stay so",
    )


def common_cooling(table, spec) -> Verdict:
    return _share(
        "common_cooling",
        table,
        lambda r, end: r.common_cooling,
        "a late regime of parallel log-curves whose common fit beats independent fits by the BIC",
    )


def _all(verdicts: list[Verdict], claim: str) -> Verdict:
    """Several comparisons that must all hold: the verdict of the weakest, with the others in the detail."""
    if not verdicts:
        return missing(claim, "no comparison could be made")
    order = {"contradicted": 0, "not enough runs": 1, "inconclusive": 2, "supported": 3}
    worst = min(verdicts, key=lambda v: (order[v.verdict], v.interval[0] if v.interval else 0))
    detail = "; ".join(f"{v.detail}: {_fmt(v)}" for v in verdicts)
    return Verdict(claim, worst.text, worst.verdict, worst.difference, worst.interval, worst.seeds, detail)


def _fmt(v: Verdict) -> str:
    if v.interval is None:
        return v.verdict
    return f"{v.difference:+.4f} [{v.interval[0]:+.4f}, {v.interval[1]:+.4f}]"


CHECKS: dict[str, tuple[str, Callable]] = {
    "smoothing_helps": ("Smoothing improves the best test accuracy over plain SGD", smoothing_helps),
    "rise_then_degrade": ("Accuracy rises with R up to a maximum, then degrades", rise_then_degrade),
    "single_beats_isotropic": ("Single-layer smoothing ({2}) clearly beats isotropic ({1,2})", single_beats_isotropic),
    "layer2_best": ("Layer 2 alone is the best subset over the whole R range", layer2_best),
    "isotropic_small_r_only": ("Isotropic smoothing is competitive only at very small R", isotropic_small_r_only),
    "isotropic_worst_large_r": (
        "3-layer net: isotropic ({1,2,3}) is the worst subset at large R",
        isotropic_worst_large_r,
    ),
    "layers13_best_small_r": ("3-layer net: {1,3} is the best subset at the smallest R", layers13_best_small_r),
    "single_deep_best_large_r": ("3-layer net: {2} or {3} alone is best at large R", single_deep_best_large_r),
    "deeper_profit_more": ("3-layer net: deeper layers profit more ({3} > {2} > {1})", deeper_profit_more),
    "y8_matches_y4": ("y = 8 sample points give about the same accuracy as y = 4", y8_matches_y4),
    "head_helps": ("Smoothing a fully-connected head layer helps (best accuracy: early stopping)", head_helps),
    "conv_hurts": ("Smoothing the convolutional layers hurts", conv_hurts),
    "weight_decay_no_use": ("Weight decay 1e-2, 1e-3, 1e-4 changes nothing", weight_decay_no_use),
    "pla_beats_weight_decay": ("PLA beats weight decay", pla_beats_weight_decay),
    "pla_beats_sam": ("PLA beats SAM (beyond the paper)", pla_beats_sam),
    "pla_beats_noise": ("PLA beats Gaussian weight noise of the same variance (beyond the paper)", pla_beats_noise),
    "three_regimes": ("Three regimes: signal peak, abrupt noise crossover, long noise-dominated phase", three_regimes),
    "common_cooling": ("Late common cooling: layers' log-curves differ by constant offsets", common_cooling),
}


def judge(table, spec) -> list[Verdict]:
    """Every claim the spec names, judged on `table`."""
    return [CHECKS[name][1](table, spec) for name in spec.claims]
