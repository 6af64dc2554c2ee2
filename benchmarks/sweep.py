"""Sweep speed: a Fig-3-shaped group trained one run at a time against vectorised; executors; the paper sweep.

    PLEAT_DATA=../shared/datasets python benchmarks/sweep.py                   # group: one by one vs vectorised
    PLEAT_DATA=../shared/datasets python benchmarks/sweep.py group --device cuda
    PLEAT_DATA=../shared/datasets python benchmarks/sweep.py kinds             # every run kind in one group
    python benchmarks/sweep.py step [--device cuda]       # one group step: 1 and 8 PLA runs, layers {2} and {1,2}
    PLEAT_DATA=../shared/datasets python benchmarks/sweep.py executors         # 1, 2, 4 local workers and Ray
    PLEAT_DATA=../shared/datasets python benchmarks/sweep.py paper --device cuda  # Fig 3 at paper budget, 1 seed
    python benchmarks/sweep.py compile [--device cuda]    # a group's step eager vs torch.compile (CUDA graphs)

group: the 25 runs of one seed of Figure 3 (fc2, Fashion-MNIST, PLA with y = 4 on {1}, {2}, {1,2} x 8 radii, and
plain), one epoch on a training subset, at batch 256 (the paper's) and 32. Both sides train the same runs into
fresh stores in this process, one after the other (evaluation and checkpoints included): the ratio is the time
one by one over the time vectorised (packed as `pleat reproduce` packs them: one group per layer subset).
kinds: one run of each kind (plain, PLA, PLEA on layer 2, SAM, noise on layer 2) of the paper's fc2, one epoch,
trained one by one and as one group; the ratio is one by one over the group.
step: the median time of one training step of a group (fc2, PLA y = 4, batch 256, random data) of 1 and 8 runs.
executors: wall time of a small sweep with 1, 2 and 4 local workers and with Ray, as a ratio to one worker.
paper: wall time of `pleat reproduce fig3 --budget paper --seeds 1` (25 runs x 120 epochs).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch

from pleat.reproduce.executors import cores, train_job
from pleat.reproduce.packing import memory_budget, pack
from pleat.reproduce.spec import SPECS, expand, load_spec
from pleat.reproduce.sweep import reproduce
from pleat.runs.config import Config

SHAPE = """
[budget.smoke]
epochs = {epochs}
lr = 0.006
train_subset = {train_subset}
seeds = 1
grid.radius = [0.01, 0.1]
"""


def fig3_group(out: str, device: str, batch_size: int, train_subset: int) -> list[Config]:
    """One seed of Figure 3 at the paper's protocol, one epoch on `train_subset` examples."""
    runs = expand(load_spec("fig3"), "paper", 1, out_dir=out, device=device, progress=False)
    changes = dict(epochs=1, batch_size=batch_size, train_subset=train_subset, test_subset=2000)
    return [Config.from_dict({**r.config.to_dict(), **changes}) for r in runs]


def _timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def group(args) -> None:
    print(
        f"Fig-3-shaped group (25 runs, 1 epoch), device {_device_name(args.device)}, {torch.get_num_threads()} threads"
    )
    print(f"{'batch':>5} {'examples':>8} {'groups':>6} {'one by one s':>12} {'vectorised s':>12} {'ratio':>6}")
    for batch_size, examples in ((256, args.train_subset), (32, args.train_subset // 4)):
        with tempfile.TemporaryDirectory() as tmp:
            warm = fig3_group(f"{tmp}/warm", args.device, batch_size, batch_size * 2)
            for job in pack(warm, memory_budget(args.device)):  # load the data, warm the allocator
                train_job(job)
            lone = fig3_group(f"{tmp}/lone", args.device, batch_size, examples)
            jobs = pack(fig3_group(f"{tmp}/group", args.device, batch_size, examples), memory_budget(args.device))
            one_by_one = _timed(lambda: [train_job([c]) for c in lone], args.device)
            vectorised = _timed(lambda: [train_job(job) for job in jobs], args.device)
        print(
            f"{batch_size:>5} {examples:>8} {len(jobs):>6} {one_by_one:>12.1f} {vectorised:>12.1f} "
            f"{one_by_one / vectorised:>5.2f}x"
        )


def kinds(args) -> None:
    base = dict(epochs=1, train_subset=args.train_subset, test_subset=2000, device=args.device, progress=False)
    runs = [
        dict(kind="none"),
        dict(kind="pla", layers=[2], radius=0.01),
        dict(kind="plea", layers=[2], radius=0.01),
        dict(kind="sam", radius=0.05),
        dict(kind="noise", layers=[2], radius=0.01),
    ]
    print(f"every kind in one group (fc2, 1 epoch, {args.train_subset} examples), device {_device_name(args.device)}")
    with tempfile.TemporaryDirectory() as tmp:

        def configs(name):
            return [Config.from_dict({**base, **r, "seed": i, "out_dir": f"{tmp}/{name}"}) for i, r in enumerate(runs)]

        train_job([Config.from_dict({**c.to_dict(), "train_subset": 512}) for c in configs("warm")])
        lone, grouped = configs("lone"), configs("group")
        one_by_one = _timed(lambda: [train_job([c]) for c in lone], args.device)
        together = _timed(lambda: train_job(grouped), args.device)
    print(f"one by one {one_by_one:.1f} s, one group {together:.1f} s: {one_by_one / together:.2f}x")


def step(args) -> None:
    import contextlib
    import statistics

    from pleat.runs.train import Group, member

    device = torch.device(args.device)
    print(f"one group step (fc2, PLA y = 4, batch 256), device {_device_name(args.device)}")
    for runs in (1, 8):
        for layers in ((2,), (1, 2)):
            configs = [Config(kind="pla", layers=layers, radius=0.01 * (i + 1), seed=i) for i in range(runs)]
            group = Group([member(c, device) for c in configs])
            x = torch.rand(runs, 256, 1, 28, 28, device=device)
            y = torch.randint(0, 10, (runs, 256), device=device)
            for _ in range(3):
                group.step(x, y, contextlib.nullcontext)
            six = [lambda: [group.step(x, y, contextlib.nullcontext) for _ in range(6)]] * 5
            times = [_timed(steps, args.device) / 6 for steps in six]
            print(f"{runs} runs, layers {set(layers)}: {statistics.median(times) * 1e3:.1f} ms a step")


def compile_(args) -> None:
    """The loss and gradient of a group (8 runs of fc2, PLA on layer 2, y = 4), eager against torch.compile (and,
    on CUDA, mode="reduce-overhead": CUDA graphs); median of 3 x 20 steps after a warm-up."""
    import torch.nn.functional as F

    from pleat.runs.models import build
    from pleat.runs.stacked import Stacked

    device = torch.device(args.device)
    torch.manual_seed(0)
    runs, points = 8, 5
    model = build("fc2")
    params = {n: torch.stack([p.detach()] * runs).to(device).requires_grad_() for n, p in model.named_parameters()}
    deltas = {"fc2.weight": (torch.rand(runs, points - 1, 784, 784, device=device) - 0.5) * 0.02}
    net = Stacked(model)

    def loss(params, x, y, deltas):
        out = net(params, x, deltas)
        k, q, b = out.shape[:3]
        targets = y.unsqueeze(1).expand(k, q, b).flatten()
        return F.cross_entropy(out.flatten(0, 2), targets, reduction="none").view(k, q, b).mean(2).mean(1).sum()

    modes = {"eager": loss, "compiled": torch.compile(loss)}
    if device.type == "cuda":
        modes["compiled, CUDA graphs"] = torch.compile(loss, mode="reduce-overhead")
    print(f"group loss + gradient, {runs} runs x {points} points, fc2, device {_device_name(args.device)}")
    for batch_size in (32, 256):
        x = torch.rand(runs, batch_size, 1, 28, 28, device=device)
        y = torch.randint(0, 10, (runs, batch_size), device=device)
        times = {}
        for name, fn in modes.items():

            def step(fn=fn):
                return torch.autograd.grad(fn(params, x, y, deltas), list(params.values()))

            for _ in range(3):
                step()
            times[name] = sorted(_timed(lambda: [step() for _ in range(20)], args.device) / 20 for _ in range(3))[1]
        base = times["eager"]
        print(f"batch {batch_size}: " + ", ".join(f"{k} {v * 1e3:.2f} ms ({base / v:.2f}x)" for k, v in times.items()))


def paper(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp) / "fig3-paper"
        seconds = _timed(
            lambda: reproduce("fig3", budget="paper", seeds=1, out=out, device=args.device, workers=1), args.device
        )
    print(f"fig3 at paper budget, 1 seed (25 runs x 120 epochs) on {_device_name(args.device)}: {seconds / 60:.1f} min")


def spec_file(folder: Path, epochs: int, train_subset: int) -> Path:
    """fig3 as shipped, its smoke budget replaced by the executor benchmark's shape."""
    text = (SPECS / "fig3.toml").read_text()
    head, _, rest = text.partition("[budget.smoke]")
    rest = rest[rest.index("[budget.quick]") :]
    path = folder / "fig3.toml"
    path.write_text(head + SHAPE.format(epochs=epochs, train_subset=train_subset).lstrip() + "\n" + rest)
    return path


def executors(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_file(Path(tmp), 1, args.train_subset)
        modes = [("local", int(w)) for w in args.workers.split(",")] + ([] if args.no_ray else [("ray", cores())])
        for executor, workers in modes:
            if executor == "ray":
                import ray

                ray.init(num_cpus=cores(), include_dashboard=False, log_to_driver=False)
            start = time.perf_counter()
            done = reproduce(
                spec,
                executor=executor,
                workers=workers,
                out=Path(tmp) / f"{executor}-{workers}",
                vectorise=not args.one_by_one,
                stream=io.StringIO(),
            )
            rows.append((executor, workers, done["trained"], time.perf_counter() - start))
            if executor == "ray":
                ray.shutdown()
    base = rows[0][3]
    print(f"fig3-shaped sweep (7 runs, 1 epoch), {cores()} cores, {'one by one' if args.one_by_one else 'vectorised'}")
    print(f"{'executor':<9} {'workers':>7} {'runs':>5} {'wall s':>8} {'vs 1 worker':>12}")
    for executor, workers, runs, seconds in rows:
        print(f"{executor:<9} {workers:>7} {runs:>5} {seconds:>8.1f} {seconds / base:>11.2f}x")


def _device_name(device: str) -> str:
    import platform

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({platform.processor() or 'cpu'})"


MODES = {"group": group, "kinds": kinds, "step": step, "executors": executors, "paper": paper, "compile": compile_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="group", choices=tuple(MODES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-subset", type=int, default=6000, help="group, executors: training examples")
    parser.add_argument("--workers", default="1,2,4", help="executors: local worker counts to time")
    parser.add_argument("--no-ray", action="store_true", help="executors: skip Ray")
    parser.add_argument("--one-by-one", action="store_true", help="executors: no vectorised groups")
    parser.add_argument("--out", help="paper: keep the sweep here (default: a temporary folder)")
    args = parser.parse_args()
    MODES[args.mode](args)


if __name__ == "__main__":
    main()
