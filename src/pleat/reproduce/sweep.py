"""Run a figure's sweep: expand its spec, skip what the store holds, train the rest, then draw and report.

<out>/sweep.json     which spec and budget, written first (`pleat report <out>` reads it)
<out>/spec.toml      the spec as it was
<out>/runs/          the run store (see pleat.runs.store)
<out>/<name>.png     the figure;  <out>/report.html: the report
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pleat.reproduce import executors, packing
from pleat.reproduce.estimate import estimate_seconds, in_time, seconds_left, worker_slowdown
from pleat.reproduce.progress import duration, follow, print_plan
from pleat.reproduce.report import write_sweep_report
from pleat.reproduce.spec import Run, Spec, expand, load_spec, swept
from pleat.runs.lifecycle import resolve_device
from pleat.runs.store import RunStore, training


def reproduce(
    figure: str | Path,
    budget: str = "smoke",
    seeds: int | None = None,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    out: str | Path | None = None,
    data_dir: str = "",
    device: str = "auto",
    dry_run: bool = False,
    cpus_per_task: float = 1,
    gpus_per_task: float = 0,
    vectorise: bool = True,
    hours: float | None = None,
    stream=None,
) -> dict:
    """Reproduce one figure; returns {"runs", "trained", "failed", "figure", "report", "verdicts"}.

    With `vectorise`, compatible runs are packed into groups trained as one program each (see
    `pleat.reproduce.packing`); without, every run is trained alone. Every check (figure, budget, executor,
    workers, Ray address, spec) happens before any run starts.
    """
    stream = stream or sys.stdout
    spec = load_spec(figure)
    if executor not in executors.EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: choose one of {', '.join(executors.EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if hours is not None and not hours > 0:
        raise ValueError(f"--hours must be > 0, got {hours}")
    if executor == "ray":
        executors.check_address(address)
    workers = workers or default_workers()
    out = Path(out or Path("pleat-results") / f"{spec.name}-{budget}")  # not beside a checkout's results/
    runs = expand(spec, budget, seeds, out_dir=str(out / "runs"), data_dir=data_dir, device=device, progress=False)
    taken = reusable(spec, budget, runs, out)
    if taken:
        if not dry_run:
            _import(runs, taken)
        verb = "would take" if dry_run else "took"
        print(f"{verb} {len(taken)} finished runs from the sweeps {', '.join(spec.reuse)}", file=stream)
    todo = [r for r in runs if r.config.key() not in taken and not (RunStore(r.config).dir / "result.json").exists()]
    # another `pleat reproduce` of this sweep (a second terminal, another cluster job) trains these: leave them to it
    elsewhere = [r for r in todo if training(RunStore(r.config).dir)]
    todo = [r for r in todo if r not in elsewhere]
    regimes = list(dict.fromkeys(r.regime for r in runs))
    # regime by regime, seed by seed, cheapest first: a sweep cut short leaves complete paired sets
    todo.sort(key=lambda r: (regimes.index(r.regime), r.config.seed, estimate_seconds(r.config)))
    keys = swept(runs)
    parallel = workers if executor == "local" else max(1, int(executors.cores() // cpus_per_task))
    estimate = sum(seconds_left(r) for r in todo)  # the workers share the machine's cores
    configs = [r.config for r in todo]
    if vectorise:
        jobs = packing.pack(
            configs,
            packing.memory_budget(resolve_device("auto").type if device == "auto" else device) // parallel,
            parts=parallel,
        )
    else:
        jobs = [[c] for c in configs]
    later: list[Run] = []
    if hours is not None:
        threads = max(1, executors.cores() // workers) if executor == "local" else max(1, int(cpus_per_task))
        jobs, later = in_time(jobs, todo, parallel, hours, worker_slowdown(threads))
        todo = [r for r in todo if r not in later]
        estimate = sum(seconds_left(r) for r in todo)
    grouped = f", in {len(jobs)} vectorised groups" if vectorise and len(jobs) < len(todo) else ""
    finished = len(runs) - len(todo) - len(later) - len(elsewhere)
    print(
        f"{spec.name} at budget {budget}: {len(runs)} runs, {finished} finished, {len(todo)} to train"
        f"{grouped} (about {duration(estimate)} on a 2-core CPU); results in {out}",
        file=stream,
    )
    if elsewhere:
        print(f"being trained by another process, left to it: {len(elsewhere)} runs", file=stream)
    if later:
        print(
            f"left for a later call, to finish within {hours:g} h: {len(later)} runs"
            f" (about {duration(sum(seconds_left(r) for r in later))})",
            file=stream,
        )
    if dry_run:
        print_plan(runs, todo, later, elsewhere, taken, keys, stream)
        return {
            "runs": len(runs),
            "trained": 0,
            "failed": [],
            "diverged": [],
            "figure": None,
            "report": None,
            "verdicts": [],
        }

    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"spec": spec.name, "budget": budget, "seeds": seeds}, indent=2))
    assert spec.source is not None  # load_spec records it
    shutil.copyfile(spec.source, out / "spec.toml")
    failed, diverged = [], []
    if todo:
        if executor == "local":
            stream_of_runs = executors.local(jobs, workers)
        else:
            stream_of_runs = executors.ray(jobs, address, cpus=cpus_per_task, gpus=gpus_per_task)
        failed, diverged = follow(stream_of_runs, todo, keys, parallel, estimate)
    report = write_sweep_report(out)
    return {"runs": len(runs), "trained": len(todo), "failed": failed, "diverged": diverged, **report}


def reusable(spec: Spec, budget: str, runs: list[Run], out: Path) -> dict[str, Path]:
    """The runs that the sweeps `spec.reuse` (beside `out`, at the same budget) hold finished and this sweep lacks,
    by run key: a run is its config, so the same config trained for another figure is the same run."""
    found: dict[str, Path] = {}
    for name in spec.reuse:
        source = out.parent / f"{name}-{budget}" / "runs"
        for run in runs:
            key = run.config.key()
            theirs, mine = source / key, Path(run.config.out_dir) / key
            if key not in found and not (mine / "result.json").exists() and (theirs / "result.json").exists():
                found[key] = theirs
    return found


def take_finished(spec: Spec, budget: str, runs: list[Run], out: Path) -> int:
    """Import the `reusable` runs into this sweep's store. Returns how many were taken."""
    found = reusable(spec, budget, runs, out)
    _import(runs, found)
    return len(found)


def _import(runs: list[Run], found: dict[str, Path]) -> None:
    """Copy each run of `found` (run key -> its finished folder elsewhere) into the store of `runs`."""
    from pleat.runs.store import import_run, read_metrics

    for run in runs:
        theirs = found.get(run.config.key())
        if theirs is None:
            continue
        env = json.loads((theirs / "environment.json").read_text())
        result = json.loads((theirs / "result.json").read_text())
        result.pop("run", None)
        import_run(run.config, env, read_metrics(theirs / "metrics.jsonl"), result)


def default_workers() -> int:
    """Local workers when --workers is not given: one per core, one torch thread each, the fastest in
    benchmarks/sweep.py (2-core CPU: 2 workers 0.85x the wall time of 1 worker with 2 threads; 4 workers 1.12x)."""
    return executors.cores()
