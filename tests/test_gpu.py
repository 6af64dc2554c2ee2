"""Checks that need CUDA; they skip without it."""

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
