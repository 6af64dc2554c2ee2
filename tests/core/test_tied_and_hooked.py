"""Models no paper test builds: tied weights, a module whose forward a library replaced, hooks left behind."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import draw_like_pleat, naive, smooth
from torch import nn

import pleat


def assert_close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class TiedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight  # one matrix, used twice
        self.out = nn.Linear(4, 3)
        self.double()

    def forward(self, x):
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


class TinyLM(nn.Module):
    """An embedding whose matrix is also the output head, as language models tie them."""

    def __init__(self, vocab=10, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.double()

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.embed(tokens)))).flatten(0, 1)


def tied_batch(model):
    g = torch.Generator().manual_seed(1)
    if isinstance(model, TinyLM):
        tokens = torch.randint(0, 10, (3, 5), generator=g)
        return tokens, torch.randint(0, 10, (15,), generator=g)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)


@pytest.mark.parametrize(
    "make, layers, shared",
    [
        (TiedMLP, ["a"], "a.weight"),
        (TiedMLP, ["b"], "a.weight"),  # the second name selects the same matrix
        (TiedMLP, "all", "a.weight"),
        (TinyLM, ["head"], "embed.weight"),
    ],
)
@pytest.mark.parametrize("kind", ["pla", "plea"])
def test_a_tied_weight_is_one_set_of_coordinates_for_both_engines(make, layers, shared, kind):
    model = make()
    x, t = tied_batch(model)
    obj = {
        e: smooth(model, layers=layers, radius=0.2, samples=3, kind=kind, seed=5, engine=e)
        for e in ("vectorised", "sequential")
    }
    names = [s.name for s in obj["vectorised"].selected]
    assert shared in names and len(names) == len(set(names))
    deltas = draw_like_pleat(model, names, 3, 0.2, seed=5)
    loss_ref, grad_ref, _ = naive(copy.deepcopy(model), F.cross_entropy, x, t, deltas, kind)
    for o in obj.values():
        model.zero_grad()
        o(x, t).backward()
        assert_close(o.last.loss, loss_ref)
        for n, p in model.named_parameters():
            assert_close(p.grad, grad_ref[n])
    alias = "b.weight" if make is TiedMLP else "head.weight"
    assert f"tied: also {alias}" in obj["sequential"].describe()


class Hooked(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(6, 5)
        self.out = nn.Linear(5, 3)
        self.double()
        self.calls = 0
        original = self.lin.forward

        def forward(x):  # what a hooking library does: wrap the module's forward
            self.calls += 1
            return original(x) + 0.5

        self.lin.forward = forward
        self.replaced = forward

    def forward(self, x):
        return self.out(torch.relu(self.lin(x)))


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_a_replaced_forward_is_used_and_kept(engine):
    model = Hooked()
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(7, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g)
    deltas = draw_like_pleat(model, ["lin.weight"], 4, 0.1, seed=3)
    # reference: shift the weight in place, point by point (a deep copy would keep calling the original's forward)
    losses, grads = [], []
    for d in [{}, *deltas]:
        with torch.no_grad():
            model.lin.weight.add_(d.get("lin.weight", 0))
        loss = F.cross_entropy(model(x), t)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
        losses.append(loss.detach())
        with torch.no_grad():
            model.lin.weight.sub_(d.get("lin.weight", 0))
    loss_ref = sum(losses) / len(losses)
    grad_ref = {n: sum(g[k] for g in grads) / len(grads) for k, (n, _) in enumerate(model.named_parameters())}
    obj = smooth(model, layers=["lin"], radius=0.1, samples=4, seed=3, engine=engine)
    model.calls = 0
    obj(x, t).backward()
    assert model.calls > 0  # the library's forward ran
    assert_close(obj.last.loss, loss_ref)
    for n, p in model.named_parameters():
        assert_close(p.grad, grad_ref[n])
    assert model.lin.forward is model.replaced and not model.lin._forward_hooks

    def failing(out, targets):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        smooth(model, failing, layers=["lin"], radius=0.1, samples=4, seed=3, engine=engine)(x, t)
    assert model.lin.forward is model.replaced and not model.lin._forward_hooks
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_select_lists_aliases():
    selected = pleat.select(TinyLM(), ["head"])
    assert [(s.name, s.aliases) for s in selected] == [("embed.weight", ("head.weight",))]


class CrossedBN(nn.Module):
    """Two BatchNorms of one width, registered in one order and called in the other."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(4, 4)
        self.bn_a = nn.BatchNorm1d(4)  # registered first, called second
        self.bn_b = nn.BatchNorm1d(4)
        self.second = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)
        self.double()

    def forward(self, x):
        h = self.bn_b(torch.tanh(self.first(x)))
        return self.out(torch.tanh(self.bn_a(self.second(h) * 3.0 + 1.0)))


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("layers", [["first"], ["second"], ["out"]])
def test_batchnorm_statistics_land_on_the_layer_that_made_them(engine, layers):
    model = CrossedBN()
    plain = copy.deepcopy(model)
    x, t = tied_batch(TiedMLP())
    plain(x)  # one plain training forward: what the running statistics must hold afterwards
    smooth(model, layers=layers, radius=0.1, samples=3, seed=4, engine=engine)(x, t).backward()
    for b, b_ref in zip(model.buffers(), plain.buffers()):
        assert_close(b, b_ref)
    assert model.bn_a.running_mean.sub(model.bn_b.running_mean).abs().max() > 0.1  # they differ: a swap would show


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("kind", ["pla", "plea"])
def test_a_users_hook_that_changes_a_smoothed_layers_output_sees_the_perturbed_weight(engine, kind):
    model = TiedMLP()
    model.out.register_forward_hook(lambda m, args, out: 2 * out)  # linear in the weight: 2 (W + ΔW) x
    x, t = tied_batch(model)
    deltas = draw_like_pleat(model, ["out.weight"], 3, 0.2, seed=6)
    loss_ref, grad_ref, _ = naive(copy.deepcopy(model), F.cross_entropy, x, t, deltas, kind)
    obj = smooth(model, layers=["out"], radius=0.2, samples=3, kind=kind, seed=6, engine=engine)
    loss = obj(x, t)
    loss.backward()
    assert_close(loss.detach(), loss_ref)
    for n, p in model.named_parameters():
        assert_close(p.grad, grad_ref[n])


class TwiceBN(nn.Module):
    """One BatchNorm called twice, on two different inputs: plain training updates it twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 3)
        self.double()

    def forward(self, x):
        h = self.bn(torch.tanh(self.first(x)))
        return self.out(self.bn(h * 2.0 + 0.5))


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_a_batchnorm_called_twice_updates_twice_as_in_plain_training(engine):
    model = TwiceBN()
    plain = copy.deepcopy(model)
    x, t = tied_batch(TiedMLP())
    plain(x)
    smooth(model, layers=["first"], radius=0.1, samples=3, seed=4, engine=engine)(x, t).backward()
    assert model.bn.num_batches_tracked.item() == 2
    for b, b_ref in zip(model.buffers(), plain.buffers()):
        assert_close(b, b_ref)


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_a_users_pre_hook_that_changes_a_smoothed_layers_input_applies_to_every_point(engine):
    model = TiedMLP()
    model.out.register_forward_pre_hook(lambda m, args: (args[0] * 3.0 - 0.5,))
    x, t = tied_batch(model)
    deltas = draw_like_pleat(model, ["out.weight"], 3, 0.2, seed=7)
    loss_ref, grad_ref, _ = naive(copy.deepcopy(model), F.cross_entropy, x, t, deltas, "plea")
    obj = smooth(model, layers=["out"], radius=0.2, samples=3, kind="plea", seed=7, engine=engine)
    loss = obj(x, t)
    loss.backward()
    assert_close(loss.detach(), loss_ref)
    for n, p in model.named_parameters():
        assert_close(p.grad, grad_ref[n])
