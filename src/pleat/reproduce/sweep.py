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
import threading
import time
from pathlib import Path

from pleat.reproduce import executors, packing
from pleat.reproduce.report import write_sweep_report
from pleat.reproduce.spec import Run, Spec, expand, load_spec, swept
from pleat.runs.store import RunBusy, training

# Seconds per 1,000 examples per epoch on the team's 2-core CPU using both cores (one two-thread run, or two
# one-thread runs at half the speed each), with the evaluation (about a third of a training step). Measured on the
# decisive sweeps of 2026-12-01, one run alone on the VM: fc2 plain 3.1 s an epoch of Fashion-MNIST, PLA (y = 4) on
# {2} 9.9-10.2 s, on {1,2} 18.8 s; fc4 plain with the per-weight probe 7.5-8 s (the probe's share is counted apart,
# in estimate_seconds). An earlier measurement, 1.8 s for fc2 plain, made every estimate about 1.6x too short.
# fc3 and the CNNs scaled by their arithmetic.
# cnn-bn: 17 s an epoch of 10,000 augmented images and the 10,000 test images on one core (2026-12-04), taken as
# 1.6x faster on two
_PLAIN_SECONDS = {"fc2": 0.048, "fc3": 0.072, "fc4": 0.096, "cnn-cifar10": 3.8, "cnn-stl10": 48.0, "cnn-bn": 0.8,
                  "cnn-bn-32": 2.8}  # fmt: skip
_TRAIN_SIZE = {"mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000, "stl10": 5000}
# what a run costs besides its epochs: loading and checking the data, the store, the first steps (the smoke Fig 3
# sweep, 14 runs of 1,000 examples for one epoch, took 39 s)
_RUN_OVERHEAD = 2.5
_TEST_SIZE = {"mnist": 10000, "fashion-mnist": 10000, "cifar10": 10000, "stl10": 8000}
_CALIBRATED_CORES = 2  # the estimates are for a run using both cores of the team's CPU


def downstream_share(config) -> float:
    """The share of a forward's multiply-adds done at and after the first smoothed layer: what runs again at every
    extra point (counted on the meta device, no data)."""
    import torch

    from pleat.core.select import select, weight_layers
    from pleat.runs.models import build

    with torch.device("meta"):
        model = build(config.model, config.activation)
        macs: dict[str, int] = {}

        def count(name):
            def hook(module, inputs, output):
                per_output = module.weight[0].numel()  # in_features, or in_channels x kernel
                macs[name] = output.numel() * per_output

            return hook

        hooks = [m.register_forward_hook(count(n)) for n, m in weight_layers(model)]
        model(torch.empty(1, *packing.INPUT_SHAPES[config.dataset]))
        for h in hooks:
            h.remove()
        chosen = {s.module_name for s in select(model, list(config.layers))}
    order = [n for n, _ in weight_layers(model)]
    first = min(order.index(n) for n in chosen)
    return sum(macs[n] for n in order[first:]) / sum(macs.values())


def _point_cost(run: Run) -> float:
    """What each extra point costs, in plain steps: the layers from the first smoothed one up run again, and each
    smoothed layer draws its noise (fitted to the fc2 measurements above); for the paper's CNNs the share of the
    arithmetic at and after the first smoothed layer (PLA on every conv of the CIFAR-10 CNN: 4.9x a plain step
    measured, 5x counted)."""
    c = run.config
    if c.model.startswith("cnn-bn"):  # measured with y = 4 (one core, 20 steps): every conv 4x plain, the norms 3x
        return 0.75 if 1 in c.layers else 0.5 if "norm" in c.layers else 0.1
    if not c.model.startswith("fc"):
        return downstream_share(c)
    depth = int(c.model[2:]) + 1  # hidden layers and the output layer
    indices = [x for x in c.layers if isinstance(x, int)] or [1]
    return 0.175 * (depth - min(indices) + 1) + 0.3 * len(c.layers) + 0.25 * (len(c.layers) - 1)


def estimate_seconds(run: Run) -> float:
    """A rough training time of one run on the team's 2-core CPU (for --dry-run and the first ETA)."""
    c = run.config
    n = c.train_subset or _TRAIN_SIZE[c.dataset]
    test = c.test_subset or _TEST_SIZE[c.dataset]
    factor = {"none": 1.0, "sam": 2.0, "noise": 1.3}.get(c.kind)
    if factor is None:
        factor = 1 + _point_cost(run) * c.samples
    if c.probe_estimator == "weight":  # fc4 on MNIST: 7.5-8 s an epoch measured with it; 6.1 s by the plain rate
        factor *= 1.25
    return _RUN_OVERHEAD + c.epochs * (n * factor + test / 3) / 1000 * _PLAIN_SECONDS[c.model]


def seconds_left(run: Run) -> float:
    """`estimate_seconds` for the epochs a run has still to train: a run resumes from its last checkpoint."""
    c = run.config
    trained = _epoch(Path(c.out_dir) / c.key(), c.epochs)
    return estimate_seconds(run) * (c.epochs - trained) / c.epochs


_UNUSED = {"none": {"layers", "radius", "samples", "sharpness"}, "sam": {"samples", "sharpness"}}


def _describe(run: Run, keys: list[str]) -> str:
    skip = {"kind"} | _UNUSED.get(run.config.kind, set())
    parts = [run.arm] + [f"{k}={_value(getattr(run.config, k))}" for k in keys if k not in skip]
    return " ".join(parts) + f" seed={run.config.seed}"


def _value(v) -> str:
    return "[" + ",".join(map(str, v)) + "]" if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _epoch(folder: Path, epochs: int) -> int:
    """The epochs a run folder holds: all when finished, else what its state.json names (0 before the first)."""
    if (folder / "result.json").exists():
        return epochs
    try:
        return int(json.loads((folder / "state.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):  # no checkpoint yet (a Ray run trains elsewhere)
        return 0


class Progress:
    """Runs done, running and left, with an ETA: a bar on a terminal, one line per finished run otherwise.

    `watch` lists each run to train as (what, its folder, its epochs, its estimated seconds). Every `every`
    seconds (10 on a terminal, 5 minutes in a log) a thread reads the epoch each has checkpointed and says which are
    training and how far; the ETA then comes from the work done so far (each run's epochs weighted by its estimate),
    not from counting runs, which is far off while one long run trains. Ray's runs train in the workers' folders:
    they show no epochs and the ETA counts runs.
    """

    def __init__(self, total: int, workers: int, estimate: float, stream=None, watch=(), every: float | None = None):
        self.total, self.workers, self.estimate = total, workers, estimate
        self.stream = stream or sys.stderr
        self.done = self.failed = 0
        self.started = time.time()
        self.bar = None
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="run", file=self.stream, dynamic_ncols=True)
        # (what, folder, epochs, seconds, the epoch it started from): one list, replaced whole, read by the thread
        self.watch = [(w, Path(f), n, sec, _epoch(Path(f), n)) for w, f, n, sec in watch]
        self._stop = threading.Event()
        self._beat = None
        every = every if every is not None else 10.0 if self.bar is not None else 300.0
        if self.watch and every > 0:
            self._beat = threading.Thread(target=self._heartbeat, args=(every,), daemon=True)
            self._beat.start()

    def _work(self) -> tuple[float, float, list[str]]:
        """Estimated seconds of training done since the start and left, and the runs part-way through."""
        done = left = 0.0
        training = []
        for what, folder, epochs, seconds, first in self.watch:
            now = _epoch(folder, epochs)
            done += seconds * (now - first) / epochs
            left += seconds * (epochs - now) / epochs
            if 0 < now < epochs:
                training.append(f"{what} at epoch {now}/{epochs}")
        return done, left, training

    def eta(self) -> float:
        if self.watch:
            done, left, _ = self._work()
            if done > 0:
                return (time.time() - self.started) * left / done
        left_runs = self.total - self.done
        if not self.done:
            return self.estimate
        return (time.time() - self.started) / self.done * left_runs

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            _, _, training = self._work()
            if not training:
                continue
            status = f"{'; '.join(training)}; ETA {_duration(self.eta())}"
            if self.bar is not None:
                self.bar.set_postfix_str(status)
            else:
                print(f"  training {status}", file=self.stream, flush=True)

    def finished(self, what: str, result: dict | None, error: str | None) -> None:
        self.failed += error is not None
        if error or result is None:
            line = f"FAILED {what}: {error}"
        else:
            line = f"{what}: best {result['best_test_accuracy']:.4f} final {result['final_test_accuracy']:.4f}"
            if "diverged" in result:
                line += f" (diverged: training loss not finite at epoch {result['diverged']})"
        self._say(what, line, trained=not error)

    def left_to_another(self, what: str) -> None:
        """A run that another process took between this sweep's start and the run's turn."""
        self._say(what, f"{what}: another process is training it; left to that one", trained=False)

    def _say(self, what: str, line: str, trained: bool) -> None:
        self.done += 1
        if not trained:  # epochs this process never trains leave the ETA
            self.watch = [w for w in self.watch if w[0] != what]
        running = min(self.workers, self.total - self.done)
        left = self.total - self.done - running
        status = f"running {running}, left {left}, ETA {_duration(self.eta())}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.set_postfix_str(status)
            self.bar.update(1)
        else:
            print(f"[{self.done}/{self.total}] {line}; {status}", file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.bar is not None:
            self.bar.close()


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
    out = Path(out or Path("results") / f"{spec.name}-{budget}")
    runs = expand(spec, budget, seeds, out_dir=str(out / "runs"), data_dir=data_dir, device=device, progress=False)
    taken = reusable(spec, budget, runs, out)
    if taken:
        if not dry_run:
            _import(runs, taken)
        verb = "would take" if dry_run else "took"
        print(f"{verb} {len(taken)} finished runs from the sweeps {', '.join(spec.reuse)}", file=stream)
    todo = [r for r in runs if r.config.key() not in taken and not (_folder(r) / "result.json").exists()]
    # another `pleat reproduce` of this sweep (a second terminal, another cluster job) trains these: leave them to it
    elsewhere = [r for r in todo if training(_folder(r))]
    todo = [r for r in todo if r not in elsewhere]
    regimes = list(dict.fromkeys(r.regime for r in runs))
    # regime by regime, seed by seed, cheapest first: a sweep cut short leaves complete paired sets
    todo.sort(key=lambda r: (regimes.index(r.regime), r.config.seed, estimate_seconds(r)))
    keys = swept(runs)
    parallel = workers if executor == "local" else max(1, int(executors.cores() // cpus_per_task))
    estimate = sum(seconds_left(r) for r in todo)  # the workers share the machine's cores
    configs = [r.config for r in todo]
    if vectorise:
        jobs = packing.pack(configs, packing.memory_budget(_device(device)) // parallel, parts=parallel)
    else:
        jobs = [[c] for c in configs]
    later: list[Run] = []
    if hours is not None:
        threads = max(1, executors.cores() // workers) if executor == "local" else max(1, int(cpus_per_task))
        jobs, later = _in_time(jobs, todo, parallel, hours, worker_slowdown(threads))
        todo = [r for r in todo if r not in later]
        estimate = sum(seconds_left(r) for r in todo)
    grouped = f", in {len(jobs)} vectorised groups" if vectorise and len(jobs) < len(todo) else ""
    finished = len(runs) - len(todo) - len(later) - len(elsewhere)
    print(
        f"{spec.name} at budget {budget}: {len(runs)} runs, {finished} finished, {len(todo)} to train"
        f"{grouped} (about {_duration(estimate)} on a 2-core CPU); results in {out}",
        file=stream,
    )
    if elsewhere:
        print(f"being trained by another process, left to it: {len(elsewhere)} runs", file=stream)
    if later:
        print(
            f"left for a later call, to finish within {hours:g} h: {len(later)} runs"
            f" (about {_duration(sum(seconds_left(r) for r in later))})",
            file=stream,
        )
    if dry_run:
        _print_plan(runs, todo, later, elsewhere, taken, keys, stream)
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
        failed, diverged = _follow(stream_of_runs, todo, keys, parallel, estimate)
    report = write_sweep_report(out)
    return {"runs": len(runs), "trained": len(todo), "failed": failed, "diverged": diverged, **report}


def _print_plan(
    runs: list[Run], todo: list[Run], later: list[Run], elsewhere: list[Run], taken: dict, keys: list[str], stream
) -> None:
    """--dry-run: each run's state (taken from another sweep, finished, training in another process, at epoch k/n,
    todo, later: beyond --hours) and its time left."""
    for r in runs:
        if r in elsewhere:
            state, left = "training", seconds_left(r)
        elif r not in todo and r not in later:
            state, left = "taken" if r.config.key() in taken else "finished", 0.0
        else:
            trained = _epoch(_folder(r), r.config.epochs)
            state = "later" if r in later else f"at {trained}/{r.config.epochs}" if trained else "todo"
            left = seconds_left(r)
        print(f"  {state:8} {_describe(r, keys)}  ~{_duration(left)}", file=stream)


def worker_slowdown(threads: int) -> float:
    """How much longer than its estimate a run takes on a worker of `threads` cores: twice on one core (the
    estimate is for two), never less than the estimate on more (small nets do not use many threads well)."""
    return _CALIBRATED_CORES / min(_CALIBRATED_CORES, threads)


def _in_time(
    jobs: list[list], todo: list[Run], parallel: int, hours: float, slowdown: float
) -> tuple[list[list], list[Run]]:
    """The jobs that `within` keeps for `hours` on `parallel` workers, each `slowdown` times slower than the
    estimate, and the runs of the others."""
    by_key = {r.config.key(): r for r in todo}
    durations = [sum(seconds_left(by_key[c.key()]) for c in job) * slowdown for job in jobs]
    keep = within(durations, parallel, hours * 3600)
    later = [by_key[c.key()] for job, k in zip(jobs, keep) if not k for c in job]
    return [job for job, k in zip(jobs, keep) if k], later


def within(durations: list[float], workers: int, limit: float) -> list[bool]:
    """Which jobs finish within `limit` seconds, by their estimated `durations`, when `workers` slots take them in
    order, each as soon as one frees up (what a process pool does). A job that would end past the limit is not
    started, and a shorter one after it may still fit: under a wall-clock limit (a cluster's, a session's) every
    run that starts also finishes."""
    free = [0.0] * workers
    keep = []
    for d in durations:
        slot = min(range(workers), key=free.__getitem__)
        keep.append(free[slot] + d <= limit)
        if keep[-1]:
            free[slot] += d
    return keep


def _follow(stream_of_runs, todo: list[Run], keys: list[str], workers: int, estimate: float):
    """Report each run the executor finishes; returns the failed (key, error) and diverged (run, epoch) ones."""
    by_key = {r.config.key(): r for r in todo}
    failed: list[tuple[str, str]] = []
    diverged: list[tuple[str, int]] = []
    watch = [(_describe(r, keys), _folder(r), r.config.epochs, estimate_seconds(r)) for r in todo]
    progress = Progress(len(todo), workers, estimate, watch=watch)
    try:
        for config, result, error in stream_of_runs:
            what = _describe(by_key[config.key()], keys)
            if error and _taken_meanwhile(by_key[config.key()], error):
                progress.left_to_another(what)
                continue
            progress.finished(what, result, error)
            if error:
                failed.append((config.key(), error))
            elif result is not None and "diverged" in result:
                diverged.append((what, result["diverged"]))
    finally:
        progress.close()
    return failed, diverged


def _folder(run: Run) -> Path:
    return Path(run.config.out_dir) / run.config.key()


def _taken_meanwhile(run: Run, error: str) -> bool:
    """Whether a run failed only because another process of the sweep took it after this one listed it."""
    folder = _folder(run)
    return error.startswith(f"{RunBusy.__name__}:") and (training(folder) or (folder / "result.json").exists())


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


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def default_workers() -> int:
    """Local workers when --workers is not given: one per core, one torch thread each, the fastest in
    benchmarks/sweep.py (2-core CPU: 2 workers 0.85x the wall time of 1 worker with 2 threads; 4 workers 1.12x)."""
    return executors.cores()
