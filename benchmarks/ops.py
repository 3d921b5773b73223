"""What one update of a pack dispatches, counted on the CPU: what a GPU would launch.

    .venv/bin/python benchmarks/ops.py                 # K = 1, 2, 4, 8, graph breaks at K = 4
    .venv/bin/python benchmarks/ops.py --k 1,8 --layers 2

A GPU runs a batch-16 cell bound by launching small kernels, so the kernels an update launches —
and whether they grow with K — decide what a pack can reach there. Here every aten operator one
full update of seedgrid's engine dispatches (forward, backward, clipping, the optimizer, zeroing
the gradients; views excluded: they launch nothing) is counted with a ``TorchDispatchMode``, for
a random BERT with BERT-large's structure (24 layers, 16 heads, 74 dropout sites, 49 layer norms;
the counts do not depend on the width, so it is 64 wide) and the packaged movie-review
sentences, batch 16. The baseline is a stock lone transformers cell in the same run: its own
``nn.Dropout``, SDPA attention, ``clip_grad_norm_`` and fused AdamW. Then the graph breaks of
the compiled forward and loss at K = 4 (``torch._dynamo.explain``; 0 means one graph).

Counts are exact and repeatable (no timing): the machine's load does not change them.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


class Count(TorchDispatchMode):
    """Every aten operator dispatched inside, views left out."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def bert_large_structure(folder: Path, layers: int) -> str:
    """A random BERT of BERT-large's structure (``layers`` layers, 16 heads), 64 wide, saved
    with MiniLM's tokenizer: a model folder seedgrid loads as a user's would be."""
    import transformers

    from seedgrid.model import resolve

    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve("embedded:minilm"))
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64,
                                     num_hidden_layers=layers, num_attention_heads=16,
                                     intermediate_size=128, num_labels=2)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def config(model: str, compile_: bool = False):
    from seedgrid.config import config_from_dict

    return config_from_dict({
        "model": {"name": model, "max_length": 64},
        "task": {"name": "mr", "train_size": 64, "validation_size": 16},
        "train": {"epochs": 1, "batch_size": 16, "evals_per_epoch": 1, "dropout": 0.1},
        "runtime": {"compile": compile_}}, source="ops")


def seedgrid_update(cfg, k: int) -> tuple[int, collections.Counter]:
    """aten ops of seedgrid's second update of a pack of ``k`` cells (the first warms up)."""
    from seedgrid import data, engine
    from seedgrid.resume import resume_cells

    cells = [(1, d) for d in range(1, k + 1)]
    pack = engine.setup(cfg, cells)
    runs = resume_cells(pack, [None] * k, lambda _: None, time.time())
    orders = [data.global_batches(len(pack.train), 16, run.seed_do, 0) for run in runs]
    engine.update_cells(pack, runs, 0, [o[0] for o in orders], [True] * k)
    with Count() as count:
        engine.update_cells(pack, runs, 1, [o[1] for o in orders], [True] * k)
    return count.total, count.ops


def stock_update(model_folder: str) -> int:
    """aten ops of a stock transformers cell's second update on the same batch shape."""
    import transformers

    from seedgrid.splits import load_splits
    from seedgrid.tasks import get_task

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_folder, attn_implementation="sdpa", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1).train()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_folder)
    split = load_splits(config(model_folder).task)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    texts = list(split.texts[0][:16])
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    labels = torch.as_tensor(np.asarray(split.labels[:16]))
    assert get_task("mr").num_labels == 2

    def step() -> None:
        loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    step()
    with Count() as count:
        step()
    return count.total


def graph_breaks(cfg, k: int) -> dict:
    """Graphs and breaks of the compiled forward and loss of a pack of ``k`` (dynamo's
    explain: tracing only, no code generated)."""
    import torch._dynamo

    from seedgrid import data, engine

    pack = engine.setup(cfg, [(1, d) for d in range(1, k + 1)])
    pack.model.train()
    index = np.arange(16 * k) % len(pack.train)
    inputs = data.collate(pack.tokenizer, pack.train, index, "cpu")
    labels = inputs.pop("labels")
    pack.masks.begin(0, 0)
    explained = torch._dynamo.explain(engine.forward_losses)(pack.model, inputs, labels, k,
                                                             pack.family)
    return {"graphs": explained.graph_count, "graph_breaks": explained.graph_break_count,
            "reasons": [str(b.reason)[:200] for b in explained.break_reasons]}


def main() -> None:
    import transformers

    from seedgrid import log

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", default="1,2,4,8")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--breaks-at", type=int, default=4, help="K of the graph-break count")
    args = parser.parse_args()
    log.configure(-1)
    torch.set_num_threads(1)
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "layers": args.layers}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = bert_large_structure(Path(tmp) / "bert", args.layers)
        stock = stock_update(model)
        print(json.dumps({"variant": "stock lone transformers cell", "ops": stock}), flush=True)
        counts = {}
        for k in [int(x) for x in args.k.split(",")]:
            counts[k], ops = seedgrid_update(config(model), k)
            print(json.dumps({"variant": f"seedgrid K={k}", "ops": counts[k],
                              "ratio_to_K1": round(counts[k] / counts[min(counts)], 3),
                              "ratio_to_stock": round(counts[k] / stock, 3),
                              "most": ops.most_common(6)}), flush=True)
        print(json.dumps({"variant": f"compiled forward+loss K={args.breaks_at}",
                          **graph_breaks(config(model, True), args.breaks_at)}), flush=True)


if __name__ == "__main__":
    main()
