"""How full does a GPU get with a pack of K cells as ONE stacked model (seedgrid's engine)?

    python benchmarks/gpu.py | tee $OUT/gpu.log          # on a GPU: every variant, < 8 min
    python benchmarks/gpu.py --smoke                     # on a CPU: tiny shapes, checks it runs

Variants, cheap first, compiled last (a timeout loses only them), each in this process:

- ``stock``: a stock lone transformers cell — nn.Dropout, SDPA attention, clip_grad_norm_,
  fused AdamW — the baseline every other line is compared with;
- ``K1``: seedgrid's lone cell (its masks, its clipping); ``K4``, ``K8``: packs, eager;
  ``K8nodrop``: a pack of 8 without dropout; ``K4c``, ``K8c``: compiled (``[runtime] compile``:
  the forward and loss as one graph);
- Llama-3.2-3B's shape with LoRA r 8 on q, v (Bui et al.): ``K1``, ``K4``, ``K8``.

For each: milliseconds per update split into forward+backward, clipping and the optimizer;
cell-updates per second; model FLOP utilisation against 790 and 989 TFLOP/s (an H100/H200's
dense bf16 peak, two conventions; 6·N·tokens full fine-tuning, 4·N·tokens with LoRA); host
syncs in one update (``torch.cuda.set_sync_debug_mode``); peak GPU memory beside seedgrid's
estimate (:mod:`seedgrid.memory`); the time to build the pack and to compile it. Then what
Dodge et al.'s 625-cell RTE grid (3 epochs of 2,490 examples, batch 16, 31 evaluations of 277
examples a cell) costs at each BERT variant's rate, with building, compiling and evaluating
included. Every variant prints one JSON line; the command exits 1 if any variant failed.

Needs torch and transformers (peft for LoRA), not seedgrid's netCDF4, cftime, tomli-w, submitit
or datasets: it runs from a checkout on a GPU node (``PYTHONPATH=.``) with random weights from
the shapes' configs, no hub. The kernels are seedgrid's own: ``seedgrid.engine.pack_model``,
``forward_losses``, ``adamw`` and ``seedgrid.stacked.clip_per_cell``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
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
PLAN = {"bert": ["stock", "K1", "K4", "K8", "K8nodrop", "K4c", "K8c"],
        "llama": ["K1", "K4", "K8"]}
SMOKE = {"tiny": ["stock", "K1", "K2", "K2nodrop", "K2c"], "tinyllama": ["K1", "K2"]}
#: Dodge et al.'s RTE grid: 625 cells of 3 epochs of ceil(2490 / 16) updates, 31 evaluations of
#: the 277 validation examples
RTE = {"cells": 625, "updates": 3 * -(-2490 // 16), "evaluations": 31, "validation": 277}
BATCH = 16


def build(shape: str, spec: str, device: str):
    """The model of the variant (its trained parameters, masks, N per cell): seedgrid's pack
    (``K<k>``), or a stock transformers cell (``stock``)."""
    import torch
    import transformers

    from seedgrid import engine, memory

    family, fields = SHAPES[shape]
    k = 1 if spec == "stock" else int(spec.lstrip("K").rstrip("cnodrop"))
    dropout = 0.0 if "nodrop" in spec else 0.1
    torch.manual_seed(0)
    if family == "bert":
        config = transformers.BertConfig(num_labels=2, hidden_dropout_prob=dropout,
                                         attention_probs_dropout_prob=dropout,
                                         attn_implementation="sdpa", **fields)
        with torch.device(device):
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
    sizes = {train: sum(p.numel() * p.element_size() for p in model.parameters()
                        if p.requires_grad == train) for train in (True, False)}
    sizes["cast"] = memory.float32_matmul_bytes(model)
    masks = None
    if spec != "stock":
        trained = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        masks = engine.pack_model(model, [trained] * k, list(range(1000, 1000 + k)),
                                  lora=family == "llama")
    model.to(device).train()
    return model, masks, k, n, sizes, getattr(model.config, "model_type", family)


def run(shape: str, spec: str, seq: int, updates: int, device: str) -> dict:
    """Build, warm up (compile), time ``updates`` updates of the variant, count its host
    syncs, time an evaluation batch: its JSON line."""
    import torch

    from seedgrid import engine, memory, stacked

    started = time.perf_counter()
    model, masks, k, n, sizes, family = build(shape, spec, device)
    built = time.perf_counter() - started
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = engine.adamw(model, 0.0, 2e-5) if masks is not None else \
        torch.optim.AdamW(params, lr=2e-5, fused=True)
    forward = torch.compile(engine.forward_losses, fullgraph=True) if spec.endswith("c") \
        else engine.forward_losses
    generator = torch.Generator().manual_seed(0)
    vocab = SHAPES[shape][1]["vocab_size"]
    ids = torch.randint(5, vocab, (k * BATCH, seq), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (k * BATCH,), generator=generator).to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def update(u: int, timed: bool = True) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        if masks is not None:
            masks.begin(u, 0)
        with autocast:
            losses = forward(model, inputs, labels, k, family)
        (losses.sum() / BATCH).backward()
        timed and sync()
        t1 = time.perf_counter()
        if masks is None:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        else:
            stacked.clip_per_cell(params, k, 1.0)
        timed and sync()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        timed and sync()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    update(0)  # the first update compiles (compiled variants)
    compiled = time.perf_counter() - started - built
    for u in range(1, 3):
        update(u)
    syncs = host_syncs(lambda: update(3, timed=False), device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [update(4 + u) for u in range(updates)]
    parts = [1e3 * statistics.median(t[i] for t in times) for i in range(3)]
    ms = sum(parts)
    lora = SHAPES[shape][0] == "llama"
    tflops = (4 if lora else 6) * n * k * BATCH * seq / (ms / 1e3) / 1e12
    fields = SHAPES[shape][1]
    estimate = memory.pack_gb(k, sizes[True], sizes[False], fields["num_hidden_layers"],
                              fields["hidden_size"], fields["num_attention_heads"], BATCH, seq,
                              device == "cuda", sizes["cast"])
    return {"shape": shape, "variant": spec, "cells": k, "seq": seq, "params_per_cell": n,
            "ms_update": round(ms, 1), "ms_fwd_bwd": round(parts[0], 1),
            "ms_clip": round(parts[1], 1), "ms_optimizer": round(parts[2], 1),
            "cell_updates_per_s": round(k / (ms / 1e3), 2), "tflops": round(tflops, 1),
            "mfu_790": round(tflops / 790, 3), "mfu_989": round(tflops / 989, 3),
            "host_syncs_per_update": syncs,
            "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if device == "cuda" else None, "estimate_gb": round(estimate.total_gb, 2),
            "build_s": round(built, 1), "compile_s": round(compiled, 1),
            "ms_eval_example": round(eval_ms(model, masks, ids, k, family, autocast, sync), 3)}


def host_syncs(step, device: str) -> int | None:
    """Synchronising CUDA calls one ``step`` makes (torch's sync debug mode warns at each)."""
    import torch

    if device != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def eval_ms(model, masks, ids, k: int, family: str, autocast, sync) -> float:
    """Milliseconds per validation example and cell of an evaluation batch (no grad)."""
    import torch

    from seedgrid import stacked

    model.eval()
    with torch.no_grad(), autocast:
        for _ in range(2):
            sync()
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=torch.ones_like(ids),
                  **stacked.fold_positions(family, ids))
            sync()
    model.train()
    return 1e3 * (time.perf_counter() - t0) / ids.shape[0]


def rte_grid(result: dict) -> dict:
    """Dodge et al.'s RTE grid at a variant's rate, in GPU-hours: per pack its build, its
    compilation, its updates and its evaluations."""
    k = result["cells"]
    packs = -(-RTE["cells"] // k)
    per_pack = (result["build_s"] + result["compile_s"] + RTE["updates"] * result["ms_update"] / 1e3
                + RTE["evaluations"] * RTE["validation"] * k * result["ms_eval_example"] / 1e3)
    return {"variant": result["variant"], "packs": packs, "s_per_pack": round(per_pack, 1),
            "gpu_hours": round(packs * per_pack / 3600, 2)}


def main() -> int:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on a CPU, 2 updates")
    parser.add_argument("--only", default="", help="shape:variant,... (default: every one)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = SMOKE if args.smoke else PLAN
    todo = [(s, v) for s, vs in plan.items() for v in vs]
    if args.only:
        todo = [tuple(x.split(":", 1)) for x in args.only.split(",")]
    seq, updates = (16, 2) if args.smoke else (args.seq, args.updates)
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}),
          flush=True)
    failed = 0
    for shape, spec in todo:
        try:
            result = run(shape, spec, seq, updates, device)
            print(json.dumps(result), flush=True)
            if SHAPES[shape][0] == "bert":
                print(json.dumps({"dodge_rte_grid": rte_grid(result)}), flush=True)
        except Exception as e:  # one failing variant must not lose the others' numbers
            failed += 1
            print(json.dumps({"shape": shape, "variant": spec,
                              "error": f"{type(e).__name__}: {str(e)[:300]}"}), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    if failed:
        print(f"gpu.py: {failed} of {len(todo)} variant(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
