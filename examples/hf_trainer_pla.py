"""PLA (or PLEA) inside Hugging Face's Trainer: a `compute_loss` override, the model computing its own loss.

    python examples/hf_trainer_pla.py [--steps 8] [--out hf_out]

A small GPT-2 built from a config (no weights to download) learns a synthetic sequence task; PLA smooths the MLP
blocks of its transformer layers, and a callback logs the layer temperature with the Trainer's own logs. With a
pretrained model, replace `tiny_gpt2()` by `from_pretrained(...)`.
"""

from __future__ import annotations

import argparse

import torch
import transformers

import pleat
from pleat.integrations.transformers import LayerTemperatureCallback


class SmoothedTrainer(transformers.Trainer):
    """A Trainer whose loss is pleat's: `model(**inputs)` at the centre and at `samples` perturbed points."""

    def __init__(self, *args, layers, radius: float, samples: int = 4, kind: str = "pla", **kwargs):
        super().__init__(*args, **kwargs)
        # loss_fn=None: the model's own loss (the batch holds labels), per point
        self.objective = pleat.PartialLocalEntropy(
            self.model, None, layers=layers, radius=radius, samples=samples, kind=kind
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.objective(**inputs)
        return (loss, self.objective.last.output) if return_outputs else loss


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(vocab_size=32, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(config)


class Sequences(torch.utils.data.Dataset):
    """Counting sequences modulo the vocabulary: each token is the previous one plus a per-sequence step."""

    def __init__(self, n: int = 64, length: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        start, step = torch.randint(0, 32, (n, 1), generator=g), torch.randint(1, 4, (n, 1), generator=g)
        self.ids = (start + step * torch.arange(length)) % 32

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.ids[i]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default="hf_out")
    parser.add_argument("--report-to", default="none", help="a Trainer reporter: none, tensorboard, wandb, ...")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    training = transformers.TrainingArguments(
        output_dir=args.out,
        max_steps=args.steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=2,
        save_strategy="no",
        report_to=[] if args.report_to == "none" else [args.report_to],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = SmoothedTrainer(
        model=tiny_gpt2(), args=training, train_dataset=Sequences(), layers=["transformer.h.*.mlp.*"], radius=0.01
    )
    # the temperature of the smoothed layers, attached first so that the reporters see it
    probe = LayerTemperatureCallback(layers=["transformer.h.*.mlp.*"]).attach(trainer)
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print(f"smoothed {len(trainer.objective.selected)} weight matrices; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"losses": losses, "metrics": result.metrics, "probe": probe}


if __name__ == "__main__":
    main()
