"""Train one cell (seed_wi, seed_do) with Accelerate and return it as a shard Dataset.

Reads top to bottom: set up (data, model from seed_wi, optimizer, schedule) → evaluate before
training → for each global batch of seed_do's order: forward/backward over this process's
micro-batches, one optimizer update, evaluate when due → the cell as a Dataset.

Run on one process (``python -m seedgrid run``) or several (``torchrun``, ``accelerate launch``,
or a multi-GPU SLURM task): each process takes its slice of every global batch
(:mod:`seedgrid.data`), so the cell sees the same updates whatever the number of processes or the
gradient-accumulation split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
import time
from importlib import metadata
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from transformers import get_linear_schedule_with_warmup

import seedgrid
from seedgrid import data, metrics, seeds
from seedgrid.checkpoint import Checkpointer, rng_state, set_rng_state, signals_held
from seedgrid.config import Config
from seedgrid.model import load_model, load_tokenizer
from seedgrid.store import cell_dataset
from seedgrid.tasks import get_task, load_splits

#: called on every process after each update with (update, example positions this process used)
OnUpdate = Callable[[int, np.ndarray], None]

#: a mean cross-entropy above this (nats per example: the gold label's probability below
#: e^-100) means training has exploded; the cell is marked diverged, as for a NaN loss
EXPLODED_LOSS = 100.0


def _print_now(line: str) -> None:
    print(line, flush=True)  # progress reaches a SLURM log file as it happens


def train_cell(cfg: Config, seed_wi: int, seed_do: int, *, on_update: OnUpdate | None = None,
               checkpointer: Checkpointer | None = None, log: Callable[[str], None] = _print_now,
               stop_fraction: float | None = None):
    """Fine-tune one cell and return its shard (an ``xarray.Dataset``; main process only).

    With a ``checkpointer``, the cell resumes from its checkpoint if there is one, and binds its
    state so that a preemption handler can save it; with ``[runtime] checkpoint_every_evals``
    it also saves after every N-th evaluation. With ``stop_fraction`` (early stopping, see
    seedgrid.policy) it stops after the last evaluation at or before that fraction of training,
    saves its checkpoint and returns a shard with status ``stopped``; trained again without it,
    the cell continues from there. On processes other than the main one, returns None.
    """
    started = time.time()
    if cfg.runtime.deterministic:
        _deterministic()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        # One scheduler step per update: our batches are already global (see seedgrid.data).
        dataloader_config=DataLoaderConfiguration(split_batches=True))
    rank, world = accelerator.process_index, accelerator.num_processes
    say = log if accelerator.is_main_process else (lambda _: None)
    name = f"[wi={seed_wi} do={seed_do}]"

    # --- data -----------------------------------------------------------------------------
    task = get_task(cfg.task.name)
    tokenizer, train, val = _encoded_data(cfg)
    per_epoch = data.updates_per_epoch(len(train), cfg.train.batch_size)
    total_updates = per_epoch * cfg.train.epochs
    eval_at = data.evaluation_updates(per_epoch, cfg.train.epochs, cfg.train.evals_per_epoch)
    stop_at = None if stop_fraction is None else data.stop_update(eval_at, stop_fraction)

    # --- model: pretrained body, head from seed_wi -------------------------------------------
    model = load_model(cfg.model, task.num_labels, cfg.train.dropout, seed_wi)
    no_decay = ("bias", "LayerNorm.weight", "layernorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": cfg.train.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    # Fused AdamW: one kernel for all parameters (transformers.Trainer's default too).
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.learning_rate, fused=True)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(cfg.train.warmup_ratio * total_updates), total_updates)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    # Dropout draws from torch's global RNG: seeded after the model is built (Dodge et al.).
    torch.manual_seed(seeds.dropout_seed(cfg.train.dropout_seed, seed_wi, seed_do, rank))

    say(f"{name} {task.name}: {len(train)} train / {len(val)} validation examples, "
        f"{total_updates} updates, {len(eval_at)} evaluations, {world} process(es)")

    def evaluate() -> np.ndarray:
        return _evaluate(model, tokenizer, val, accelerator, cfg.runtime.eval_batch_size,
                         task.num_labels)

    # --- progress: fresh, or where the checkpoint left it ------------------------------------
    logits = np.full((len(eval_at), len(val), task.num_labels), np.nan, np.float32)
    train_loss = np.full(total_updates, np.nan, np.float32)
    update, evaluated, spent, rng = 0, 0, 0.0, rng_state()
    saved = checkpointer.load() if checkpointer else None
    if saved is not None and (saved["config_hash"], saved["seed_wi"], saved["seed_do"]) != (
            cfg.hash, seed_wi, seed_do):
        say(f"{name} ignoring {checkpointer.path}: it is of another config or cell")
        saved = None
    if saved is not None:
        accelerator.unwrap_model(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if accelerator.scaler is not None and saved.get("scaler"):
            accelerator.scaler.load_state_dict(saved["scaler"])
        logits, train_loss = saved["logits"].numpy(), saved["train_loss"].numpy()
        update, evaluated, spent, rng = (saved[k] for k in ("update", "evaluated", "wall_time_s",
                                                              "rng"))
        set_rng_state(rng)
        say(f"{name} resumed from {checkpointer.path} at update {update}/{total_updates}")

    def state() -> dict:  # consistent between updates: see seedgrid.checkpoint
        return {"seed_wi": seed_wi, "seed_do": seed_do, "config_hash": cfg.hash,
                "model": accelerator.unwrap_model(model).state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
                "update": update, "evaluated": evaluated, "rng": rng,
                # tensors, not numpy arrays: the file loads with weights_only=True
                "logits": torch.from_numpy(logits.copy()),
                "train_loss": torch.from_numpy(train_loss.copy()),
                "wall_time_s": spent + time.time() - started}

    if checkpointer is not None and accelerator.is_main_process:  # submitit signals rank 0 only
        checkpointer.bind(state)
    due = int(np.searchsorted(eval_at, update, side="right"))  # evaluations due by now
    if evaluated < due:  # before training, or interrupted during the evaluation
        logits[due - 1] = evaluate()
        evaluated = due
    status = "done"

    # --- training: one optimizer update per global batch -------------------------------------
    for epoch in range(update // per_epoch, cfg.train.epochs):
        for b, batch in enumerate(data.global_batches(len(train), cfg.train.batch_size, seed_do,
                                                      epoch)):
            if epoch * per_epoch + b < update:
                continue  # done before a restart
            if update == stop_at:  # early stopping: keep the state, so that it can continue
                if checkpointer is not None and accelerator.is_main_process:
                    checkpointer.save()
                status = "stopped"
                say(f"{name} stopped at update {update} (early stopping)")
                break
            model.train()
            micro = data.local_micro_batches(batch, rank, world, cfg.runtime.gradient_accumulation)
            loss_sum = torch.zeros((), device=accelerator.device)
            for i, part in enumerate(micro):
                # An empty share still runs (on one example, weight 0) to join the all-reduce.
                weight = 0.0 if len(part) == 0 else 1.0
                inputs = data.collate(tokenizer, train, part if len(part) else batch[:1],
                                      accelerator.device)
                last = i == len(micro) - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(model):
                    out = model(**{k: v for k, v in inputs.items() if k != "labels"})
                    loss = weight * F.cross_entropy(out.logits.float(), inputs["labels"],
                                                    reduction="sum")
                    # DDP averages gradients over processes: scale so that the result is the
                    # gradient of the mean loss over the whole global batch.
                    accelerator.backward(loss * world / len(batch))
                loss_sum += loss.detach()
            with signals_held():  # a checkpoint sees the state before or after this update
                if cfg.train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                train_loss[update] = accelerator.reduce(loss_sum, "sum").item() / len(batch)
                update += 1
                rng = rng_state()  # what the next update's dropout starts from
            if on_update is not None:
                on_update(update, np.concatenate(micro))

            if not train_loss[update - 1] <= EXPLODED_LOSS:  # NaN fails this comparison too
                status = "diverged"  # keep what was evaluated so far; the rest stays NaN
                say(f"{name} diverged at update {update}: loss {train_loss[update - 1]}")
                break
            if update in eval_at:
                j = int(np.searchsorted(eval_at, update))
                logits[j] = evaluate()
                evaluated = j + 1
                value = metrics.score(logits[j], val.labels, task.metric)
                say(f"{name} update {update}/{total_updates} (epoch {update / per_epoch:.2f}) "
                    f"loss {train_loss[update - 1]:.4f} {task.metric} {value:.4f}")
                every = cfg.runtime.checkpoint_every_evals
                if (checkpointer is not None and accelerator.is_main_process and every
                        and j % every == 0 and update < total_updates):
                    checkpointer.save_if_possible()  # one writer: states are equal on all ranks
        if status != "done":
            break

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None
    return cell_dataset(
        seed_wi=seed_wi, seed_do=seed_do, logits=logits, labels=val.labels,
        example_ids=val.ids, steps=eval_at, epochs=eval_at / per_epoch, train_loss=train_loss,
        status=status, wall_time_s=spent + time.time() - started,
        attrs={
            "task": task.name, "metric": task.metric, "model": cfg.model.name,
            "majority_baseline": metrics.majority_baseline(val.labels, task.metric),
            "config_hash": cfg.hash,
            "config": cfg.to_toml(), "updates_per_epoch": per_epoch, "n_train": len(train),
            "num_processes": world, "gradient_accumulation": cfg.runtime.gradient_accumulation,
            "deterministic": cfg.runtime.deterministic, "host": socket.gethostname(),
            "device": _device_name(accelerator.device), "torch_threads": torch.get_num_threads(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **_versions(),
        })


_DATA: dict[str, tuple] = {}


def _encoded_data(cfg: Config) -> tuple:
    """(tokenizer, train, validation), loaded once per process for the cells of a task."""
    key = json.dumps([dataclasses.asdict(cfg.task), dataclasses.asdict(cfg.model)], sort_keys=True)
    if key not in _DATA:
        train_split, val_split = load_splits(cfg.task)
        tokenizer = load_tokenizer(cfg.model)
        _DATA.clear()  # one task trains one config: keep one entry
        _DATA[key] = (tokenizer, data.encode(tokenizer, train_split, cfg.model.max_length),
                      data.encode(tokenizer, val_split, cfg.model.max_length))
    return _DATA[key]


def _evaluate(model, tokenizer, val: data.Encoded, accelerator: Accelerator, batch_size: int,
              num_labels: int) -> np.ndarray:
    """Logits of every validation example, (example, class), identical on every process.

    Examples are sorted by length (less padding) and each process evaluates a contiguous share;
    the shares are gathered and put back in the split's order.
    """
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    order = np.argsort([len(f["input_ids"]) for f in val.features], kind="stable")
    shares = np.array_split(order, world)
    mine = shares[rank]
    width = len(shares[0])  # array_split: the first share is the longest
    out = torch.full((width, num_labels), float("nan"), device=accelerator.device)
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            inputs = data.collate(tokenizer, val, mine[start:start + batch_size], accelerator.device)
            inputs.pop("labels")
            out[start:start + batch_size] = model(**inputs).logits.float()
    gathered = accelerator.gather(out).cpu().numpy().reshape(world, width, -1)
    logits = np.empty((len(val), num_labels), np.float32)
    for r, share in enumerate(shares):  # a loop over processes, not examples
        logits[share] = gathered[r, :len(share)]
    return logits


def _deterministic() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _versions() -> dict[str, str]:
    names = ("torch", "transformers", "accelerate", "numpy", "xarray")
    return {"seedgrid_version": seedgrid.__version__,
            **{f"{n}_version": metadata.version(n) for n in names}}
