import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import Quadratic, batch, cnn, draw_like_pleat, mlp, naive, smooth
from torch import nn

import pleat
from pleat.core import engines


def names_of(model, layers):
    return [s.name for s in pleat.select(model, layers)]


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_close(a, b, rtol=1e-10):
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("kind", ["pla", "plea"])
@pytest.mark.parametrize("make", [mlp, cnn])
@pytest.mark.parametrize("layers", [[1], [2], [1, 2]])
def test_matches_naive_loop(engine, kind, make, layers):
    model = make()
    x, t = batch(model)
    ref_model = copy.deepcopy(model)
    deltas = draw_like_pleat(model, names_of(model, layers), 4, 0.3, seed=5)
    loss_ref, grad_ref, centre = naive(ref_model, F.cross_entropy, x, t, deltas, kind)

    obj = smooth(
        model,
        layers=layers,
        radius=0.3,
        samples=4,
        kind=kind,
        seed=5,
        engine=engine,
    )
    loss = obj(x, t)
    loss.backward()
    assert_close(loss.detach(), loss_ref)
    for n, p in model.named_parameters():
        assert_close(p.grad, grad_ref[n])
    # only the centre updated the BatchNorm statistics, exactly as one plain forward would
    for b, b_ref in zip(model.buffers(), centre.buffers()):
        assert_close(b, b_ref)
    assert obj.last.output.shape == (x.shape[0], 3)


@pytest.mark.parametrize("kind", ["pla", "plea"])
def test_sequential_matches_naive_with_dropout(kind):
    model = cnn(dropout=0.5)
    x, t = batch(model)
    deltas = draw_like_pleat(model, names_of(model, [2]), 3, 0.2, seed=2)
    torch.manual_seed(11)
    loss_ref, grad_ref, _ = naive(copy.deepcopy(model), F.cross_entropy, x, t, deltas, kind)
    obj = smooth(
        model,
        layers=[2],
        radius=0.2,
        samples=3,
        kind=kind,
        seed=2,
        engine="sequential",
    )
    torch.manual_seed(11)
    obj(x, t).backward()
    assert_close(obj.last.loss, loss_ref)
    for n, p in model.named_parameters():
        assert_close(p.grad, grad_ref[n])


def test_vectorised_dropout_masks_differ_per_point():
    model = mlp(dropout=0.5)
    x, t = batch(model, 32)
    obj = smooth(model, layers=[3], radius=1e-30, samples=4, engine="vectorised")
    obj(x, t)
    assert obj.last.losses.unique().numel() == 5  # the perturbation is negligible: only the masks differ


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_engines_agree_soft_box_and_antithetic(engine):
    model = cnn()
    x, t = batch(model)
    kwargs = dict(layers=[1, 3], kernel=pleat.Box(0.1, 20.0, "uniform"), samples=4, kind="plea", antithetic=True)
    ref = copy.deepcopy(model)
    a = smooth(model, seed=3, engine=engine, **kwargs)
    b = smooth(
        ref,
        seed=3,
        engine="sequential" if engine == "vectorised" else "vectorised",
        **kwargs,
    )
    a(x, t).backward()
    b(x, t).backward()
    assert_close(a.last.losses, b.last.losses)
    assert_close(a.last.log_weights, b.last.log_weights)
    assert (a.last.log_weights[1:] < 0).all()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert_close(p.grad, q.grad)
    # antithetic: pairs (ΔW, -ΔW) have equal kernel weight
    assert_close(a.last.log_weights[1::2], a.last.log_weights[2::2])


def test_soft_box_weights_match_naive_reference():
    model = mlp()
    x, t = batch(model)
    radius, k = 0.2, 8.0
    obj = smooth(model, layers=[2], kernel=pleat.Box(radius, k, "uniform"), samples=3, kind="pla", seed=4)
    loss = obj(x, t)
    loss.backward()
    h = radius + math.log(1e4) / (2 * k)
    deltas = draw_like_pleat(model, ["3.weight"], 3, h, seed=4)
    lw = torch.tensor(
        [0.0] + [-sum(naive_distance(d, radius, k) for d in p.values()) for p in deltas], dtype=torch.float64
    )
    loss_ref, grad_ref, _ = naive(copy.deepcopy(model), F.cross_entropy, x, t, deltas, "pla", lw)
    assert_close(loss.detach(), loss_ref)
    assert_close(obj.last.log_weights, lw)
    for n, p in model.named_parameters():
        assert_close(p.grad, grad_ref[n])


def naive_distance(delta, radius, k):
    """Eq 5 written literally."""
    s = torch.sigmoid
    return -torch.log((1 - s(2 * k * (delta - radius))) * s(2 * k * (delta + radius))).sum()


def test_soft_box_distance_eq5_and_limit():
    d = torch.linspace(-0.3, 0.3, 101, dtype=torch.float64)
    assert_close(pleat.soft_box_distance(d, 0.1, 7.0), naive_distance(d, 0.1, 7.0))
    # stable where the literal form overflows
    assert torch.isfinite(pleat.soft_box_distance(torch.tensor([50.0], dtype=torch.float64), 0.1, 1e3))
    inside, outside = torch.tensor([0.05, -0.09], dtype=torch.float64), torch.tensor([0.11], dtype=torch.float64)
    ks = [10.0, 100.0, 1e3, 1e4]
    kin = [float(torch.exp(-pleat.soft_box_distance(inside, 0.1, k))) for k in ks]
    kout = [float(torch.exp(-pleat.soft_box_distance(outside, 0.1, k))) for k in ks]
    assert all(b >= a for a, b in zip(kin, kin[1:])) and kin[-1] > 1 - 1e-12  # kernel -> 1 inside
    assert all(b <= a for a, b in zip(kout, kout[1:])) and kout[-1] < 1e-12  # kernel -> 0 outside
    assert float(pleat.soft_box_distance(inside, 0.1, math.inf)) == 0
    assert math.isinf(float(pleat.soft_box_distance(outside, 0.1, math.inf)))


def test_soft_box_tends_to_box_as_sharpness_grows():
    model = mlp()
    x, t = batch(model)
    box = smooth(model, layers=[2], radius=0.2, samples=4, seed=9)
    ref = float(box(x, t).detach())
    gaps = []
    for k in [1e2, 1e4, 1e6]:
        soft = smooth(model, layers=[2], kernel=pleat.Box(0.2, k, "uniform"), samples=4, seed=9)
        gaps.append(abs(float(soft(x, t).detach()) - ref))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4


@pytest.mark.parametrize("make", [mlp, cnn])
def test_zero_radius_and_zero_samples_are_plain(make):
    model = make()
    x, t = batch(model)
    plain = copy.deepcopy(model)
    F.cross_entropy(plain(x), t).backward()
    for kwargs in [dict(radius=0.0, samples=4), dict(radius=0.5, samples=0)]:
        for kind in ["pla", "plea"]:
            model.zero_grad()
            m = copy.deepcopy(model)
            obj = smooth(m, layers="all", kind=kind, **kwargs)
            loss = obj(x, t)
            loss.backward()
            assert torch.equal(loss.detach(), F.cross_entropy(copy.deepcopy(model)(x), t).detach())
            for (n, p), (_, q) in zip(m.named_parameters(), plain.named_parameters()):
                assert torch.equal(p.grad, q.grad), n


def test_plea_below_pla_on_same_points():
    model = mlp()
    x, t = batch(model)
    for seed in range(5):
        vals = {}
        for kind in ["pla", "plea"]:
            obj = smooth(
                model,
                layers=[1, 2],
                radius=1.0,
                samples=6,
                kind=kind,
                seed=seed,
            )
            vals[kind] = float(obj(x, t).detach())
        assert vals["plea"] <= vals["pla"]


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_quadratic_rise_and_curvature(engine):
    model = Quadratic()
    x = torch.zeros(1, 12, dtype=torch.float64)
    R, y, trials = 0.3, 4, 300
    obj = smooth(
        model,
        lambda out, _: out,
        layers=[1],
        radius=R,
        samples=y,
        seed=0,
        engine=engine,
    )
    rises, curv = [], []
    for _ in range(trials):
        obj(x, None)
        rises.append(float(obj.last.loss - obj.last.centre_loss))
        curv.append(float(obj.last.curvature))
    rises, curv = torch.tensor(rises), torch.tensor(curv)
    trace = float(model.A.trace())
    expected = R**2 / 6 * trace * y / (y + 1)
    assert abs(rises.mean() - expected) < 4 * rises.std() / math.sqrt(trials)
    assert abs(curv.mean() - trace) < 4 * curv.std() / math.sqrt(trials)


def test_gaussian_kernel_curvature():
    model = Quadratic()
    x = torch.zeros(1, 12, dtype=torch.float64)
    obj = smooth(
        model,
        lambda out, _: out,
        layers=[1],
        kernel=pleat.Gaussian(gamma=50.0),
        samples=8,
        kind="plea",
        beta=2.0,
        seed=1,
    )
    curv = []
    for _ in range(300):
        obj(x, None)
        curv.append(float(obj.last.curvature))
    curv = torch.tensor(curv)
    assert abs(curv.mean() - float(model.A.trace())) < 4 * curv.std() / math.sqrt(len(curv))


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
def test_state_untouched_and_unselected_never_move(engine):
    model = cnn(dropout=0.2)
    x, t = batch(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    obj = smooth(model, layers=[2], radius=0.5, samples=3, engine=engine, include_bias=False)
    seen = {}

    def spy(out, t):
        for n, p in model.named_parameters():
            seen[n] = p.detach().clone()
        return F.cross_entropy(out, t)

    obj.target.loss_fn = spy
    obj(x, t)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and torch.equal(seen[n], before[n])  # after, and during the call
    assert model.training
    # a loss that raises leaves parameters, mode and BatchNorm buffers as they were
    model.eval()
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def boom(out, t):
        raise KeyError("boom")

    obj.target.loss_fn = boom
    with pytest.raises(KeyError):
        obj(x, t)
    model.train()
    with pytest.raises(KeyError):
        obj(x, t)
    assert model.training and all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any("forward" in vars(m) for m in model.modules())
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_perturbations_only_on_selected_weights(monkeypatch):
    model = mlp()
    x, t = batch(model)
    calls = []
    original = engines.functional_call

    def recording(module, state, *args, **kwargs):
        calls.append(set(state))
        return original(module, state, *args, **kwargs)

    monkeypatch.setattr(engines, "functional_call", recording)
    smooth(model, layers=[2], radius=0.5, samples=2, engine="sequential")(x, t)
    smooth(model, layers=[1], radius=0.5, samples=2, include_bias=True, engine="sequential")(x, t)
    # the centre replaces nothing; the points only the selected weights (and biases when asked)
    assert calls == [set()] + [{"3.weight"}] * 2 + [set()] + [{"0.weight", "0.bias"}] * 2


def test_bias_smoothing_matches_naive():
    model = mlp()
    x, t = batch(model)
    deltas = draw_like_pleat(model, ["0.weight", "0.bias"], 3, 0.2, seed=6)
    loss_ref, grad_ref, _ = naive(copy.deepcopy(model), F.cross_entropy, x, t, deltas, "plea")
    for engine in ["vectorised", "sequential"]:
        model.zero_grad()
        obj = smooth(
            model,
            layers=[1],
            radius=0.2,
            samples=3,
            kind="plea",
            include_bias=True,
            seed=6,
            engine=engine,
        )
        obj(x, t).backward()
        assert_close(obj.last.loss, loss_ref)
        for n, p in model.named_parameters():
            assert_close(p.grad, grad_ref[n])


def test_same_generator_same_numbers():
    model = mlp()
    x, t = batch(model)
    runs = []
    for _ in range(2):
        obj = smooth(model, layers=[1, 2], radius=0.1, seed=0)
        runs.append(obj(x, t).detach())
    assert torch.equal(*runs)
    torch.manual_seed(3)
    a = smooth(model, layers=[1], radius=0.1)
    torch.manual_seed(3)
    b = smooth(model, layers=[1], radius=0.1)
    assert torch.equal(a(x, t), b(x, t))


def test_autocast_bf16_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    obj = smooth(model, layers=[1, 2], radius=0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = obj(x, t)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model[0].weight.grad.dtype == torch.float32
    plain = F.cross_entropy(model(x), t).detach()
    assert abs(float(obj.last.centre_loss) - float(plain)) < 0.05


def test_grad_scaler():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, t = torch.randn(8, 6), torch.randint(0, 3, (8,))
    obj = smooth(model, layers=[2], radius=0.01, seed=0)
    ref = copy.deepcopy(model)
    smooth(ref, layers=[2], radius=0.01, seed=0)(x, t).backward()
    scaler.scale(obj(x, t)).backward()
    scaler.unscale_(opt)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    scaler.step(opt)
    scaler.update()


def test_engine_auto_falls_back_when_vmap_cannot_run():
    class NoVmap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3).double()

        def forward(self, x):
            h = self.lin(x)
            return h * float(h.sum() > -1e9)  # .item()-style data dependence: vmap refuses

    model = NoVmap()
    x, t = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    obj = smooth(model, layers=[1], radius=0.1, seed=0)
    with pytest.warns(UserWarning, match="sequential"):
        loss = obj(x, t)
    ref = smooth(
        copy.deepcopy(model),
        F.cross_entropy,
        layers=[1],
        radius=0.1,
        seed=0,
        engine="sequential",
    )
    assert_close(loss, ref(x, t))
    assert obj.engine == "auto"  # what the user asked for is kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next call goes straight to the sequential engine, without warning
        obj(x, t)


def test_describe_says_when_the_loss_is_plain():
    assert smooth(mlp(), layers=[1], radius=0.0).describe().startswith("the plain loss: radius = 0")
    assert smooth(mlp(), layers=[1], radius=0.1, samples=0).describe().startswith("the plain loss: samples = 0")
    assert smooth(mlp(), layers=[1], radius=0.1).describe().startswith("pla over 4 points")


def test_unknown_kind_and_weightless_models_are_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        pleat.aggregate("foo", torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="has no weight layer"):
        smooth(nn.Sequential(nn.ReLU(), nn.Tanh()), layers="all", radius=0.1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(radius=-0.1), ValueError, "radius"),
        (dict(radius=math.nan), ValueError, "radius"),
        (dict(radius=math.inf), ValueError, "radius"),
        (dict(radius=0.1, samples=-1), ValueError, "samples"),
        (dict(radius=0.1, kind="sam"), ValueError, "kind"),
        (dict(radius=0.1, sharpness=0.0), ValueError, "sharpness"),
        (dict(radius=0.1, sharpness=-3.0), ValueError, "sharpness"),
        (dict(), ValueError, "radius is required"),
        (dict(radius=0.1, engine="gpu"), ValueError, "engine"),
        (dict(radius=0.1, samples=3, antithetic=True), ValueError, "even"),
        (dict(radius=0.1, generator=1), TypeError, "Generator"),
        (dict(kernel=pleat.Gaussian(1.0), radius=0.1), ValueError, "either"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        pleat.PartialLocalEntropy(mlp(), F.cross_entropy, layers=[1], **kwargs)


def test_bad_calls():
    model = mlp()
    x, t = batch(model)
    obj = pleat.PartialLocalEntropy(
        model, lambda out, t: F.cross_entropy(out, t, reduction="none"), layers=[1], radius=0.1
    )
    with pytest.raises(ValueError, match="scalar"):
        obj(x, t)
    obj = smooth(model, layers=[1], radius=0.1)
    with pytest.raises(ValueError, match="move them"):
        obj(x.to("meta"), t)
    with pytest.raises(ValueError, match="gamma"):
        pleat.Gaussian(0.0)


def test_box_draws_uniform_moments_and_range():
    out = torch.empty(400_000, dtype=torch.float64)
    pleat.Box(0.3).sample_(out, torch.Generator().manual_seed(0))
    assert out.abs().max() < 0.3
    n = out.numel()
    assert abs(float(out.mean())) < 4 * 0.3 / math.sqrt(3 * n)
    var = float(out.var())
    assert abs(var - pleat.Box(0.3).variance) < 4 * 0.3**2 * math.sqrt(4 / 45 / n)  # sd of the sample variance
    hist = torch.histc(out, bins=10, min=-0.3, max=0.3)
    assert ((hist - n / 10).abs() < 4 * math.sqrt(n / 10)).all()
    again = torch.empty_like(out)
    pleat.Box(0.3).sample_(again, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


@pytest.mark.parametrize("layers", [[3], [2], [1]])
def test_both_engines_give_plain_autocasts_loss_precision_under_bf16(layers):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    x, t = torch.randn(32, 6), torch.randint(0, 3, (32,))
    found = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(model(x), t)
        for engine in ("vectorised", "sequential"):
            obj = smooth(model, layers=layers, radius=0.05, samples=3, seed=1, engine=engine)
            loss = obj(x, t)
            assert loss.dtype == plain.dtype == torch.float32, engine  # the head alone once gave bfloat16
            found[engine] = obj.last.losses
            assert abs(obj.last.centre_loss.item() - plain.item()) < 1e-3  # bf16 rounding of the stacked products
    torch.testing.assert_close(found["vectorised"], found["sequential"], rtol=2e-3, atol=2e-3)
