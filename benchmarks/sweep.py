"""Wall time of a Fig-3-shaped sweep with 1, 2 and 4 local workers and with the Ray executor, on this machine.

    PLEAT_DATA=../shared/datasets python benchmarks/sweep.py                  # 7 runs on 6,000 examples, 1 epoch
    PLEAT_DATA=../shared/datasets python benchmarks/sweep.py --budget quick   # the real quick Fig 3 sweep (hours)

Each mode trains the same runs into a fresh store; the table gives each wall time and its ratio to one worker.
The local pool divides the cores between its workers; Ray runs one task per core (one torch thread each).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from pleat.reproduce.executors import cores
from pleat.reproduce.spec import SPECS
from pleat.reproduce.sweep import reproduce

SHAPE = """
[budget.smoke]
epochs = {epochs}
lr = 0.006
train_subset = {train_subset}
seeds = 1
grid.radius = [0.01, 0.1]
"""


def spec_file(folder: Path, budget: str, epochs: int, train_subset: int) -> Path:
    """fig3 as shipped, its smoke budget replaced by the benchmark's shape when budget is 'smoke'."""
    text = (SPECS / "fig3.toml").read_text()
    if budget == "smoke":
        head, _, rest = text.partition("[budget.smoke]")
        rest = rest[rest.index("[budget.quick]") :]
        text = head + SHAPE.format(epochs=epochs, train_subset=train_subset).lstrip() + "\n" + rest
    path = folder / "fig3.toml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="smoke", help="smoke: the small shape above; quick: the real sweep")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=6000)
    parser.add_argument("--workers", default="1,2,4", help="local worker counts to time")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_file(Path(tmp), args.budget, args.epochs, args.train_subset)
        modes = [("local", int(w)) for w in args.workers.split(",")] + ([] if args.no_ray else [("ray", cores())])
        for executor, workers in modes:
            if executor == "ray":
                import ray

                ray.init(num_cpus=cores(), include_dashboard=False, log_to_driver=False)
            start = time.perf_counter()
            done = reproduce(
                spec,
                budget=args.budget,
                executor=executor,
                workers=workers,
                out=Path(tmp) / f"{executor}-{workers}",
                stream=io.StringIO(),
            )
            rows.append((executor, workers, done["trained"], time.perf_counter() - start))
            if executor == "ray":
                ray.shutdown()
    base = rows[0][3]
    print(f"fig3 sweep, budget {args.budget}, {cores()} cores")
    print(f"{'executor':<9} {'workers':>7} {'runs':>5} {'wall s':>8} {'vs 1 worker':>12}")
    for executor, workers, runs, seconds in rows:
        print(f"{executor:<9} {workers:>7} {runs:>5} {seconds:>8.1f} {seconds / base:>11.2f}x")


if __name__ == "__main__":
    main()
