"""Step time of pleat's objective on a Hugging Face GPT-2 against plain training, per engine.

Run:  python benchmarks/hf.py                   # CPU, the numbers in the README
      python benchmarks/hf.py --device cuda     # on a GPU

A GPT-2 built from a config (4 layers, width 128, sequence 64, batch 16; no weights downloaded) computes its own
loss from labels; PLA (y = 4, R = 0.01) smooths the MLP blocks (`transformer.h.*.mlp.*`) or the attention
projections (`transformer.h.*.attn.*`). One step = zero_grad, loss, backward, AdamW step. Modes are timed
round-robin in one process and each median is divided by plain training's: ratios hold on a noisy machine.
vmap has no batching rule for the fused attention kernel (scaled_dot_product_attention) on the CPU and runs it
point by point; the last case builds the model with transformers' eager attention (plain matmuls, which vmap
batches) to show what that fallback costs.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import transformers

import pleat


def model_and_batch(device, attention: str):
    config = transformers.GPT2Config(
        vocab_size=512, n_positions=64, n_embd=128, n_layer=4, n_head=4, attn_implementation=attention
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).to(device)
    ids = torch.randint(0, 512, (16, 64), device=device)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids, "use_cache": False}


def stepper(mode: str, layers, device, attention: str):
    model, batch = model_and_batch(device, attention)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    obj = None
    if mode != "plain":
        obj = pleat.PartialLocalEntropy(model, None, layers=layers, radius=0.01, samples=4, engine=mode)

    def step():
        opt.zero_grad()
        loss = model(**batch).loss if obj is None else obj(**batch)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", message="There is a performance drop")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device}, {threads} threads")
    for name, layers, attention in (
        ("MLP blocks", ["transformer.h.*.mlp.*"], "sdpa"),
        ("attention projections", ["transformer.h.*.attn.*"], "sdpa"),
        ("MLP blocks, eager attention", ["transformer.h.*.mlp.*"], "eager"),
    ):
        steps = {m: stepper(m, layers, device, attention) for m in ("plain", "vectorised", "sequential")}
        for step in steps.values():  # warm up
            step()
        times: dict[str, list[float]] = {m: [] for m in steps}
        for _ in range(args.repeats):
            for m, step in steps.items():
                start = time.perf_counter()
                step()
                times[m].append(time.perf_counter() - start)
        plain = statistics.median(times["plain"])
        ratios = ", ".join(f"{m} {statistics.median(t) / plain:.2f}x" for m, t in times.items() if m != "plain")
        print(f"{name}: plain step {1000 * plain:.0f} ms; {ratios}")


if __name__ == "__main__":
    main()
