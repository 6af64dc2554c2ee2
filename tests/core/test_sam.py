"""pleat.SAM: the SAM of pytorch-optimizer on every parameter, and a hand loop when the ascent is on a subset."""

import copy

import pytest
import torch
import torch.nn.functional as F

from pleat.core.sam import SAM


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)
    ).double()


def _batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(3, (8,), generator=g)) for _ in range(n)
    ]


def _sam_steps(model, opt, batches):
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()
        opt.first_step(zero_grad=True)
        F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)


def test_every_parameter_is_pytorch_optimizers_sam():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    ours, theirs = _net(), _net()
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    _sam_steps(ours, SAM(ours.parameters(), torch.optim.SGD, rho=0.2, **sgd), _batches())
    _sam_steps(theirs, pytorch_optimizer.SAM(theirs.parameters(), torch.optim.SGD, rho=0.2, **sgd), _batches())
    for p, q in zip(ours.parameters(), theirs.parameters()):  # theirs takes the gradient's norm in float32
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("subset", [[2], [0, 4], None])
def test_ascent_on_a_subset_descent_on_every_weight(subset):
    """Against a hand loop: the gradient at W + ρ g_U/‖g_U‖ (U: the weights of the layers `subset`, None: every
    parameter), applied at W by plain SGD to every parameter."""
    model, rho, lr = _net(), 0.3, 0.05
    ref = copy.deepcopy(model)
    perturbed = None if subset is None else [model[i].weight for i in subset]
    _sam_steps(model, SAM(model.parameters(), torch.optim.SGD, rho=rho, perturbed=perturbed, lr=lr), _batches())
    for x, y in _batches():
        moved = list(ref.parameters()) if subset is None else [ref[i].weight for i in subset]
        g = torch.autograd.grad(F.cross_entropy(ref(x), y), moved)
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        shifted = copy.deepcopy(ref)
        with torch.no_grad():
            for p, gi in zip(moved, g):
                dict(shifted.named_parameters())[_name(ref, p)].add_(rho * gi / norm)
        grads = torch.autograd.grad(F.cross_entropy(shifted(x), y), list(shifted.parameters()))
        with torch.no_grad():
            for p, gp in zip(ref.parameters(), grads):
                p -= lr * gp
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-13)


def _name(model, param):
    return next(n for n, p in model.named_parameters() if p is param)


def test_the_subset_matters():
    partial, full = _net(), _net()
    _sam_steps(partial, SAM(partial.parameters(), rho=0.3, perturbed=[partial[2].weight], lr=0.05), _batches())
    _sam_steps(full, SAM(full.parameters(), rho=0.3, lr=0.05), _batches())
    assert not torch.allclose(full[0].weight, partial[0].weight)


def test_weights_come_back_exactly_and_errors_name_the_fix():
    model = _net()
    before = [p.clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, perturbed=[model[0].weight], lr=0.0)
    x, y = _batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    assert not torch.equal(model[0].weight, before[0]) and torch.equal(model[2].weight, before[2])
    F.cross_entropy(model(x), y).backward()
    opt.second_step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # lr 0: back at W, bit for bit
    with pytest.raises(ValueError, match="optimised parameters"):
        SAM(list(model.parameters())[:2], torch.optim.SGD, perturbed=[model[4].weight], lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_a_loaded_state_reaches_the_base_optimizer():
    """Momentum saved mid-training and loaded into a fresh SAM gives the steps of the uninterrupted one."""
    batches = _batches(6)
    whole = _net()
    _sam_steps(whole, SAM(whole.parameters(), rho=0.2, perturbed=[whole[2].weight], lr=0.1, momentum=0.9), batches)
    first = _net()
    opt = SAM(first.parameters(), rho=0.2, perturbed=[first[2].weight], lr=0.1, momentum=0.9)
    _sam_steps(first, opt, batches[:3])
    resumed = copy.deepcopy(first)
    again = SAM(resumed.parameters(), rho=0.2, perturbed=[resumed[2].weight], lr=0.1, momentum=0.9)
    again.load_state_dict(opt.state_dict())
    assert again.base_optimizer.state and again.state is again.base_optimizer.state
    _sam_steps(resumed, again, batches[3:])
    for p, q in zip(resumed.parameters(), whole.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)


def test_sam_is_part_of_the_public_api():
    import pleat

    assert pleat.SAM is SAM and "SAM" in pleat.__all__
