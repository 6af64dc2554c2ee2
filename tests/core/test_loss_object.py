"""What a PyTorch user expects of a loss object: repr, state_dict, a kernel of their own, torch.compile."""

import copy
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from conftest import batch, mlp, naive, smooth

import pleat


def test_repr_says_what_is_smoothed_and_how():
    obj = smooth(mlp(), layers=[2], radius=0.01, samples=4, kind="plea", antithetic=True)
    text = repr(obj)
    assert text.startswith("PartialLocalEntropy(kind='plea', layers=[3.weight], samples=4")
    assert "Box(radius=0.01" in text and "antithetic=True" in text and "engine='auto'" in text


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_state_dict_resumes_the_draws(engine):
    model = mlp()
    x, t = batch(model)
    a = smooth(model, layers=[1, 2], radius=0.1, samples=4, seed=3, engine=engine)
    a(x, t)
    state = copy.deepcopy(a.state_dict())
    expected = a(x, t).detach()
    b = smooth(model, layers=[1, 2], radius=0.1, samples=4, seed=99, engine=engine)  # another seed...
    b.load_state_dict(state)  # ...resumed where a was
    torch.testing.assert_close(b(x, t).detach(), expected, rtol=0, atol=0)
    fresh = pleat.PartialLocalEntropy(model, F.cross_entropy, layers=[1], radius=0.1)  # generator=None: torch's own
    state = copy.deepcopy(fresh.state_dict())
    first = fresh(x, t).detach()
    fresh(x, t)  # the global generator moves on...
    fresh.load_state_dict(state)  # ...and comes back
    torch.testing.assert_close(fresh(x, t).detach(), first, rtol=0, atol=0)


@dataclass(frozen=True)
class Laplace:
    """A user's kernel: ΔW ~ Laplace(0, b) per coordinate, every point of weight one."""

    scale: float
    flat = True

    @property
    def variance(self) -> float:
        return 2 * self.scale**2

    def sample_(self, out, generator):
        u = torch.rand(out.shape, generator=generator, dtype=out.dtype, device=out.device) - 0.5
        return out.copy_(-self.scale * u.sign() * torch.log1p(-2 * u.abs()))

    def log_weight(self, delta):
        return delta.new_zeros(())


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_a_users_own_kernel(engine):
    model = mlp()
    x, t = batch(model)
    kernel = Laplace(0.05)
    assert isinstance(kernel, pleat.Kernel)
    obj = smooth(model, layers=[2], kernel=kernel, samples=3, seed=4, engine=engine)
    obj(x, t).backward()
    g = torch.Generator().manual_seed(4)  # the documented order: point by point, parameter by parameter
    shape = dict(model.named_parameters())["3.weight"].shape
    deltas = [{"3.weight": kernel.sample_(torch.empty(shape, dtype=torch.float64), g)} for _ in range(3)]
    loss_ref, grad_ref, _ = naive(copy.deepcopy(model), F.cross_entropy, x, t, deltas)
    torch.testing.assert_close(obj.last.loss, loss_ref, rtol=1e-10, atol=1e-12)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grad_ref[n], rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="Kernel protocol"):
        smooth(model, layers=[2], kernel=object())


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_a_compiled_model_gives_the_same_losses(engine):
    """Compile the model, not the objective: the noise draw breaks any graph around it."""
    model = mlp()
    x, t = batch(model)
    plain = smooth(model, layers=[2], radius=0.1, samples=4, seed=1, engine=engine)
    expected = plain(x, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo notes the graph breaks at vmap's private batching calls
        compiled = smooth(
            torch.compile(model, backend="aot_eager"), layers=[2], radius=0.1, samples=4, seed=1, engine=engine
        )
        loss = compiled(x, t)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(compiled.last.losses, plain.last.losses, rtol=1e-12, atol=1e-12)


def test_the_centre_loss_is_a_reading_not_a_graph():
    model = mlp()
    x, t = batch(model)
    obj = smooth(model, layers=[2], radius=0.1, samples=2, seed=0)
    obj(x, t)
    assert not obj.last.centre_loss.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float() of a tensor that keeps its graph warns
        float(obj.last.centre_loss)


def test_last_before_any_call_says_to_call_first():
    obj = smooth(mlp(), layers=[1], radius=0.1)
    with pytest.raises(RuntimeError, match=r"loss = obj\(inputs, targets\) first"):
        _ = obj.last
