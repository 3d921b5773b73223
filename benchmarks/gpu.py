"""How full does a GPU get with a pack of K cells as ONE stacked model (seedgrid's pack engine)?
For BERT-large (full fine-tuning, Dodge et al.) and a Llama-3.2-3B shape with LoRA (r 8 on q, v;
Bui et al.), K = 1, 4, 8: milliseconds per update split into forward+backward (with each cell's
dropout masks), per-cell clipping and the optimizer step; cell-updates per second; model FLOP
utilisation against 790 and 989 TFLOP/s (an H100/H200's dense bf16 peak, two conventions);
peak GPU memory; and what Dodge's 625-cell RTE grid (3 epochs, 467 updates a cell) costs at
the best rate measured. One command, cheap variants first, compiled last (a timeout loses
only them); under 8 minutes on an H100.

Prepared for a lent GPU machine (no hub there; random weights from the shapes' configs; it has
torch, transformers, accelerate, xarray, scipy, pandas and peft, not seedgrid's netCDF4,
cftime, submitit, tomli-w, which travel as wheels in the ignored folder ``.whl/``)::

    .venv/bin/pip download --only-binary=:all: --python-version 3.12 --no-deps \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        netCDF4 cftime submitit tomli-w -d .whl
    # then, on the GPU machine (the repository root, .whl carried):
    pip install -q --no-deps .whl/*.whl && PYTHONPATH=. python benchmarks/gpu.py | tee $OUT/gpu.log

On a CPU: ``python benchmarks/gpu.py --shapes tiny,tinyllama --k 1,2 --updates 3`` checks it
runs (the numbers mean nothing there). Each variant prints one JSON line; a variant that fails
prints its error and the run goes on.

MFU counts 6 · N · tokens per update for full fine-tuning and 4 · N · tokens with LoRA (the
body frozen: no weight gradients), N the parameters of one cell's model, tokens = K · 16 · seq.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "bert": ("bert", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096, "vocab_size": 30522}),
    "llama": ("llama", {"hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24,
                        "num_key_value_heads": 8, "intermediate_size": 8192,
                        "vocab_size": 128256, "max_position_embeddings": 2048}),
    "tiny": ("bert", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 128, "vocab_size": 1000}),
    "tinyllama": ("llama", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                            "num_key_value_heads": 2, "intermediate_size": 128,
                            "vocab_size": 1000, "max_position_embeddings": 256}),
}
#: Dodge et al.'s RTE grid: 625 cells, 2,490 training examples, batch 16, 3 epochs
RTE_CELL_UPDATES = 625 * 3 * -(-2490 // 16)


def build(shape: str, k: int, device: str):
    """The model of a pack of ``k`` cells, as the trainer builds it: stacked leaves (k > 1),
    each cell's dropout from seedgrid.dropout; its trained parameters, and per-cell N."""
    import torch
    import transformers

    from seedgrid import stacked
    from seedgrid.dropout import Masks, use_cell_dropout

    family, fields = SHAPES[shape]
    torch.manual_seed(0)
    if family == "bert":
        config = transformers.BertConfig(num_labels=2, hidden_dropout_prob=0.1,
                                         attention_probs_dropout_prob=0.1, **fields)
        model = transformers.BertForSequenceClassification(config)
    else:
        import peft

        config = transformers.LlamaConfig(num_labels=2, pad_token_id=0, **fields)
        with torch.device(device):
            model = transformers.LlamaForSequenceClassification(config).to(torch.bfloat16)
        model = peft.get_peft_model(model, peft.LoraConfig(
            task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.05,
            target_modules=["q_proj", "v_proj"]))
    n = sum(p.numel() for p in model.parameters())
    if k > 1:
        trained = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        stacked.stack(model, [trained] * k)  # K cells of the same shape: the same cost
    masks = Masks(list(range(1000, 1000 + k)))
    use_cell_dropout(model, masks)
    model.to(device).train()
    family_name = getattr(model.config, "model_type", "")
    return model, [p for p in model.parameters() if p.requires_grad], masks, n, family_name


def run(shape: str, spec: str, seq: int, updates: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from seedgrid import stacked

    compiled = spec.endswith("c")
    k = int(spec.rstrip("c").lstrip("K"))
    lora = SHAPES[shape][0] == "llama"
    started = time.perf_counter()
    model, params, masks, n, family = build(shape, k, device)
    optimizer = torch.optim.AdamW(params, lr=2e-5, fused=device == "cuda")
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)
    vocab = SHAPES[shape][1]["vocab_size"]
    ids = torch.randint(5, vocab, (k * 16, seq), generator=generator).to(device)
    labels = torch.randint(0, 2, (k * 16,), generator=generator).to(device)
    extra = stacked.fold_positions(family, ids)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def update(u: int) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        masks.begin(u, list(range(16)), 16, [seq] * k)
        with autocast:
            logits = forward(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits
        losses = F.cross_entropy(logits.float(), labels, reduction="none").view(k, -1).sum(1)
        (losses.sum() / 16).backward()
        sync()
        t1 = time.perf_counter()
        stacked.clip_per_cell(params, k, 1.0)
        sync()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    for u in range(3):  # warm-up (and compilation)
        update(u)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [update(3 + u) for u in range(updates)]
    parts = [1e3 * statistics.median(t[i] for t in times) for i in range(3)]
    ms = sum(parts)
    tflops = (4 if lora else 6) * n * k * 16 * seq / (ms / 1e3) / 1e12
    return {"shape": shape, "variant": spec, "cells": k, "seq": seq, "params_per_cell": n,
            "ms_update": round(ms, 1), "ms_fwd_bwd": round(parts[0], 1),
            "ms_clip": round(parts[1], 1), "ms_optimizer": round(parts[2], 1),
            "cell_updates_per_s": round(k / (ms / 1e3), 2), "tflops": round(tflops, 1),
            "mfu_790": round(tflops / 790, 3), "mfu_989": round(tflops / 989, 3),
            "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1)
            if device == "cuda" else None,
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="bert,llama")
    parser.add_argument("--k", default="1,4,8", help="pack sizes (eager)")
    parser.add_argument("--compiled", default="bert:8", help="shape:K,... also compiled, last")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}),
          flush=True)
    plan = [(s, f"K{k}") for s in args.shapes.split(",") for k in args.k.split(",")]
    plan += [(c.split(":")[0], f"K{c.split(':')[1]}c") for c in args.compiled.split(",")
             if c and c.split(":")[0] in args.shapes.split(",")]
    best: dict[str, float] = {}
    for shape, spec in plan:
        seq = args.seq if shape in ("bert", "llama") else 16
        try:
            result = run(shape, spec, seq, args.updates, device)
            print(json.dumps(result), flush=True)
            best[shape] = max(best.get(shape, 0.0), result["cell_updates_per_s"])
        except Exception as e:  # one failing variant must not lose the others
            print(json.dumps({"shape": shape, "variant": spec,
                              "error": f"{type(e).__name__}: {str(e)[:300]}"}), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    if "bert" in best:
        hours = RTE_CELL_UPDATES / best["bert"] / 3600
        print(json.dumps({"dodge_rte_grid": {"cell_updates": RTE_CELL_UPDATES,
                                             "best_cell_updates_per_s": best["bert"],
                                             "gpu_hours": round(hours, 2)}}), flush=True)


if __name__ == "__main__":
    main()
