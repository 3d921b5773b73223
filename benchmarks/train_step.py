"""seedgrid's training step vs transformers.Trainer, and the cost of keeping every logit.

    .venv/bin/python benchmarks/train_step.py [--model embedded:minilm] [--train 320] [--rounds 2]

1. Step time: seedgrid's trainer and ``transformers.Trainer`` on the same model, data, batches
   (Trainer is fed seedgrid's epoch order with a sequential sampler), learning rate, schedule,
   clipping; rounds alternate the two. Time per step = median interval between consecutive
   updates (seedgrid's ``on_update`` hook, Trainer's ``on_step_end`` callback), first step left
   out. Prints the ratio seedgrid / Trainer.
2. Logit capture: seedgrid's evaluation (every logit kept, gathered, put back in order) vs a
   forward pass over the same batches (examples sorted by length, as seedgrid does) that only
   counts correct predictions; and that same count in the split's own order, to show what
   sorting by length saves.

A benchmark, not a test: the numbers depend on the machine and its load; compare ratios.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from seedgrid import data
from seedgrid.config import config_from_dict
from seedgrid.model import load_model, load_tokenizer
from seedgrid.splits import load_splits
from seedgrid.tasks import get_task
from seedgrid.engine import evaluate
from seedgrid.trainer import train_cell


def make_config(model: str, n_train: int, n_val: int):
    return config_from_dict({
        "model": {"name": model, "max_length": 64},
        "task": {"name": "mr", "train_size": n_train, "validation_size": n_val},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 5e-5, "evals_per_epoch": 1},
        "runtime": {"eval_batch_size": 100},
    })


def seedgrid_step(cfg) -> float:
    stamps: list[float] = []
    train_cell(cfg, 1, 1, log=lambda _: None, on_update=lambda u, idx: stamps.append(time.perf_counter()))
    return statistics.median(np.diff(stamps))


def trainer_step(cfg) -> float:
    from datasets import Dataset
    from transformers import (DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments)

    task = get_task(cfg.task.name)
    train_split, _ = load_splits(cfg.task)
    tokenizer = load_tokenizer(cfg.model)
    encoded = data.encode(tokenizer, train_split, cfg.model.max_length)
    order = np.concatenate(data.global_batches(len(encoded), cfg.train.batch_size, 1, 0))
    rows = [{**encoded.features[i], "labels": int(encoded.labels[i])} for i in order]
    model = load_model(cfg.model, task.num_labels, cfg.train.dropout, 1)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    class InOrder(Trainer):  # the same batches as seedgrid: no reshuffling
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    args = TrainingArguments(
        output_dir="/tmp/seedgrid-bench-trainer", per_device_train_batch_size=cfg.train.batch_size,
        num_train_epochs=1, learning_rate=cfg.train.learning_rate,
        warmup_steps=round(cfg.train.warmup_ratio * len(rows) / cfg.train.batch_size),
        weight_decay=0.0, max_grad_norm=cfg.train.max_grad_norm, lr_scheduler_type="linear",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True)
    InOrder(model=model, args=args, train_dataset=Dataset.from_list(rows),
            data_collator=DataCollatorWithPadding(tokenizer), callbacks=[Stamp()]).train()
    return statistics.median(np.diff(stamps))


def evaluation_times(cfg, repeats: int) -> dict[str, float]:
    from accelerate import Accelerator

    task = get_task(cfg.task.name)
    _, val_split = load_splits(cfg.task)
    tokenizer = load_tokenizer(cfg.model)
    val = data.encode(tokenizer, val_split, cfg.model.max_length)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = accelerator.prepare(load_model(cfg.model, task.num_labels, 0.1, 1))
    batch = cfg.runtime.eval_batch_size

    by_length = np.argsort([len(f["input_ids"]) for f in val.features], kind="stable")

    def count_only(order: np.ndarray) -> int:  # the cheapest evaluation: nothing kept
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(val), batch):
                inputs = data.collate(tokenizer, val, order[start:start + batch], accelerator.device)
                labels = inputs.pop("labels")
                correct += int((model(**inputs).logits.argmax(-1) == labels).sum())
        return correct

    runs = {"capture": lambda: evaluate(model, tokenizer, val, accelerator, batch, task.num_labels),
            "count": lambda: count_only(by_length),
            "count, split order": lambda: count_only(np.arange(len(val)))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:minilm")
    parser.add_argument("--train", type=int, default=320, help="training examples (batch 16)")
    parser.add_argument("--validation", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cfg = make_config(args.model, args.train, args.validation)
    print(f"model {args.model}, {args.train} training examples (batch 16, max 64 tokens), "
          f"{torch.get_num_threads()} threads, device {'cuda' if torch.cuda.is_available() else 'cpu'}")

    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(seedgrid_step(cfg))
        theirs.append(trainer_step(cfg))
        print(f"round {r + 1}: seedgrid {ours[-1] * 1000:.0f} ms/step, "
              f"Trainer {theirs[-1] * 1000:.0f} ms/step")
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"step time ratio seedgrid / Trainer: {ratio:.3f} (goal <= 1.05)")

    t = evaluation_times(cfg, repeats=3)
    print(f"evaluation of {args.validation} examples: keeping every logit {t['capture']:.2f} s, "
          f"counting correct only {t['count']:.2f} s: capture overhead "
          f"{100 * (t['capture'] / t['count'] - 1):+.1f}% (goal <= 10%)")
    print(f"  the same count in the split's own order (no length sorting): "
          f"{t['count, split order']:.2f} s")
    print(f"peak memory (this process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
