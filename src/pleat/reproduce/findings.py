"""What a claim's check states, and the results table it reads.

A check (`pleat.reproduce.claims`) returns a `Finding`: its `Test`s, one comparison of two sets of runs each, and
the rule that combines their verdicts (`pleat.reproduce.verdicts`). The table has one row per finished run: its
arm, its config keys (`layers` as a tuple, `radius`, `seed`, ...), `best_test_accuracy`, `final_test_accuracy` and
`metrics` (the per-epoch records). A test compares two sets of runs through one value per seed (the mean over the
keys it pools, e.g. the R grid): paired over common seeds, Welch otherwise (see `pleat.reproduce.stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pleat.reproduce.stats import Estimate, compare
from pleat.runs.config import radius_text

METRIC = "best_test_accuracy"  # the paper's early-stopping view
# train accuracy (on the true labels) this far below plain SGD's is a collapse, not a regularisation effect
COLLAPSE = 0.05
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
    unit: str = "points"  # points: accuracy differences x 100; else the metric's own unit ("final training loss")


@dataclass(frozen=True)
class Finding:
    """What a check found: tests (or nested findings) and the rule that combines their verdicts."""

    rule: str
    parts: tuple = ()
    note: str = ""  # said in the report's detail column
    verdict: str = ""  # set directly by checks that count runs (Figure 1), or when nothing could be compared


def no_effect(margin: float) -> str:
    return f"no effect within ±{100 * margin:g} points"


# The table


def per_seed(rows, metric: str = METRIC) -> dict:
    """{seed: the mean of `metric` over that seed's rows} (pooling, e.g., the R grid); seeds whose runs did not
    record it are left out."""
    if rows.empty:
        return {}
    values = per_row(rows, metric)
    means = values.groupby(rows["seed"]).mean().items()
    return {int(s): float(v) for s, v in means if v == v}  # NaN: the runs did not record it


def per_row(rows, metric: str):
    """`metric` of each row (a column of the table, or computed from its metrics), as a Series on its index."""
    return rows[metric] if metric in rows else rows.apply(_METRICS[metric], axis=1)


def _last(row, key: str) -> float:
    metrics = row.get("metrics")
    if not isinstance(metrics, list) or not metrics or key not in metrics[-1]:
        return float("nan")
    return float(metrics[-1][key])


def _train_accuracy(row) -> float:
    """The final train accuracy, on the true labels where the run trained on noisy ones: a regulariser that
    refuses to memorise wrong labels has not collapsed."""
    clean = _last(row, "train_accuracy_clean")
    return clean if clean == clean else _last(row, "train_accuracy")


def _early_gain(row) -> float:
    """Test accuracy at a quarter of training minus the final one (per run; compared between arms)."""
    metrics = row.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        return float("nan")
    early = metrics[max(0, len(metrics) // 4 - 1)]
    return float(early["test_accuracy"]) - float(metrics[-1]["test_accuracy"])


def _selected(row, key: str) -> float:
    """An early-stopped or end-of-training accuracy of the run's metrics (`pleat.runs.lifecycle.selection`)."""
    from pleat.runs.lifecycle import selection

    metrics = row.get("metrics")
    return float(selection(metrics).get(key, float("nan"))) if isinstance(metrics, list) and metrics else float("nan")


_METRICS: dict[str, Callable] = {
    "final_train_accuracy": lambda row: _train_accuracy(row),
    "final_train_loss": lambda row: _last(row, "train_loss"),
    "selected_test_accuracy": lambda row: _selected(row, "selected_test_accuracy"),
    "final_mean_test_accuracy": lambda row: _selected(row, "final_mean_test_accuracy"),
    "early_minus_final": _early_gain,
}


def epoch_seconds(row) -> float:
    """The median time of the run's epochs as its metrics recorded it (training and evaluation; in a vectorised
    group, the group's time over its runs), NaN where none was recorded."""
    metrics = row.get("metrics")
    seconds = sorted(r["seconds"] for r in metrics if "seconds" in r) if isinstance(metrics, list) else []
    return float(seconds[len(seconds) // 2]) if seconds else float("nan")


def cost_ratio(rows, base) -> float:
    """The median epoch time of `rows` over that of `base` (plain SGD's runs): what an epoch of the method costs.
    Comparable only between runs trained alike (device, threads, group size): the report's environment says."""
    mine = sorted(epoch_seconds(r) for _, r in rows.iterrows())
    theirs = sorted(epoch_seconds(r) for _, r in base.iterrows())
    if not mine or not theirs:
        return float("nan")
    return mine[len(mine) // 2] / theirs[len(theirs) // 2]


def at_equal_time(rows, base, metric: str):
    """`rows` with a column `equal_time`: `metric` recomputed on the first E / c epochs of each run (E its epochs,
    c its cost ratio to `base`), the epochs it trains in the time plain SGD takes for all of its own."""
    from pleat.runs.lifecycle import selection

    c = cost_ratio(rows, base)

    def value(row) -> float:
        metrics = row["metrics"]
        epochs = len(metrics) if not c > 1 else max(1, int(len(metrics) / c))
        head = metrics[:epochs]
        if metric == "best_test_accuracy":
            return max(r["test_accuracy"] for r in head)
        if metric == "final_test_accuracy":
            return head[-1]["test_accuracy"]
        return float(selection(head).get(metric, float("nan")))

    return rows.assign(equal_time=[value(r) for _, r in rows.iterrows()])


def has_collapsed(rows, plain) -> bool:
    if plain is None or plain.empty or rows.empty or "metrics" not in rows:
        return False
    mine = [v for v in per_seed(rows, "final_train_accuracy").values() if v == v]  # NaN: no train accuracy
    theirs = [v for v in per_seed(plain, "final_train_accuracy").values() if v == v]
    return bool(mine and theirs) and sum(mine) / len(mine) < sum(theirs) / len(theirs) - COLLAPSE


def versus(what: str, a, b, direction: int, spec, plain=None, metric: str | None = None) -> Test:
    """The test of a - b (rows of the table) on `metric` (default: the spec's); `plain`: plain SGD's rows, against
    which collapse is judged."""
    chosen = str(metric or getattr(spec, "metric", METRIC))
    estimate = compare(per_seed(a, chosen), per_seed(b, chosen))
    collapsed = " and ".join(side for side, rows in (("first", a), ("second", b)) if has_collapsed(rows, plain))
    return Test(what, estimate, direction, spec.margin, collapsed)


def smoothed(table):
    return table[table["kind"].isin(["pla", "plea"])]


def subset(table, *layers):
    return table[(table["kind"].isin(["pla", "plea"])) & (table["layers"] == tuple(layers))]


def plain(table):
    return table[(table["kind"] == "none") & (table["weight_decay"] == 0)]


def subset_name(layers) -> str:
    """{1,2}; no layers (SAM on every parameter): all."""
    return "{" + ",".join(str(x) for x in layers) + "}" if len(layers) else "all"


def radii(table) -> list[float]:
    """The fixed radii of the smoothed runs (radii per layer, relative or scoped, are settings of their own)."""
    return sorted(r for r in smoothed(table)["radius"].unique() if isinstance(r, float))


def at_radius(table, r):
    return table[table["radius"] == r]


def radius_label(r) -> str:
    return f"R = {radius_text(r)}"


def settings_in(rows, keys: list[str]):
    """(setting, rows) for each combination of `keys` present, in the table's order."""
    present = [k for k in keys if k in rows]
    return [(dict(zip(present, v)), g) for v, g in rows.groupby(present, sort=False)] if present else []


def describe(setting: dict, sep: str = " ") -> str:
    """A setting in words: its arm, subset, R (ρ for SAM; none for plain SGD), y where the method draws points, and
    a weight decay other than 0."""
    kind = setting.get("kind", "pla")
    parts = []
    for k, v in setting.items():
        if k == "kind" or (k in ("radius", "samples") and kind == "none") or (k == "weight_decay" and not v):
            continue
        if k == "layers":
            parts.append(subset_name(v))
        elif k == "radius":
            parts.append(radius_label(v).replace("R =", "ρ =") if kind == "sam" else radius_label(v))
        elif k == "samples":
            if kind in ("pla", "plea"):
                parts.append(f"y = {v}")
        elif k == "weight_decay":
            parts.append(f"weight decay {v:g}")
        else:
            parts.append(str(v))
    return sep.join(parts)


def empty(why: str) -> Finding:
    return Finding("all", verdict="not enough runs", note=why)


def hidden_layers(temperature: dict) -> dict:
    """The hidden layers of a probe record: all but the output layer, the last weight layer.

    The paper's Figure 1 shows layers I = 1..4 of its "4-layer" net, which counts hidden layers (its "2-layer" net
    is 784-784-784-10): the output layer is recorded in the store but left out of Figure 1 and its claims.
    """
    names = list(temperature)
    return {n: temperature[n] for n in names[:-1]} if len(names) > 1 else dict(temperature)
