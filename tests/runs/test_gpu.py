"""Checks that need CUDA; they skip without it."""

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import batch, cnn

import pleat

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("layers", [[1], [2], [1, 2]])
def test_engines_agree_on_cuda(layers):
    model = cnn().cuda()
    x, t = (v.cuda() for v in batch(model))
    ref = copy.deepcopy(model)
    results = []
    for m, engine in ((model, "vectorised"), (ref, "sequential")):
        obj = pleat.PartialLocalEntropy(
            m,
            F.cross_entropy,
            layers=layers,
            radius=0.2,
            samples=4,
            kind="plea",
            generator=torch.Generator("cuda").manual_seed(0),
            engine=engine,
        )
        obj(x, t).backward()
        results.append(obj.last.losses)
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-12)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)


def test_lattice_draws_on_cuda():
    out = torch.empty(1_000_000, device="cuda")
    pleat.Box(0.5).sample_(out, torch.Generator("cuda").manual_seed(0))
    assert float(out.abs().max()) < 0.5 and abs(float(out.mean())) < 4 * 0.5 / (3 * 1e6) ** 0.5


def test_vectorised_group_matches_lone_runs_on_cuda(tmp_path):
    """The group's equality with lone runs (tests/runs/test_group.py), on a GPU in float32 within float32 tolerance."""
    from conftest import SHARED
    from test_group import fc_configs

    from pleat.runs.store import RunStore
    from pleat.runs.train import train, train_group

    if not (SHARED / "FashionMNIST" / "raw").exists():
        pytest.skip("Fashion-MNIST not present")
    alone = fc_configs(tmp_path / "alone", dtype="float32", device="cuda")
    grouped = fc_configs(tmp_path / "group", dtype="float32", device="cuda")
    for c in alone:
        train(c)
    train_group(grouped)
    for a, b in zip(alone, grouped):
        for ra, rb in zip(RunStore(a).metrics(), RunStore(b).metrics()):
            for key in ("train_loss", "test_loss"):
                assert rb[key] == pytest.approx(ra[key], rel=1e-4), (a.kind, key)
            for key in ("train_accuracy", "test_accuracy"):
                assert abs(rb[key] - ra[key]) <= 0.01, (a.kind, key)  # a few examples may flip


def test_tf32_is_on_inside_the_run_and_restored_after():
    from pleat.runs.config import Config
    from pleat.runs.lifecycle import autocast_for

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with autocast_for(Config(dtype="tf32"), torch.device("cuda"))():
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_a_vectorised_step_never_waits_for_the_device(tmp_path):
    """The GPU fast path: data on the device and no host sync inside an epoch (the steps of a group of PLA, PLEA
    and plain runs raise under CUDA's sync debug mode if anything copies to the host)."""
    from test_group import fc_configs

    from pleat.runs.train import Group, member

    device = torch.device("cuda")
    configs = [c for c in fc_configs(tmp_path, dtype="float32", device="cuda") if c.layers == (2,) or c.kind == "none"]
    runs = [member(c, device) for c in configs]
    group = Group(runs)
    x = torch.rand(len(runs), 64, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (len(runs), 64), device=device)
    group.step(x, y, contextlib.nullcontext)  # the first step allocates
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            group.step(x, y, contextlib.nullcontext)
    finally:
        torch.cuda.set_sync_debug_mode("default")
