"""The run store: one directory per run, keyed by the hash of its config, that survives kill -9.

<out_dir>/<config key>/
    config.json        the full config, written first
    environment.json   git commit, package versions, device, host
    metrics.jsonl      one line per epoch, each with a CRC32 of its content, appended and fsynced
    checkpoint-<E>.pt  model, optimiser, every RNG state, probe state and the metrics so far (atomic write)
    state.json         names the latest complete checkpoint and its sha256 (atomic write, after it)
    result.json        best and final test accuracy, written last: its presence means the run finished
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import time
import warnings
import zlib
from pathlib import Path

import torch

from pleat.runs.config import Config


class CorruptRun(RuntimeError):
    """A store file failed its integrity check; the message names the file and what to do."""


class RunBusy(RuntimeError):
    """Another process is training this run right now."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(record: dict) -> str:
    body = json.dumps(record, sort_keys=True)
    return json.dumps({"crc": zlib.crc32(body.encode()), "record": record}, sort_keys=True) + "\n"


def read_metrics(path: Path) -> list[dict]:
    """The per-epoch records of a metrics.jsonl; a truncated or altered line raises CorruptRun."""
    if not path.exists():
        return []
    records = []
    text = path.read_text()
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        try:
            entry = json.loads(line)
            ok = zlib.crc32(json.dumps(entry["record"], sort_keys=True).encode()) == entry["crc"]
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise CorruptRun(
                f"{path} line {number} is truncated or corrupt; delete the run directory "
                f"{path.parent} to train it again"
            )
        records.append(entry["record"])
    if text and not text.endswith("\n"):
        raise CorruptRun(f"{path} ends in a partial line; delete the run directory {path.parent} to train it again")
    return records


def environment(device: torch.device) -> dict:
    """What produced a run: git commit, versions, device, host."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for name in ("pleat", "torchvision", "kornia", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "git_commit": commit,
        "versions": versions,
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "started": time.time(),
    }


class RunStore:
    """The directory of one run (see the module docstring)."""

    def __init__(self, config: Config):
        self.config = config
        self.dir = Path(config.out_dir) / config.key()

    @classmethod
    def at(cls, run_dir: str | os.PathLike) -> RunStore:
        """The store of an existing run folder, to read and verify (wherever the folder has moved since)."""
        store = cls.__new__(cls)
        store.config = Config.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
        store.dir = Path(run_dir)
        return store

    @property
    def finished(self) -> bool:
        return (self.dir / "result.json").exists()

    def create(self, env: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "config.json").exists():
            _atomic_write(self.dir / "config.json", json.dumps(self.config.to_dict(), indent=2).encode())
        _atomic_write(self.dir / "environment.json", json.dumps(env, indent=2).encode())

    @contextlib.contextmanager
    def lock(self):
        """Hold an exclusive lock on the run while training it, so that two processes never write one run.

        The lock is the kernel's (flock): it goes away with its process, even after kill -9.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as f:
            for attempt in range(5):  # `training` holds the lock for an instant when it asks: try again first
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as e:
                    if attempt == 4:
                        raise RunBusy(f"{self.dir} is being trained by another process; wait for it or stop it") from e
                    time.sleep(0.05)
            yield

    def append_metrics(self, record: dict) -> None:
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(_line(record))
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir / "metrics.jsonl")

    def save_checkpoint(self, state: dict, epoch: int) -> None:
        """Write checkpoint-<epoch>.pt, then point state.json at it (and at the one before), then drop older ones.

        Two checkpoints are kept, so that a run whose latest checkpoint is damaged resumes from the one before.
        """
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        name = f"checkpoint-{epoch}.pt"
        _atomic_write(self.dir / name, data)
        latest = {"epoch": epoch, "checkpoint": name, "sha256": hashlib.sha256(data).hexdigest()}
        previous = self._pointer(required=False)
        if previous is not None and previous["checkpoint"] == name:  # rewriting an epoch: keep the one before it
            previous = previous.get("previous")
        previous = None if previous is None else {k: previous[k] for k in ("epoch", "checkpoint", "sha256")}
        _atomic_write(self.dir / "state.json", json.dumps({**latest, "previous": previous}).encode())
        keep = {name} | ({previous["checkpoint"]} if previous else set())
        for old in self.dir.glob("checkpoint-*.pt"):
            if old.name not in keep:
                old.unlink()

    def _pointer(self, required: bool = True) -> dict | None:
        path = self.dir / "state.json"
        if not path.exists():
            return None
        try:
            pointer = json.loads(path.read_text())
            pointer["checkpoint"], pointer["sha256"], pointer["epoch"]
        except (ValueError, KeyError, TypeError) as e:
            if not required:
                return None
            raise CorruptRun(f"{path} is corrupt ({e}); delete {self.dir} to train the run again") from e
        return pointer

    def checkpoint_epoch(self) -> int | None:
        """The epoch of the latest checkpoint, None when the run has none (read without loading it)."""
        pointer = self._pointer(required=False)
        return None if pointer is None else int(pointer["epoch"])

    def load_checkpoint(self, device: torch.device) -> dict | None:
        """The latest intact checkpoint, verified against its sha256; None when the run has none.

        A damaged latest checkpoint falls back, with a warning, to the one before it; with none intact the run
        raises CorruptRun.
        """
        pointer, damage = self._intact()
        if damage:
            warnings.warn(damage, stacklevel=2)
        if pointer is None:
            return None
        return torch.load(io.BytesIO(self._verified(pointer)), map_location=device, weights_only=True)

    def intact_epoch(self) -> tuple[int | None, str]:
        """The epoch a resume starts from (None: no checkpoint yet) and, when the latest checkpoint is damaged,
        what is wrong with it. Reads and verifies the files, loads nothing; raises CorruptRun when none is intact."""
        pointer, damage = self._intact()
        return (None if pointer is None else int(pointer["epoch"])), damage

    def _intact(self) -> tuple[dict | None, str]:
        """The pointer of the newest checkpoint that verifies, and the damage of a newer one skipped ("" if none)."""
        pointer = self._pointer()
        if pointer is None:
            return None, ""
        if on_disk(self.dir, pointer) is None:
            # a store copied without its checkpoints (git, a GPU session's tarball): nothing to resume from
            return None, (
                f"{self.dir} holds none of its checkpoints (copied without them?); training it again from epoch 0"
            )
        try:
            self._verified(pointer)
            return pointer, ""
        except CorruptRun as e:
            previous = pointer.get("previous")
            if not previous:
                raise
            try:
                self._verified(previous)
            except CorruptRun:
                raise e from None
            return previous, f"{str(e).split('; delete ')[0]}; resuming from {previous['checkpoint']} instead"

    def _verified(self, pointer: dict) -> bytes:
        path = self.dir / pointer["checkpoint"]
        if not path.exists():
            raise CorruptRun(f"{path} named by state.json is missing; delete {self.dir} to train the run again")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != pointer["sha256"]:
            raise CorruptRun(
                f"{path} fails its sha256 check (truncated or altered); delete {self.dir} to train the run again"
            )
        return data

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Make metrics.jsonl hold exactly `records` (those of the checkpoint a resumed run starts from)."""
        _atomic_write(self.dir / "metrics.jsonl", "".join(_line(r) for r in records).encode())

    def finish(self, result: dict) -> None:
        _atomic_write(self.dir / "result.json", json.dumps(result, indent=2).encode())

    def result(self) -> dict:
        return json.loads((self.dir / "result.json").read_text())


def import_run(config: Config, env: dict, metrics: list[dict], result: dict) -> dict:
    """Write a run trained elsewhere (a Ray worker) into this store, finished; returns its result here."""
    store = RunStore(config)
    with store.lock():
        store.create(env)
        store.rewrite_metrics(metrics)
        result = {**result, "run": str(store.dir)}
        store.finish(result)
    return result


def on_disk(run_dir: Path, pointer: dict) -> dict | None:
    """The newest checkpoint that state.json's `pointer` names and the folder holds (not verified), or None."""
    return next((p for p in (pointer, pointer.get("previous")) if p and (run_dir / p["checkpoint"]).exists()), None)


def trained_epochs(run_dir: Path, epochs: int) -> int:
    """The epochs a run folder holds, read without loading anything: all of them once finished, else those of the
    newest checkpoint it holds, 0 before the first, without any checkpoint file, or when the run trains elsewhere
    (as Ray's do)."""
    if (run_dir / "result.json").exists():
        return epochs
    try:
        present = on_disk(run_dir, json.loads((run_dir / "state.json").read_text()))
        return int(present["epoch"]) if present else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def training(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock, that is, trains it now (a killed one holds nothing)."""
    try:
        fd = os.open(run_dir / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released by the close below
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def runs(out_dir: str | os.PathLike = "runs"):
    """Every run under `out_dir` as a pandas DataFrame: config keys, status (finished, training now, interrupted,
    corrupt), epochs done, best/final accuracy.

    `out_dir` is a run store (the out_dir of `pleat train`) or a sweep folder of `pleat reproduce` (its runs/)."""
    import pandas as pd

    root = Path(out_dir)
    if not any(root.glob("*/config.json")) and (root / "runs").is_dir():
        root = root / "runs"
    rows = []
    for config_path in sorted(root.glob("*/config.json")):
        run_dir = config_path.parent
        row = {"run": run_dir.name, **json.loads(config_path.read_text())}
        try:
            metrics = read_metrics(run_dir / "metrics.jsonl")
            done = (run_dir / "result.json").exists()
            row["status"] = "finished" if done else "training" if training(run_dir) else "interrupted"
            if row["status"] == "interrupted":  # resumable only if a checkpoint verifies (or none was written yet)
                RunStore.at(run_dir).intact_epoch()
        except CorruptRun as e:
            metrics, row["status"], row["error"] = [], "corrupt", str(e)
        row["epochs_done"] = len(metrics)
        accs = [m["test_accuracy"] for m in metrics]
        row["best_test_accuracy"] = max(accs) if accs else None
        row["final_test_accuracy"] = accs[-1] if accs else None
        rows.append(row)
    return pd.DataFrame(rows)
