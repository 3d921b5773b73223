"""How full does a GPU get with K cells at once? Per-update time, model FLOP utilisation and
throughput for K = 1, 2, 4, 8 cells packed on one GPU (each its own process, as
``cells_per_gpu``/``--pack`` runs them), beside the one-model ceiling (the same tokens as K
cells through ONE model, batch 16·K), all in one run.

    .venv/bin/python benchmarks/gpu.py                          # BERT-large shape, 128 tokens
    .venv/bin/python benchmarks/gpu.py --shape minilm --seq 64
    .venv/bin/python benchmarks/gpu.py --shape tiny --k 1,2 --updates 5   # a check on a CPU

Random weights from the shape's config (no hub), random token ids, batch 16 × ``--seq``
tokens, AdamW (fused), bf16 autocast on a GPU; each measurement runs in fresh processes that
start together and time ``--updates`` updates after 3 warm-up ones. MFU = 6 · parameters ·
tokens per second / ``--peak-tflops`` (default 790, the bf16 dense figure issue 11's H100
table used). Prints, per K: ms per update of each cell, cells' updates per second in total,
the ratio to one cell alone, MFU and the peak GPU memory of one process. To measure the
packed processes with CUDA MPS, start it first (``nvidia-cuda-mps-control -d``; stop it with
``echo quit | nvidia-cuda-mps-control``) and run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SHAPES = {  # BertConfig fields
    "bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "intermediate_size": 4096},
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 128},
}


def one(shape: str, batch: int, seq: int, updates: int, start_at: float) -> dict:
    """One process: a plain training loop of a sequence classifier; its timings."""
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = transformers.BertConfig(vocab_size=30522, num_labels=2, **SHAPES[shape])
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device == "cuda")
    inputs = torch.randint(1, 30522, (batch, seq), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def update() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(input_ids=inputs).logits.float(),
                                                     labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        update()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    while time.time() < start_at:  # the K processes time the same window
        time.sleep(0.01)
    times = []
    for _ in range(updates):
        started = time.perf_counter()
        update()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {"ms": 1000 * statistics.median(times), "params": sum(p.numel() for p in
                                                                   model.parameters()),
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def run(k: int, batch: int, args) -> list[dict]:
    """``k`` processes at once, each training ``batch`` examples an update."""
    start_at = time.time() + 30 + 5 * k  # after every process has built its model
    procs = [subprocess.Popen([sys.executable, __file__, "--one", json.dumps(
        [args.shape, batch, args.seq, args.updates, start_at])], stdout=subprocess.PIPE,
        text=True) for _ in range(k)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="bert-large")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--k", default="1,2,4,8", help="cells at once, comma-separated")
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*json.loads(args.one))))
        return
    base = None
    print(f"{args.shape}, batch {args.batch} x {args.seq} tokens, {args.updates} updates timed")
    variants = []
    for k in [int(x) for x in args.k.split(",")]:
        variants.append((f"K = {k} packed", k, args.batch))
        if k > 1:  # (K = 1: the ceiling is the lone cell itself)
            variants.append((f"K = {k} ceiling (one model, batch {args.batch * k})", 1,
                             args.batch * k))
    for label, procs, batch in variants:
        results = run(procs, batch, args)
        cells_per_s = sum(batch / args.batch * 1000 / r["ms"] for r in results)
        base = base or cells_per_s
        tokens_per_s = cells_per_s * args.batch * args.seq
        mfu = 6 * results[0]["params"] * tokens_per_s / (args.peak_tflops * 1e12)
        peak = results[0]["peak_gb"]
        print(f"{label:44s} {statistics.mean(r['ms'] for r in results):8.1f} ms/update, "
              f"{cells_per_s:7.2f} cell-updates/s ({cells_per_s / base:4.2f}x one cell), "
              f"MFU {100 * mfu:5.1f}%, peak {'n/a' if peak is None else f'{peak:.1f} GB'}"
              f" ({results[0]['device']})")


if __name__ == "__main__":
    main()
