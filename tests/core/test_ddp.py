"""DistributedDataParallel on two CPU processes (gloo): gradients are the average of each rank's sampled gradient."""

import copy
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import pleat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()


CASES = [(engine, same) for engine in ("vectorised", "sequential") for same in (False, True)]


def _worker(rank, port, out):
    """Every case in one process group: spawning two torch processes costs about 10 s a time."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out[rank] = {case: _case(rank, *case) for case in CASES}
    finally:
        dist.destroy_process_group()


def _case(rank, engine, same):
    torch.manual_seed(123)  # identical global seeds on both ranks, as is common
    model = _model()
    ddp = nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(5, 6, dtype=torch.float64, generator=g)
    t = torch.randint(0, 3, (5,), generator=g)
    obj = pleat.PartialLocalEntropy(
        ddp, F.cross_entropy, layers=[2], radius=0.3, samples=4, engine=engine, same_across_ranks=same
    )
    state = obj._seed
    probe = pleat.LayerTemperature(ddp)
    obj(x, t).backward()
    probe.step()
    # the same sampled loss on a plain copy of the model, with this rank's perturbations
    ref = copy.deepcopy(model)
    ref_obj = pleat.PartialLocalEntropy(
        ref,
        F.cross_entropy,
        layers=[2],
        radius=0.3,
        samples=4,
        generator=torch.Generator().manual_seed(state),
        engine="sequential",
    )
    ref_obj(x, t).backward()
    local = [p.grad.clone() for p in ref.parameters()]
    for gr in local:
        dist.all_reduce(gr)
        gr /= 2
    return {
        "ok": all(torch.allclose(p.grad, q, rtol=1e-10, atol=1e-12) for p, q in zip(model.parameters(), local)),
        "seed": state,
        "temperature": probe.epoch(),
    }


def test_ddp_gradients_are_averaged():
    """Both engines, with each rank's own perturbations and with the same across ranks."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
        out = dict(out)
    for engine, same in CASES:
        a, b = out[0][engine, same], out[1][engine, same]
        assert a["ok"] and b["ok"], (engine, same)
        assert (a["seed"] == b["seed"]) == same, (engine, same)
        # the probe reads the all-reduced gradients: every rank sees the same temperatures
        assert a["temperature"] == b["temperature"] and list(a["temperature"]) == ["0", "2", "4"], (engine, same)
