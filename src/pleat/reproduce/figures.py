"""The figures of a sweep, drawn from its results table (see `results.results_table`), mean ± std over seeds.

Layers are labelled by the indices the spec gives ({1,2}), never by module names. Figures are matplotlib
`Figure`s built without pyplot, so drawing never switches a notebook's backend.
"""

from __future__ import annotations

import math
from pathlib import Path

from pleat.probes.plots import draw_temperature, new_figure
from pleat.reproduce.findings import describe, hidden_layers, subset_name

BUDGET_NOTE = {
    "smoke": "smoke budget: checks the mechanics, not the claims",
    "quick": "quick budget: a compressed schedule, not the spec's protocol",
    "decisive": "decisive budget: the spec's protocol (the paper's for its figures), settings fixed in advance",
    "paper": "paper budget: the spec's protocol (the paper's for its figures)",
}


def rgb(layers) -> tuple[float, float, float]:
    """Figure 4 right's colour code: red = layer 1, green = 2, blue = 3; all three is grey, not white."""
    r, g, b = (0.85 if i in layers else 0.0 for i in (1, 2, 3))
    return (0.45, 0.45, 0.45) if r and g and b else (r, g, b)


def _series(table, keys: list[str]):
    """(label, rows) for each combination of `keys`, in the table's order."""
    out = []
    for values, rows in table.groupby(keys, sort=False, dropna=False):  # a list of keys: tuples of values
        parts = []
        for k, v in zip(keys, values):
            if k == "arm":
                parts.append(str(v))
            elif k == "layers":
                parts.append(subset_name(v) if v else "")
            elif k == "samples":
                parts.append(f"y = {v}")
            else:
                parts.append(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}")
        out.append((" ".join(p for p in parts if p), dict(zip(keys, values)), rows))
    return out


def _varying(table, keys: list[str]) -> list[str]:
    return [k for k in keys if k in table and table[k].astype(str).nunique() > 1]


def _mean_std(values) -> tuple[float, float]:
    values = [float(v) for v in values]
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def accuracy_vs_radius(table, spec, budget: str):
    """Figures 3-5: best (left) and final (right) test accuracy against R, one curve per subset; references flat."""
    fig, axes = new_figure((12, 4.8), 2)
    on_axis = table.groupby("arm")["radius"].transform("nunique") > 1
    curves, references = table[on_axis], table[~on_axis]
    keys = ["arm"] + _varying(curves, ["layers", "samples"])
    for ax, metric, name in zip(axes, ("best_test_accuracy", "final_test_accuracy"), ("best", "final")):
        for k, (label, values, rows) in enumerate(_series(curves, keys)):
            stats = rows.groupby("radius")[metric].agg(list).sort_index()
            r = list(stats.index)
            m, s = zip(*(_mean_std(v) for v in stats))
            colour = rgb(values["layers"]) if spec.colours == "rgb" and "layers" in values else f"C{k}"
            ax.plot(r, m, "o-", color=colour, label=label)
            ax.fill_between(r, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=colour, alpha=0.15)
        for k, (label, _, rows) in enumerate(_series(references, ["arm"] + _varying(references, ["weight_decay"]))):
            level, spread = _mean_std(rows[metric])
            ax.axhline(level, color="black", ls=["--", ":", "-."][k % 3], lw=1, label=f"{label} (mean ± std)")
            ax.axhspan(level - spread, level + spread, color="black", alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("radius R (half-side of the box, per weight)")
        ax.set_ylabel(f"{name} test accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _finish(fig, spec, budget, table)


def training_curves(table, spec, budget: str):
    """Figures 6-8: training loss (left) and test accuracy (right, train accuracy paler) against epochs."""
    fig, axes = new_figure((12, 4.8), 2)
    keys = ["arm"] + _varying(table, ["weight_decay", "radius"])
    for k, (label, _, rows) in enumerate(_series(table, keys)):
        colour = f"C{k}"
        for ax, metric, style in (
            (axes[0], "train_loss", dict(alpha=1.0)),
            (axes[1], "test_accuracy", dict(alpha=1.0)),
            (axes[1], "train_accuracy", dict(alpha=0.35, ls="--")),
        ):
            runs = [[m[metric] for m in metrics] for metrics in rows["metrics"]]
            epochs = range(1, min(map(len, runs)) + 1)
            stats = [_mean_std([run[e - 1] for run in runs]) for e in epochs]
            m, s = [a for a, _ in stats], [b for _, b in stats]
            name = label if metric != "train_accuracy" else None
            ax.plot(list(epochs), m, color=colour, label=name, **style)
            ax.fill_between(
                list(epochs), [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=colour, alpha=0.1
            )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (at the centre W)")
    axes[1].set_ylabel("test accuracy (solid), train accuracy (dashed, paler)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return _finish(fig, spec, budget, table)


def temperature(table, spec, budget: str):
    """Figure 1: ln s_I (solid) and ln std (dashed) per layer against steps, regimes marked.

    Each curve is the geometric mean over seeds.
    """
    from pleat.probes.regimes import regimes

    groups = _series(table, ["arm"] + _varying(table, ["activation"]))
    fig, axes = new_figure((7 * len(groups), 4.8), len(groups))
    axes = axes if len(groups) > 1 else [axes]
    for ax, (label, _, rows) in zip(axes, groups):
        runs = [[w for m in metrics for w in m.get("windows", [])] for metrics in rows["metrics"]]
        length = min(map(len, runs))
        if length < 2:
            ax.set_title(f"{label}: no probe windows (probe_every = 0)")
            continue

        def geometric_mean(i: int, name: str, j: int) -> float:
            return math.exp(sum(math.log(max(run[i]["temperature"][name][j], 1e-300)) for run in runs) / len(runs))

        history = [
            {
                name: (geometric_mean(i, name, 0), geometric_mean(i, name, 1))
                for name in hidden_layers(runs[0][i]["temperature"])
            }
            for i in range(length)
        ]
        steps = [w["step"] for w in runs[0][:length]]
        try:
            found = regimes(history, times=steps)
        except ValueError:
            found = None
        draw_temperature(ax, history, found, steps)
        if "probe_estimator" in rows and (rows["probe_estimator"] == "weight").all():
            ax.set_ylabel("per weight: RMS mean gradient (solid), its std (dashed)")
        ax.set_xlabel("training step")
        ax.set_title(f"{label} ({len(runs)} seeds)", fontsize=10)
    return _finish(fig, spec, budget, table)


def best_setting(rows, keys: list[str]):
    """The rows of the setting (values of `keys`) with the highest mean best test accuracy, and that setting.

    For drawing only: the claims never pick a setting on the runs that test it."""
    setting = rows[keys].astype(str).agg("|".join, axis=1)  # tuples of layers group safely as strings
    best = rows[setting == rows.groupby(setting)["best_test_accuracy"].mean().idxmax()]
    return best, {k: best[k].iloc[0] for k in keys}


def best_settings(table, spec, budget: str):
    """Baselines: each method at its best setting, best test accuracy mean ± std over seeds."""
    fig, ax = new_figure((10, 4.8))
    labels, means, stds = [], [], []
    for arm, rows in table.groupby("arm", sort=False):
        keys = _varying(rows, ["radius", "weight_decay", "layers"])
        if keys:
            rows, setting = best_setting(rows, keys)
            arm = f"{arm}\n({describe({'kind': rows['kind'].iloc[0], **setting}, sep=', ')})"
        m, s = _mean_std(rows["best_test_accuracy"])
        labels.append(arm)
        means.append(m)
        stds.append(s)
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color=[f"C{k}" for k in range(len(labels))])
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    low = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, low - 0.02), min(1.0, max(m + s for m, s in zip(means, stds)) + 0.01))
    ax.set_ylabel("best test accuracy (each at its best setting)")
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, spec, budget, table)


def paired_gains(table, spec, budget: str):
    """Each setting's paired gain over plain SGD of its regime, in points, with 95% intervals, one group per regime:
    left the accuracy the spec's claims compare (best, or early-stopped), right where training ends (the mean of
    the last 10 epochs where the runs recorded it, else the final epoch)."""
    from pleat.reproduce.findings import per_row, per_seed, plain
    from pleat.reproduce.stats import compare

    fig, axes = new_figure((12, 4.8), 2)
    regimes = list(dict.fromkeys(table["regime"])) if "regime" in table else [""]
    ending = "final_mean_test_accuracy" if per_row(table, "final_mean_test_accuracy").notna().all() else None
    shown = {
        spec.metric: {"best_test_accuracy": "best", "selected_test_accuracy": "early-stopped"}.get(spec.metric, ""),
        ending or "final_test_accuracy": "mean of the last 10 epochs'" if ending else "final",
    }
    # an arm named for its regime ("PLA (small data)") is one method across the regimes: one colour
    table = table.assign(arm=table["arm"].str.split(" (", regex=False).str[0])
    keys = [k for k in ("arm", "kind", "layers", "radius") if k in table]
    settings = list(table[table["kind"] != "none"].groupby(keys, sort=False, dropna=False).groups)
    for ax, (metric, name) in zip(axes, shown.items()):
        ticks, labels, labelled = [], [], set()
        for g, regime in enumerate(regimes):
            rows = table[table["regime"] == regime] if regime else table
            base = per_seed(plain(rows), metric)
            groups = dict(list(rows.groupby(keys, sort=False, dropna=False)))
            for k, values in enumerate(settings):
                runs = groups.get(values)
                e = None if runs is None else compare(per_seed(runs, metric), base)
                if e is None:
                    continue
                x = g + (k - (len(settings) - 1) / 2) * 0.8 / max(1, len(settings))
                lo, hi = e.interval()
                ax.errorbar(
                    [x],
                    [100 * e.difference],
                    yerr=[[100 * (e.difference - lo)], [100 * (hi - e.difference)]],
                    fmt="os^"[k // 10 % 3],  # ten colours, then other markers
                    color=f"C{k % 10}",
                    capsize=3,
                    label=None if k in labelled else describe(dict(zip(keys, values))),
                )
                labelled.add(k)
            ticks.append(g)
            labels.append(regime or "all runs")
        ax.axhline(0, color="black", lw=1)
        ax.set_xticks(ticks, labels)
        ax.set_ylabel(f"{name} test accuracy:\ngain over plain SGD (points, paired, 95%)")
        ax.grid(alpha=0.3, axis="y")
    handles, names = axes[0].get_legend_handles_labels()
    fig = _finish(fig, spec, budget, table)
    columns = min(5, max(1, len(names)))
    fig.legend(handles, names, loc="lower center", ncol=columns, fontsize=7, frameon=False)
    fig.subplots_adjust(bottom=0.1 + 0.045 * math.ceil(len(names) / columns))  # room for the legend below
    return fig


def _finish(fig, spec, budget: str, table):
    seeds = table.groupby("arm")["seed"].nunique().min()
    note = BUDGET_NOTE.get(budget, "runs of a user's store")
    fig.suptitle(f"{spec.title}\n{note}; {seeds} seed(s) per point", fontsize=10)
    fig.tight_layout()
    return fig


DRAW = {
    "radius": accuracy_vs_radius,
    "curves": training_curves,
    "temperature": temperature,
    "baselines": best_settings,
    "regimes": paired_gains,
}


def draw(table, spec, budget: str, path: str | Path):
    """Draw the spec's figure from `table` and save it to `path`; returns the path."""
    fig = DRAW[spec.plot](table, spec, budget)
    fig.savefig(path, dpi=110)
    return Path(path)
