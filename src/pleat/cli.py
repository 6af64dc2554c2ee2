"""The `pleat` command line: `pleat train [CONFIG.toml] [--set key=value ...]`, `pleat runs [DIR]`."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pleat.config import Config, load, parse_set


def _train(args) -> int:
    from pleat.store import RunStore
    from pleat.train import train

    overrides = parse_set(args.set or [])
    for f in dataclasses.fields(Config):
        value = getattr(args, f.name, None)
        if value is not None:
            overrides.update(parse_set([f"{f.name}={value}"]))
    config = load(args.config, overrides)  # every check happens here, before any work
    store = RunStore(config)
    if store.finished:
        print(f"already finished: {store.dir} (delete it to train again)")
    result = train(config)
    print(
        f"best test accuracy {result['best_test_accuracy']:.4f} (epoch {result['best_epoch']}), "
        f"final {result['final_test_accuracy']:.4f} after {result['epochs']} epochs"
    )
    print(f"results in {store.dir}: metrics.jsonl, result.json, config.json, environment.json")
    return 0


def _runs(args) -> int:
    from pleat.store import runs

    table = runs(args.dir)
    if table.empty:
        print(f"no runs in {args.dir}")
        return 0
    columns = [
        "run",
        "dataset",
        "model",
        "kind",
        "layers",
        "radius",
        "status",
        "epochs_done",
        "epochs",
        "best_test_accuracy",
        "final_test_accuracy",
    ]
    print(table[[c for c in columns if c in table]].to_string(index=False))
    if "error" in table:
        for error in table["error"].dropna():
            print(error, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pleat", description="Partial local entropy: train and probe networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one training run (no config file: the paper's Figure 3 protocol)")
    train.add_argument("config", nargs="?", help="a TOML file of config keys")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    for f in dataclasses.fields(Config):
        train.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            metavar="VALUE",
            help=f"config key {f.name} (default {f.default!r})",
        )
    train.set_defaults(run=_train)
    runs = sub.add_parser("runs", help="what ran in a run store: status, epochs, best and final accuracy")
    runs.add_argument("dir", nargs="?", default="runs")
    runs.set_defaults(run=_runs)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"pleat: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
