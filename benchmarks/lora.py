"""LoRA against full fine-tuning of the same decoder classifier: time per update and peak memory.

    .venv/bin/python benchmarks/lora.py [--hidden 256] [--layers 4] [--updates 20]

A Llama-shaped classifier (random weights from its config; MiniLM's 30,522-token vocabulary),
batch 16 x 64 tokens, AdamW, on this machine's CPU (or its GPU). Each variant runs in its own
process, so that peak memory (ru_maxrss) is its own: full fine-tuning, then LoRA rank 8 on
q_proj and v_proj (seedgrid's model.load path: the adapters drawn from seed_wi). Prints ms per
update (median of the updates after two warm-up ones), trainable parameters, peak memory, and
the ratios LoRA / full.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def one(variant: str, hidden: int, layers: int, updates: int) -> dict:
    import torch
    import transformers

    from seedgrid.config import LoraConfig
    from seedgrid.model import _with_lora, optimizer_groups

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = transformers.LlamaConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1), num_key_value_heads=max(hidden // 256, 1),
        intermediate_size=hidden * 4, num_labels=2, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.LlamaForSequenceClassification(config)
    if variant == "lora":
        model = _with_lora(model, LoraConfig(rank=8, alpha=16,
                                             target_modules=["q_proj", "v_proj"]), seed_wi=1)
    model.to(device).train()
    optimizer = torch.optim.AdamW(optimizer_groups(model, 0.01), lr=1e-4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    inputs = torch.randint(1, 30522, (16, 64), device=device)
    labels = torch.randint(0, 2, (16,), device=device)
    times = []
    for _ in range(updates + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(input_ids=inputs).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"ms_per_update": 1000 * statistics.median(times[2:]), "trainable": trainable,
            "total": sum(p.numel() for p in model.parameters()),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one(args.variant, args.hidden, args.layers, args.updates)))
        return
    results = {}
    for variant in ("full", "lora"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--hidden",
                              str(args.hidden), "--layers", str(args.layers), "--updates",
                              str(args.updates)], capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:5s} {r['ms_per_update']:8.1f} ms/update, {r['trainable']:>10,} of "
              f"{r['total']:,} parameters train, peak memory {r['peak_mb']:.0f} MB ({r['device']})")
    full, lora = results["full"], results["lora"]
    print(f"LoRA / full: time {lora['ms_per_update'] / full['ms_per_update']:.2f}, peak memory "
          f"{lora['peak_mb'] / full['peak_mb']:.2f}, trainable parameters "
          f"{lora['trainable'] / full['trainable']:.4f}")


if __name__ == "__main__":
    main()
