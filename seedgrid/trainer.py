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
from seedgrid.checkpoint import Checkpointer, Progress, rng_state, signals_held
from seedgrid.config import Config
from seedgrid.log import logger
from seedgrid.model import load_model, load_tokenizer, optimizer_groups
from seedgrid.store import cell_dataset
from seedgrid.tasks import Task, get_task, load_splits

#: called on every process after each update with (update, example positions this process used)
OnUpdate = Callable[[int, np.ndarray], None]

#: a mean cross-entropy above this (nats per example: the gold label's probability below
#: e^-100; regression: a squared error of 100) means training has exploded; the cell is marked
#: diverged, as for a NaN loss
EXPLODED_LOSS = 100.0


def _loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed over the examples: cross-entropy, or the squared error of the one output of a
    regression task (as transformers' problem_type "regression")."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
    return F.cross_entropy(logits, labels, reduction="sum")


def train_cell(cfg: Config, seed_wi: int, seed_do: int, *, on_update: OnUpdate | None = None,
               checkpointer: Checkpointer | None = None, log: Callable[[str], None] = logger.info,
               stop_fraction: float | None = None):
    """Fine-tune one cell and return its shard (an ``xarray.Dataset``; main process only).

    With a ``checkpointer``, the cell resumes from its checkpoint if there is one, and binds its
    state so that a preemption handler can save it; with ``[runtime] checkpoint_every_evals``
    it also saves after every N-th evaluation. With ``stop_fraction`` (early stopping, see
    seedgrid.early_stop_run) it stops after the last evaluation at or before that fraction of
    training, saves its checkpoint and returns a shard with status ``stopped``; trained again
    without it, the cell continues from there. On processes other than the main one, returns
    None.
    """
    started = time.time()
    cell = _setup(cfg, seed_wi, seed_do)
    main = cell.accelerator.is_main_process
    say = log if main else (lambda _: None)
    name = f"[wi={seed_wi} do={seed_do}]"
    stop_at = None if stop_fraction is None else data.stop_update(cell.eval_at, stop_fraction)
    say(f"{name} {cell.task.name}: {len(cell.train)} train / {len(cell.val)} validation "
        f"examples, {cell.total_updates} updates, {len(cell.eval_at)} evaluations, "
        f"{cell.world} process(es)")

    # --- progress: fresh, or where the checkpoint left it ------------------------------------
    progress = _resume(cell, checkpointer, say, name, started)
    if checkpointer is not None and main:  # submitit signals rank 0 only
        checkpointer.bind(lambda: {**cell.state(), **progress.state()})
    due = int(np.searchsorted(cell.eval_at, progress.update, side="right"))  # due by now
    if progress.evaluated < due:  # before training, or interrupted during the evaluation
        progress.logits[due - 1] = cell.evaluate()
        progress.evaluated = due
    status = "done"

    # --- training: one optimizer update per global batch -------------------------------------
    for epoch in range(progress.update // cell.per_epoch, cfg.train.epochs):
        for b, batch in enumerate(data.global_batches(len(cell.train), cfg.train.batch_size,
                                                      seed_do, epoch)):
            if epoch * cell.per_epoch + b < progress.update:
                continue  # done before a restart
            if progress.update == stop_at:  # early stopping: keep the state, to continue
                if checkpointer is not None and main:
                    checkpointer.save()
                status = "stopped"
                say(f"{name} stopped at update {progress.update} (early stopping)")
                break
            used = _update(cell, batch, progress)
            if on_update is not None:
                on_update(progress.update, used)
            loss = progress.train_loss[progress.update - 1]
            if not loss <= EXPLODED_LOSS:  # NaN fails this comparison too
                status = "diverged"  # keep what was evaluated so far; the rest stays NaN
                say(f"{name} diverged at update {progress.update}: loss {loss}")
                break
            if progress.update in cell.eval_at:
                j = int(np.searchsorted(cell.eval_at, progress.update))
                progress.logits[j] = cell.evaluate()
                progress.evaluated = j + 1
                value = metrics.score(progress.logits[j], cell.val.labels, cell.task.metric)
                say(f"{name} update {progress.update}/{cell.total_updates} (epoch "
                    f"{progress.update / cell.per_epoch:.2f}) loss {loss:.4f} "
                    f"{cell.task.metric} {value:.4f}")
                every = cfg.runtime.checkpoint_every_evals
                if (checkpointer is not None and main and every and j % every == 0
                        and progress.update < cell.total_updates):
                    checkpointer.save_if_possible()  # one writer: states are equal on all ranks
        if status != "done":
            break

    cell.accelerator.wait_for_everyone()
    return _shard(cell, progress, status) if main else None


@dataclasses.dataclass
class _Cell:
    """What a cell trains with, set up once: data, schedule, and the prepared model."""
    cfg: Config
    seed_wi: int
    seed_do: int
    accelerator: Accelerator
    task: Task
    tokenizer: object
    train: data.Encoded
    val: data.Encoded
    per_epoch: int
    eval_at: np.ndarray
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def total_updates(self) -> int:
        return self.per_epoch * self.cfg.train.epochs

    def evaluate(self) -> np.ndarray:
        return _evaluate(self.model, self.tokenizer, self.val, self.accelerator,
                         self.cfg.runtime.eval_batch_size, self.task.num_labels)

    def state(self) -> dict:
        """The checkpoint's share of the setup: which cell, model, optimizer and schedule."""
        scaler = self.accelerator.scaler
        return {"seed_wi": self.seed_wi, "seed_do": self.seed_do, "config_hash": self.cfg.hash,
                "model": self.accelerator.unwrap_model(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None}


def _setup(cfg: Config, seed_wi: int, seed_do: int) -> _Cell:
    """Data, then the model (pretrained body, head from seed_wi), AdamW and the linear schedule,
    prepared by Accelerate; then torch's RNG seeded for dropout."""
    if cfg.runtime.deterministic:
        _deterministic()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        # One scheduler step per update: our batches are already global (see seedgrid.data).
        dataloader_config=DataLoaderConfiguration(split_batches=True))
    task = get_task(cfg.task.name)
    tokenizer, train, val = _encoded_data(cfg)
    per_epoch = data.updates_per_epoch(len(train), cfg.train.batch_size)
    total_updates = per_epoch * cfg.train.epochs
    eval_at = data.evaluation_updates(per_epoch, cfg.train.epochs, cfg.train.evals_per_epoch)
    model = load_model(cfg.model, task.num_labels, cfg.train.dropout, seed_wi, cfg.lora)
    if cfg.runtime.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    # Fused AdamW: one kernel for all parameters (transformers.Trainer's default too).
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.train.weight_decay),
                                  lr=cfg.train.learning_rate, fused=True)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(cfg.train.warmup_ratio * total_updates), total_updates)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if accelerator.is_main_process:
        name, gpus = f"[wi={seed_wi} do={seed_do}]", os.environ.get("CUDA_VISIBLE_DEVICES", "")
        logger.debug(f"{name} config {cfg.hash} on {accelerator.device}, mixed precision "
                     f"{accelerator.mixed_precision}, {torch.get_num_threads()} CPU threads")
        if gpus and accelerator.device.type == "cpu":  # GPUs given, none usable: say so
            logger.warning(f"{name} CUDA_VISIBLE_DEVICES={gpus} but torch sees no CUDA device "
                           "(a CPU build of torch, or no driver): training on the CPU")
    # Dropout draws from torch's global RNG: seeded after the model is built (Dodge et al.).
    torch.manual_seed(seeds.dropout_seed(cfg.train.dropout_seed, seed_wi, seed_do,
                                         accelerator.process_index))
    return _Cell(cfg, seed_wi, seed_do, accelerator, task, tokenizer, train, val, per_epoch,
                 eval_at, model, optimizer, scheduler)


def _resume(cell: _Cell, checkpointer: Checkpointer | None, say, name: str,
            started: float) -> Progress:
    """A fresh progress, or the checkpoint's (model, optimizer, schedule and RNG restored)."""
    progress = Progress(
        logits=np.full((len(cell.eval_at), len(cell.val), cell.task.num_labels), np.nan,
                       np.float32),
        train_loss=np.full(cell.total_updates, np.nan, np.float32), rng=rng_state(),
        started=started)
    if checkpointer is None or (saved := checkpointer.load()) is None:
        return progress
    if (saved["config_hash"], saved["seed_wi"], saved["seed_do"]) != (
            cell.cfg.hash, cell.seed_wi, cell.seed_do):
        say(f"{name} ignoring {checkpointer.path}: it is of another config or cell")
        return progress
    cell.accelerator.unwrap_model(cell.model).load_state_dict(saved["model"])
    cell.optimizer.load_state_dict(saved["optimizer"])
    cell.scheduler.load_state_dict(saved["scheduler"])
    if cell.accelerator.scaler is not None and saved.get("scaler"):
        cell.accelerator.scaler.load_state_dict(saved["scaler"])
    progress.restore(saved)
    say(f"{name} resumed from {checkpointer.path} at update {progress.update}/"
        f"{cell.total_updates}")
    return progress


def _update(cell: _Cell, batch: np.ndarray, progress: Progress) -> np.ndarray:
    """One optimizer update on a global batch: forward/backward over this process's
    micro-batches, then the step. Returns the example positions this process used."""
    accelerator, model = cell.accelerator, cell.model
    model.train()
    micro = data.local_micro_batches(batch, cell.rank, cell.world,
                                     cell.cfg.runtime.gradient_accumulation)
    loss_sum = torch.zeros((), device=accelerator.device)
    for i, part in enumerate(micro):
        # An empty share still runs (on one example, weight 0) to join the all-reduce.
        weight = 0.0 if len(part) == 0 else 1.0
        inputs = data.collate(cell.tokenizer, cell.train, part if len(part) else batch[:1],
                              accelerator.device)
        last = i == len(micro) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            out = model(**{k: v for k, v in inputs.items() if k != "labels"})
            loss = weight * _loss_sum(out.logits.float(), inputs["labels"])
            # DDP averages gradients over processes: scale so that the result is the gradient
            # of the mean loss over the whole global batch.
            accelerator.backward(loss * cell.world / len(batch))
        loss_sum += loss.detach()
    with signals_held():  # a checkpoint sees the state before or after this update
        if cell.cfg.train.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cell.cfg.train.max_grad_norm)
        cell.optimizer.step()
        cell.scheduler.step()
        cell.optimizer.zero_grad()
        progress.train_loss[progress.update] = (accelerator.reduce(loss_sum, "sum").item()
                                                / len(batch))
        progress.update += 1
        progress.rng = rng_state()  # what the next update's dropout starts from
    return np.concatenate(micro)


def _shard(cell: _Cell, progress: Progress, status: str):
    """The cell as a shard Dataset, with what it ran on and with."""
    cfg, val = cell.cfg, cell.val
    return cell_dataset(
        seed_wi=cell.seed_wi, seed_do=cell.seed_do, logits=progress.logits, labels=val.labels,
        example_ids=val.ids, steps=cell.eval_at, epochs=cell.eval_at / cell.per_epoch,
        train_loss=progress.train_loss, status=status, wall_time_s=progress.wall_time_s(),
        label_names=cell.task.label_names, attrs={
            "task": cell.task.name, "metric": cell.task.metric, "model": cfg.model.name,
            "majority_baseline": metrics.majority_baseline(val.labels, cell.task.metric),
            "config_hash": cfg.hash,
            "config": cfg.to_toml(), "updates_per_epoch": cell.per_epoch,
            "n_train": len(cell.train), "num_processes": cell.world,
            "gradient_accumulation": cfg.runtime.gradient_accumulation,
            "deterministic": cfg.runtime.deterministic, "host": socket.gethostname(),
            "device": _device_name(cell.accelerator.device),
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "started": _iso(progress.started),  # (resumed: when this process took it over)
            "torch_threads": torch.get_num_threads(),
            "created": _iso(time.time()),
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


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
        timespec="seconds")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _versions() -> dict[str, str]:
    names = ("torch", "transformers", "accelerate", "numpy", "xarray")
    return {"seedgrid_version": seedgrid.__version__,
            **{f"{n}_version": metadata.version(n) for n in names}}
