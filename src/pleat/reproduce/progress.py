"""What a sweep says while it runs: each run in words, the plan of --dry-run, and the progress (a bar on a
terminal, one line per finished run in a log) with an ETA from the work done so far."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from pleat.reproduce.estimate import estimate_seconds, seconds_left
from pleat.reproduce.spec import Run
from pleat.runs.store import RunBusy, RunStore, trained_epochs, training

_UNUSED = {"none": {"layers", "radius", "samples", "sharpness"}, "sam": {"samples", "sharpness"}}


def describe(run: Run, keys: list[str]) -> str:
    skip = {"kind"} | _UNUSED.get(run.config.kind, set())
    parts = [run.arm] + [f"{k}={_value(getattr(run.config, k))}" for k in keys if k not in skip]
    return " ".join(parts) + f" seed={run.config.seed}"


def _value(v) -> str:
    return "[" + ",".join(map(str, v)) + "]" if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


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
        self.watch = [(w, Path(f), n, sec, trained_epochs(Path(f), n)) for w, f, n, sec in watch]
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
            now = trained_epochs(folder, epochs)
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
            status = f"{'; '.join(training)}; ETA {duration(self.eta())}"
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
        status = f"running {running}, left {left}, ETA {duration(self.eta())}"
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


def print_plan(
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
            trained = trained_epochs(RunStore(r.config).dir, r.config.epochs)
            state = "later" if r in later else f"at {trained}/{r.config.epochs}" if trained else "todo"
            left = seconds_left(r)
        print(f"  {state:8} {describe(r, keys)}  ~{duration(left)}", file=stream)


def follow(stream_of_runs, todo: list[Run], keys: list[str], workers: int, estimate: float):
    """Report each run the executor finishes; returns the failed (key, error) and diverged (run, epoch) ones."""
    by_key = {r.config.key(): r for r in todo}
    failed: list[tuple[str, str]] = []
    diverged: list[tuple[str, int]] = []
    watch = [(describe(r, keys), RunStore(r.config).dir, r.config.epochs, estimate_seconds(r.config)) for r in todo]
    progress = Progress(len(todo), workers, estimate, watch=watch)
    try:
        for config, result, error in stream_of_runs:
            what = describe(by_key[config.key()], keys)
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


def _taken_meanwhile(run: Run, error: str) -> bool:
    """Whether a run failed only because another process of the sweep took it after this one listed it."""
    folder = RunStore(run.config).dir
    return error.startswith(f"{RunBusy.__name__}:") and (training(folder) or (folder / "result.json").exists())
