"""Models called with keyword arguments that compute their own loss, as Hugging Face models are."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import draw_like_pleat, smooth
from torch import nn

import pleat


class ToyLM(nn.Module):
    """`model(input_ids=..., attention_mask=..., labels=...)` -> {"logits", "loss" when labels are given}."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10)
        self.double()

    def forward(self, input_ids, attention_mask=None, labels=None):
        h = torch.tanh(self.mix(self.embed(input_ids)))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        logits = self.head(h)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return out


def toy_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 10, (3, 5), generator=g)
    mask = (torch.rand(3, 5, generator=g) > 0.2).double()
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 10, (3, 5), generator=g)}


def reference(model, batch, deltas, kind):
    """One deep copy per point, weights set in place, the model's own loss, combined by hand."""
    losses, grads = [], []
    for d in [{}] + deltas:
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n in d:
                    p.add_(d[n])
        loss = m(**batch)["loss"]
        grads.append(dict(zip([n for n, _ in m.named_parameters()], torch.autograd.grad(loss, list(m.parameters())))))
        losses.append(loss.detach())
    losses = torch.stack(losses)
    if kind == "pla":
        weights = torch.full_like(losses, 1 / len(losses))
        total = losses.mean()
    else:
        weights = torch.softmax(-losses, 0)
        total = -torch.logsumexp(-losses, 0) + torch.log(torch.tensor(float(len(losses)), dtype=losses.dtype))
    return total, {n: sum(w * g[n] for w, g in zip(weights, grads)) for n in grads[0]}, losses


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("kind", ["pla", "plea"])
def test_keyword_inputs_and_the_models_own_loss_match_a_naive_loop(engine, kind):
    model, batch = ToyLM(), toy_batch()
    deltas = draw_like_pleat(model, ["mix.weight"], 3, 0.3, seed=2)
    loss_ref, grad_ref, losses_ref = reference(model, batch, deltas, kind)
    obj = smooth(model, None, layers=["mix"], radius=0.3, samples=3, kind=kind, seed=2, engine=engine)
    loss = obj(**batch)
    loss.backward()
    torch.testing.assert_close(loss.detach(), loss_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.last.losses, losses_ref, rtol=1e-10, atol=1e-12)  # per point, for PLEA
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grad_ref[n], rtol=1e-10, atol=1e-12)
    assert obj.last.output["logits"].shape == (3, 5, 10)


def test_a_model_output_without_a_loss_says_what_to_do():
    model, batch = ToyLM(), toy_batch()
    batch.pop("labels")
    obj = smooth(model, None, layers=["mix"], radius=0.1, samples=2, seed=0)
    with pytest.raises(ValueError, match="pass the labels to the model"):
        obj(**batch)


def test_a_tiny_hugging_face_model_built_here():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).double()
    g = torch.Generator().manual_seed(3)
    batch = {
        "input_ids": torch.randint(0, 50, (4, 7), generator=g),
        "attention_mask": torch.ones(4, 7, dtype=torch.long),
        "labels": torch.randint(0, 3, (4,), generator=g),
    }
    layers = ["bert.encoder.layer.1.output.dense"]
    results = []
    for engine in ("vectorised", "sequential"):
        m = copy.deepcopy(model)
        obj = pleat.PartialLocalEntropy(
            m,
            None,
            layers=layers,
            radius=0.05,
            samples=3,
            kind="plea",
            engine=engine,
            generator=torch.Generator().manual_seed(5),
        )
        loss = obj(**batch)
        loss.backward()
        results.append((loss.detach(), m.bert.encoder.layer[1].output.dense.weight.grad.clone(), obj.last.losses))
    (a, ga, la), (b, gb, lb) = results
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-8, atol=1e-12)
    assert la.shape == (4,) and torch.isfinite(la).all() and (la[1:] != la[0]).all()


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).double()
    assert model.lm_head.weight is model.transformer.wte.weight  # the tied head
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 40, (3, 6), generator=g)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


@pytest.mark.parametrize("engine", ["vectorised", "sequential"])
@pytest.mark.parametrize("kind", ["pla", "plea"])
def test_gpt2_with_its_tied_head_matches_the_naive_loop(engine, kind):
    model, batch = tiny_gpt2()
    layers = ["transformer.h.*.mlp.*", "transformer.h.*.attn.*"]  # the MLP blocks and the attention projections
    names = [s.name for s in pleat.select(model, layers)]
    assert names == [
        f"transformer.h.{i}.{m}.weight"
        for i in (0, 1)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    deltas = draw_like_pleat(model, names, 2, 0.05, seed=8)
    loss_ref, grad_ref, losses_ref = reference(model, batch, deltas, kind)
    obj = smooth(model, None, layers=layers, radius=0.05, samples=2, kind=kind, seed=8, engine=engine)
    loss = obj(**batch)
    loss.backward()
    # transformers takes its causal-LM loss in float32 (logits.float()), even for a float64 model: float32 tolerances
    torch.testing.assert_close(loss.detach().double(), loss_ref.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(obj.last.losses.double(), losses_ref.double(), rtol=1e-6, atol=1e-7)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grad_ref[n], rtol=1e-5, atol=1e-7)


def test_keyword_inputs_with_a_loss_fn_but_no_targets_say_what_to_do():
    class Keywords(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 2)

        def forward(self, *, x):
            return self.proj(x)

    obj = pleat.PartialLocalEntropy(Keywords(), torch.nn.functional.cross_entropy, layers=[1], radius=0.1)
    with pytest.raises(ValueError, match=r"obj\(targets=t, \*\*inputs\)"):
        obj(x=torch.randn(3, 4))
    assert obj(x=torch.randn(3, 4), targets=torch.tensor([0, 1, 0])).ndim == 0
