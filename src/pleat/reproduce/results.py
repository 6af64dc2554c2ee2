"""A sweep folder's finished runs as a table: what the figures, claims and reports read."""

from __future__ import annotations

import json
from pathlib import Path

from pleat.reproduce.spec import Spec, expand


def results_table(out: str | Path, spec: Spec | None = None, budget: str | None = None):
    """One row per finished run of the store `out`/runs: arm, config keys, best/final test accuracy, metrics.

    With a spec and budget, runs are labelled by the spec's arms and only the spec's runs are taken.
    """
    import pandas as pd

    from pleat.runs.config import Config
    from pleat.runs.store import CorruptRun, read_metrics

    store = store_dir(out)
    arms, regimes = {}, {}
    if spec is not None and budget is not None:
        expanded = expand(spec, budget, _sweep_seeds(out), out_dir=str(store))
        arms = {r.config.key(): r.arm for r in expanded}
        regimes = {r.config.key(): r.regime for r in expanded if r.regime}
    rows = []
    for result_path in sorted(store.glob("*/result.json")):
        run_dir = result_path.parent
        if arms and run_dir.name not in arms:
            continue
        try:
            config = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
            metrics = read_metrics(run_dir / "metrics.jsonl")
        except (CorruptRun, ValueError):
            continue
        result = json.loads(result_path.read_text())
        row = {k: getattr(config, k) for k in config.to_dict()}
        row["layers"] = tuple(config.layers)
        row["arm"] = arms.get(run_dir.name, config.kind)
        if regimes:
            row["regime"] = regimes[run_dir.name]
        row["run"] = run_dir.name
        row["best_test_accuracy"] = result["best_test_accuracy"]
        row["final_test_accuracy"] = result["final_test_accuracy"]
        row["diverged"] = result.get("diverged")  # the epoch its training loss stopped being finite, or None
        row["metrics"] = metrics
        rows.append(row)
    order = list(arms)  # the spec's order: arms, then their grids
    rows.sort(key=lambda r: order.index(r["run"]) if r["run"] in order else len(order))
    return pd.DataFrame(rows)


def store_dir(folder: str | Path) -> Path:
    """The run store of a sweep folder (its runs/), or the folder itself when it is a run store."""
    folder = Path(folder)
    return folder / "runs" if (folder / "runs").is_dir() else folder


def sweeps_in(folder: str | Path) -> list[Path]:
    """The sweep folders (each with its sweep.json) directly inside `folder`, as results/ holds them."""
    return sorted(p for p in Path(folder).iterdir() if (p / "sweep.json").exists())


def _sweep_seeds(out) -> int | None:
    path = Path(out) / "sweep.json"
    return json.loads(path.read_text()).get("seeds") if path.exists() else None
