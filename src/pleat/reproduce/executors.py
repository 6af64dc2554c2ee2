"""Where the runs of a sweep are trained: a local pool of processes, or a Ray cluster.

Both take jobs, each a list of run configs trained as one vectorised group (`pleat.runs.train`; a job of one run is a
lone run), and yield `(config, result, error)` for every run as its job finishes; the run's numbers land in the
driver's run store either way. An error in a job is reported for each of its runs; the other jobs go on.

The local pool divides the machine's cores between its workers, because torch processes
that oversubscribe the cores slow each other down many times over. Ray tasks train into a folder on their worker
(which need not share a filesystem with the driver), return the run as data, and the driver writes it into its
own store; a task that dies is retried and resumes from its checkpoint when it lands where that checkpoint is.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from pleat.runs.config import Config

EXECUTORS = ("local", "ray")


def cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _die_with_parent() -> None:
    """Linux: kill this worker when the driver dies, so that a killed sweep leaves no orphan training."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def _start_worker(threads: int) -> None:
    import signal

    import torch

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops the workers
    torch.set_num_threads(threads)


Outcome = tuple[Config, dict | None, str | None]


def train_job(configs: list[Config]) -> list[dict]:
    """Train one job: a group of runs (of one, or more)."""
    from pleat.runs.train import train_group

    return train_group(configs)


def _train(values: list[dict]) -> list[dict]:
    return train_job([Config.from_dict(v) for v in values])


def _outcomes(job: list[Config], results) -> Iterator[Outcome]:
    """Each run of a finished job with its result, or with the job's error (`results` raises it)."""
    try:
        done = results()
    except Exception as e:  # the job's runs fail together; the other jobs go on
        for config in job:
            yield config, None, f"{type(e).__name__}: {e}"
        return
    yield from ((config, result, None) for config, result in zip(job, done))


def local(jobs: list[list[Config]], workers: int) -> Iterator[Outcome]:
    """Train `jobs` on `workers` processes of cores // workers torch threads each."""
    threads = max(1, cores() // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds OpenMP threads
    with futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(threads,)
    ) as pool:
        pending = {pool.submit(_train, [c.to_dict() for c in job]): job for job in jobs}
        for done in futures.as_completed(pending):
            yield from _outcomes(pending[done], done.result)


def check_address(address: str | None) -> None:
    """Fail fast, with one clear line, when a Ray address does not answer (ray.init would wait a long time)."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise ValueError(
            f"Ray address {address!r} does not answer ({e}); start a cluster with `ray start --head`"
        ) from e


def _ray_train(values: list[dict], worker_dir: str) -> list[dict]:
    """A Ray task: train a job into `worker_dir` on the worker, return its runs as data."""
    import json

    import torch

    from pleat.runs.store import RunStore

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    configs = [Config.from_dict({**v, "out_dir": str(Path(worker_dir).expanduser())}) for v in values]
    runs = []
    for config, result in zip(configs, train_job(configs)):
        store = RunStore(config)
        environment = json.loads((store.dir / "environment.json").read_text())
        runs.append({"result": result, "metrics": store.metrics(), "environment": environment})
    return runs


def ray(
    jobs: list[list[Config]],
    address: str | None,
    cpus: float = 1,
    gpus: float = 0,
    worker_dir: str = "~/.cache/pleat/ray-runs",
    retries: int = 3,
) -> Iterator[tuple[Config, dict | None, str | None]]:
    """Train `jobs` as Ray tasks of `cpus` CPUs and `gpus` GPUs each, on the cluster at `address` (None: local)."""
    try:
        import ray as ray_
    except ImportError as e:
        raise ValueError("--executor ray needs Ray: pip install 'torch-pleat[cluster]'") from e
    from pleat.runs.store import import_run

    check_address(address)
    if not ray_.is_initialized():
        ray_.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    task = ray_.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)(_ray_train)
    env = {"env_vars": {"OMP_NUM_THREADS": str(max(1, int(cpus)))}}
    pending = {task.options(runtime_env=env).remote([c.to_dict() for c in job], worker_dir): job for job in jobs}
    while pending:
        done, _ = ray_.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])

        def imported(ref=done[0], job=job):
            runs = ray_.get(ref)
            return [import_run(c, r["environment"], r["metrics"], r["result"]) for c, r in zip(job, runs)]

        yield from _outcomes(job, imported)
