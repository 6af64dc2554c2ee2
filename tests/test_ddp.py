"""DistributedDataParallel on two CPU processes (gloo): gradients are the average of each rank's sampled gradient."""

import copy
import os
import socket

import pytest
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


def _worker(rank, port, engine, same, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
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
        out[rank] = {
            "ok": all(torch.allclose(p.grad, q, rtol=1e-10, atol=1e-12) for p, q in zip(model.parameters(), local)),
            "seed": state,
            "temperature": probe.epoch(),
        }
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("same", [False, True])
def test_ddp_gradients_are_averaged(engine, same):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(_free_port(), engine, same, out), nprocs=2, join=True)
        out = dict(out)
    assert out[0]["ok"] and out[1]["ok"]
    assert (out[0]["seed"] == out[1]["seed"]) == same
    # the probe reads the all-reduced gradients: every rank sees the same temperatures
    assert out[0]["temperature"] == out[1]["temperature"] and list(out[0]["temperature"]) == ["0", "2", "4"]
