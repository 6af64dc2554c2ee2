"""The `pleat` command line: `pleat train`, `pleat reproduce`, `pleat report`, `pleat runs`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

from pleat.reproduce.spec import available
from pleat.runs.config import NOT_HASHED, Config, help_texts, load, parse_set, shown


class _Formatter(argparse.HelpFormatter):
    """Wraps help lines at spaces only: names such as label-noise stay whole."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


def _train(args) -> int:
    from pleat.runs.config import effective_kind
    from pleat.runs.store import RunStore
    from pleat.runs.train import train

    overrides = parse_set(args.set or [])
    for f in dataclasses.fields(Config):
        value = getattr(args, f.name, None)
        if value is not None:
            if f.name in overrides:
                raise ValueError(f"config key {f.name!r} is given twice, by --set and by --{f.name.replace('_', '-')}")
            overrides.update(parse_set([f"{f.name}={value}"]))
    config = load(args.config, overrides)  # every check happens here, before any work
    if args.config is None and set(overrides) <= set(NOT_HASHED):  # the default run: say what it starts, how long
        from pleat.reproduce.estimate import estimate_seconds
        from pleat.reproduce.progress import duration

        print(
            f"no config file: the paper's Figure 3 protocol, {config.kind.upper()} on layers {list(config.layers)} of "
            f"{config.model} on {config.dataset} for {config.epochs} epochs, about "
            f"{duration(estimate_seconds(config))} on a 2-core CPU. For a first look, `pleat train "
            "configs/quickstart.toml` takes seconds; Ctrl-C stops this run and the same command resumes it."
        )
    if config.kind in ("pla", "plea") and effective_kind(config) == "none":
        raise ValueError(
            f"kind {config.kind!r} with samples = {config.samples} and radius = {shown(config.radius)} smooths "
            "nothing: it would train plain SGD under another name; use --kind none for plain SGD, or samples > 0 and "
            "radius > 0"
        )
    store = RunStore(config)
    if store.finished:
        print(f"already finished: {store.dir} (delete it to train again)")
    else:
        epoch, damage = store.intact_epoch()  # a run none of whose checkpoints verifies stops here (CorruptRun)
        if epoch is not None:
            print(f"resuming {store.dir} from epoch {epoch} of {config.epochs}" + (f" ({damage})" if damage else ""))
        elif damage:
            print(damage)

    def interrupted() -> str:
        if store.checkpoint_epoch() is None:
            return f"run {store.dir} had no checkpoint yet; run the same command again to start it over"
        return (
            f"run {store.dir} stops at its checkpoint of epoch {store.checkpoint_epoch()}; run the same command "
            "again to resume it"
        )

    args.interrupted = interrupted
    with warnings.catch_warnings():  # a damaged checkpoint was named above, with the epoch the run resumes from
        said = ".*; (resuming from checkpoint-|training it again from epoch 0)"
        warnings.filterwarnings("ignore", message=said, category=UserWarning)
        result = train(config)
    print(
        f"best test accuracy {result['best_test_accuracy']:.4f} (epoch {result['best_epoch']}), "
        f"final {result['final_test_accuracy']:.4f} after {result['epochs']} epochs"
    )
    print(f"results in {store.dir}: metrics.jsonl, result.json, config.json, environment.json")
    return 0


def _runs(args) -> int:
    from pleat.reproduce.results import sweeps_in
    from pleat.runs.store import runs

    if not os.path.isdir(args.dir):
        raise FileNotFoundError(
            f"{args.dir} is not a folder: give a run store (the out_dir of pleat train) or a sweep folder"
        )
    table = runs(args.dir)
    if table.empty:
        sweeps = sweeps_in(args.dir)
        hint = f"; it holds the sweeps {', '.join(p.name for p in sweeps)}: pleat runs {sweeps[0]}" if sweeps else ""
        print(f"no runs in {args.dir}{hint}")
        return 0
    columns = [
        "run",
        "dataset",
        "model",
        "kind",
        "layers",
        "radius",
        "seed",
        "status",
        "epochs_done",
        "epochs",
        "best_test_accuracy",
        "final_test_accuracy",
    ]
    shown = table[[c for c in columns if c in table]].astype(object)
    if "kind" in table:  # plain SGD smooths nothing: its layers and radius are not settings of the run
        plain = table["kind"] == "none"
        shown.loc[plain, [c for c in ("layers", "radius") if c in shown]] = "-"
    print(shown.to_string(index=False))
    if "error" in table:
        for error in table["error"].dropna():
            print(error, file=sys.stderr)
    return 0


def _reproduce(args) -> int:
    from pleat.reproduce import reproduce

    args.interrupted = "sweep interrupted: finished runs are kept; run the same command again to train the rest"
    done = reproduce(
        args.figure,
        budget=args.budget,
        seeds=args.seeds,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        out=args.out,
        data_dir=args.data_dir or "",
        device=args.device,
        dry_run=args.dry_run,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        vectorise=not args.one_by_one,
        hours=args.hours,
    )
    if args.dry_run:
        return 0
    for key, error in done["failed"]:
        print(f"run {key} failed: {error}", file=sys.stderr)
    for what, epoch in done["diverged"]:
        print(f"run {what} diverged: its training loss was not finite at epoch {epoch}", file=sys.stderr)
    for v in done["verdicts"]:
        print(f"  {v.verdict:>26}  {v.text}")
    print(f"figure {done['figure']}, report {done['report']}")
    return 1 if done["failed"] else 0


def _profile(args) -> int:
    """Profile a run's latest checkpoint (a run folder) or a config's initial weights (a TOML file, or none)."""
    import json

    import torch.nn.functional as F

    from pleat.probes.plots import plot_profile
    from pleat.probes.profile import profile
    from pleat.runs import lifecycle as life
    from pleat.runs.store import RunStore

    target = Path(args.target) if args.target else None
    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    if target is not None and not target.exists():
        raise FileNotFoundError(f"{target} does not exist: give a run folder (RUNS/<key>) or a TOML config")
    if target is not None and target.is_dir():
        if not (target / "config.json").exists():
            raise FileNotFoundError(f"{target} holds no config.json: give a run folder (RUNS/<key>) or a TOML file")
        values = json.loads((target / "config.json").read_text())
        config = Config.from_dict({**values, **overrides, "out_dir": str(target.resolve().parent)})
    else:
        config = load(target, overrides)
    device = life.resolve_device(config.device)
    model = life.init_model(config, device)
    what = "its initial weights"
    if target is not None and target.is_dir():
        state = RunStore(config).load_checkpoint(device)
        if state is None:
            raise FileNotFoundError(f"run {target} has no checkpoint yet: train it first (pleat train)")
        model.load_state_dict(state["model"])
        what = f"its checkpoint of epoch {state['epoch']}"
    data = life.load_data(config, device)
    order = life.epoch_order(config, len(data.x_train), 0)[: args.batches * config.batch_size].to(device)
    batches = [(data.x_train[i], data.y_train[i]) for i in order.split(config.batch_size)]
    print(f"{config.model} on {config.dataset}, {what}, {len(batches)} batches of {config.batch_size}")
    result = profile(model, F.cross_entropy, batches, rise=args.rise)
    print(result)
    out = args.out or str((target if target is not None and target.is_dir() else Path(".")) / "profile.png")
    plot_profile(result, out, title=f"{config.model} on {config.dataset}, {what}")
    print(f"figure {out}")
    return 0


def _report(args) -> int:
    from pleat.reproduce.report import write_markdown, write_report

    if args.markdown:
        written = write_markdown(args.dirs, args.markdown)  # pages meant to be rewritten: git diff shows changes
        print(f"results pages {args.markdown}: {len(written)} pages")
        return 0
    first = Path(args.dirs[0])
    alone = len(args.dirs) == 1 and ((first / "sweep.json").exists() or _is_store(first))
    out = args.out or str((first if alone else Path("pleat-report")) / "report.html")
    path, verdicts, figures = write_report(args.dirs, out)
    for v in verdicts:
        print(f"  {v.verdict:>26}  {v.text}")
    _say_rewritten([path, *figures])
    print(f"report {path}" + (f" (figures beside it: {', '.join(f.name for f in figures)})" if figures else ""))
    return 0


def _torchvision_mismatch() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        vision = version("torchvision")
    except PackageNotFoundError:
        vision = "?"
    return (
        f"torchvision {vision} was not built for torch {torch.__version__}: install the pair from one index, e.g. "
        "pip install --force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    )


def _is_store(folder: Path) -> bool:
    """A run store: run folders (config.json inside), not a folder of sweeps."""
    return any((p / "config.json").exists() for p in folder.glob("*")) if folder.is_dir() else False


def _say_rewritten(paths) -> None:
    """Name the files just written that git tracks: a report never changes committed results without a word."""
    import subprocess

    for path in map(Path, paths):
        try:
            tracked = (
                subprocess.run(
                    ["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent, capture_output=True
                ).returncode
                == 0
            )
        except OSError:  # no git
            return
        if tracked:
            print(f"rewrote {path}, which git tracks: `git diff {path}` shows what changed, `git checkout` undoes it")


def main(argv: list[str] | None = None) -> int:
    from pleat import __version__

    parser = argparse.ArgumentParser(
        prog="pleat", description="Partial local entropy: train and probe networks.", formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"pleat {__version__} (distribution torch-pleat)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one training run (no config file: the paper's Figure 3 protocol)")
    train.add_argument("config", nargs="?", help="a TOML file of config keys")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    meanings = help_texts()
    for f in dataclasses.fields(Config):
        train.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            metavar="VALUE",
            help=f"{meanings.get(f.name, '')} (default {shown(f.default)})".replace("%", "%%"),
        )
    train.set_defaults(run=_train)
    rep = sub.add_parser(
        "reproduce", help="a figure of the paper: its sweep, figure and report", formatter_class=_Formatter
    )
    rep.add_argument("figure", help=f"{', '.join(available())}, or a spec file")
    rep.add_argument(
        "--budget",
        default="smoke",
        help="smoke (seconds, mechanics) | quick (~1 h on 2 cores) | decisive (the paper's protocol, fixed settings)"
        " | paper",
    )
    rep.add_argument("--seeds", type=int, help="seeds per setting (default: the budget's, 3 for quick and paper)")
    rep.add_argument("--executor", default="local", help="local (a pool of processes) | ray (a Ray cluster)")
    rep.add_argument("--workers", type=int, help="local processes; the cores are divided between them")
    rep.add_argument("--address", help="Ray cluster address (host:port or ray://host:port); none: a local Ray")
    rep.add_argument("--cpus-per-task", type=float, default=1, help="Ray: CPUs per run (default 1)")
    rep.add_argument("--gpus-per-task", type=float, default=0, help="Ray: GPUs per run, fractions allowed")
    rep.add_argument("--out", help="the sweep folder (default pleat-results/FIGURE-BUDGET in this folder)")
    rep.add_argument("--data-dir", help="the data root (default $PLEAT_DATA, else ~/.cache/pleat/data)")
    rep.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    rep.add_argument("--dry-run", action="store_true", help="list the runs and an estimated time; train nothing")
    rep.add_argument(
        "--one-by-one",
        action="store_true",
        help="train every run alone instead of packing compatible runs into vectorised groups",
    )
    rep.add_argument(
        "--hours",
        type=float,
        help="start only the runs that --dry-run's estimate says finish within this many hours (a job's wall-clock"
        " limit); the rest wait for the next call",
    )
    rep.set_defaults(run=_reproduce)
    report = sub.add_parser("report", help="one self-contained HTML report of sweep folders or run stores")
    report.add_argument(
        "dirs", nargs="+", help="sweep folders (from pleat reproduce; results/ for all of them) or run stores"
    )
    report.add_argument(
        "--out",
        help="the HTML file to write, figures beside it (default: report.html in the one sweep folder or run store"
        " given, else pleat-report/report.html)",
    )
    report.add_argument(
        "--markdown",
        metavar="DIR",
        help="write the documentation's results pages instead: DIR/index.md, one page and one figure per sweep",
    )
    report.set_defaults(run=_report)
    prof = sub.add_parser("profile", help="per layer: temperature, flatness, Hessian trace, scoped radius; suggestions")
    prof.add_argument(
        "target", nargs="?", help="a run folder (its latest checkpoint) or a TOML config (initial weights)"
    )
    prof.add_argument("--batches", type=int, default=4, help="training batches to profile on (default 4)")
    prof.add_argument("--rise", type=float, default=0.005, help="target loss rise of the scoped radii (default 0.005)")
    prof.add_argument("--data-dir", help="the data root (default: the run's, else $PLEAT_DATA)")
    prof.add_argument("--out", help="the figure (default: profile.png in the run folder, or here)")
    prof.set_defaults(run=_profile)
    runs = sub.add_parser(
        "runs", help="what ran in a run store or a sweep folder: status, epochs, best and final accuracy"
    )
    runs.add_argument("dir", nargs="?", default="runs", help="a run store or a sweep folder (default runs)")
    runs.set_defaults(run=_runs)
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a bare `pleat`: the commands and what each does, not only argparse's one-line complaint
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    from pleat.runs.store import CorruptRun, RunBusy

    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, CorruptRun, RunBusy) as e:
        print(f"pleat: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # a bare install: the commands need the train extra (torchvision, scipy, ...)
        if e.name is None or e.name.split(".")[0] in ("pleat", "torch"):
            raise
        print(
            f"pleat: error: `pleat {args.command}` needs {e.name}, which the train extra installs: "
            "pip install 'torch-pleat[train]'",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as e:  # torchvision built for another torch fails at import with an operator error
        if "torchvision::" not in str(e):
            raise
        print(f"pleat: error: {_torchvision_mismatch()} ({e})", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`pleat ... | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        said = getattr(args, "interrupted", "nothing was lost")
        print(f"\npleat: interrupted; {said() if callable(said) else said}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
