"""What K cells compute together — a pack, one stacked model (K = 1: a lone cell) — set up once
and driven by the training loop (:mod:`seedgrid.trainer`): the data, the model (a pretrained
body, a head from each cell's seed_wi, the K cells stacked into one), each cell's dropout masks,
AdamW and the schedule, prepared by Accelerate; one optimizer update over every cell's global
batch; an evaluation; a cell as its shard.

The kernels an update launches do not grow with K: the cells are folded into one batch
(:mod:`seedgrid.stacked`), their masks computed on the device in one pass per site
(:mod:`seedgrid.dropout`), clipping takes a few multi-tensor kernels
(:func:`seedgrid.stacked.clip_per_cell`), and with ``[runtime] compile`` the forward and loss
are one compiled graph. The host waits for
the device once per update, after the step: for each cell's loss (divergence, the loss curve).
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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from transformers import get_linear_schedule_with_warmup

from seedgrid import data, metrics, seeds, stacked
from seedgrid.version import __version__
from seedgrid.checkpoint import Checkpointer, Progress, signals_held
from seedgrid.config import Config
from seedgrid.dropout import Masks, use_cell_dropout
from seedgrid.errors import UsageError
from seedgrid.log import logger
from seedgrid.model import cell_parameters, load_model, load_tokenizer, optimizer_groups
from seedgrid.store import cell_dataset
from seedgrid.splits import load_splits
from seedgrid.tasks import Task, get_task


@dataclasses.dataclass
class Run:
    """One cell of the pack, as it trains: its seeds, progress, checkpoint, and how it ended."""
    seed_wi: int
    seed_do: int
    progress: Progress
    checkpointer: Checkpointer | None = None
    stop_at: int | None = None
    #: "training" until it ends: "done", "diverged" or "stopped"
    status: str = "training"

    @property
    def name(self) -> str:
        return f"[wi={self.seed_wi} do={self.seed_do}]"


@dataclasses.dataclass
class Pack:
    """What K cells train with, set up once: data, schedule, and the prepared (stacked) model."""
    cfg: Config
    cells: list[tuple[int, int]]
    accelerator: Accelerator
    task: Task
    tokenizer: Any
    train: data.Encoded
    val: data.Encoded
    per_epoch: int
    eval_at: np.ndarray
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    masks: Masks
    #: names of the stacked parameters (empty for one cell)
    stacked: set[str]
    #: the model's type (config.model_type): how a folded batch gets its positions
    family: str
    #: what the cells train and are evaluated on: data_train, data_validation fingerprints
    fingerprints: dict[str, str]
    #: the forward and loss (:func:`forward_losses`), compiled with ``[runtime] compile``
    forward: Callable = dataclasses.field(default=None)  # type: ignore[assignment]
    _live: tuple[list[bool], torch.Tensor] | None = None

    @property
    def k(self) -> int:
        return len(self.cells)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def total_updates(self) -> int:
        return self.per_epoch * self.cfg.train.epochs

    def live(self, live: list[bool]) -> torch.Tensor:
        """``live`` (which cells still train) on the device: copied there once per change."""
        if self._live is None or self._live[0] != live:
            self._live = (list(live), torch.tensor(live, device=self.accelerator.device))
        return self._live[1]

    def trained(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def evaluate(self) -> np.ndarray:
        """(cell, example, class)."""
        return evaluate(self, self.cfg.runtime.eval_batch_size)

    def state(self, k: int) -> dict:
        """Cell k's share of a checkpoint, as a lone cell's: which cell, model, optimizer and
        schedule."""
        wi, do = self.cells[k]
        model = self.accelerator.unwrap_model(self.model)
        if self.k == 1:
            model_state, optimizer_state = model.state_dict(), self.optimizer.state_dict()
        else:
            model_state, optimizer_state = stacked.cell_state(model, self.optimizer, k,
                                                              self.stacked)
        scaler = self.accelerator.scaler
        return {"seed_wi": wi, "seed_do": do, "config_hash": self.cfg.hash,
                "data": dict(self.fingerprints),
                "model": model_state, "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None}


def setup(cfg: Config, cells: list[tuple[int, int]]) -> Pack:
    """Data, then the model (pretrained body, a head from each cell's seed_wi; the K cells
    stacked into one), its dropout drawn per cell, AdamW and the linear schedule, prepared by
    Accelerate."""
    if cfg.runtime.deterministic:
        _deterministic()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        # One scheduler step per update: our batches are already global (see seedgrid.data).
        dataloader_config=DataLoaderConfiguration(split_batches=True))
    if len(cells) > 1 and accelerator.num_processes > 1:
        raise UsageError("a pack of cells trains in one process: pack one-process cells, or "
                         "train each cell on several processes alone")
    task = get_task(cfg.task)
    tokenizer, train, val, fingerprints = encoded_data(cfg)
    per_epoch = data.updates_per_epoch(len(train), cfg.train.batch_size)
    total_updates = per_epoch * cfg.train.epochs
    eval_at = data.evaluation_updates(per_epoch, cfg.train.epochs, cfg.train.evals_per_epoch)
    model = load_model(cfg.model, task.num_labels, cfg.train.dropout, cells[0][0], cfg.lora)
    starts = [cell_parameters(model, wi) for wi, _ in cells] if len(cells) > 1 else [{}]
    masks = pack_model(model, starts, [seeds.dropout_seed(cfg.train.dropout_seed, wi, do)
                                       for wi, do in cells], bool(cfg.lora.rank))
    if cfg.runtime.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or \
            model.gradient_checkpointing_enable  # (its name before transformers 5.24)
        enable({"use_reentrant": False})
    optimizer = adamw(model, cfg.train.weight_decay, cfg.train.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(cfg.train.warmup_ratio * total_updates), total_updates)
    names, family = stacked.stacked_names(model), getattr(model.config, "model_type", "")
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if accelerator.is_main_process:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        logger.debug(f"{cell_names(cells)} config {cfg.hash} on {accelerator.device}, mixed "
                     f"precision {accelerator.mixed_precision}, {torch.get_num_threads()} CPU "
                     "threads")
        if gpus and accelerator.device.type == "cpu":  # GPUs given, none usable: say so
            logger.warning(f"{cell_names(cells)} CUDA_VISIBLE_DEVICES={gpus} but torch sees no "
                           "CUDA device (a CPU build of torch, or no driver): training on the CPU")
    forward = forward_losses
    if cfg.runtime.compile and accelerator.num_processes == 1:  # one graph, no break
        forward = torch.compile(forward_losses, fullgraph=True)
    elif cfg.runtime.compile:
        logger.warning(f"{cell_names(cells)} [runtime] compile: a cell on several processes "
                       "trains eager (the compiled graph is for one process)")
    return Pack(cfg, list(cells), accelerator, task, tokenizer, train, val, per_epoch,
                 eval_at, model, optimizer, scheduler, masks, names, family, fingerprints,
                 forward)


def pack_model(model: torch.nn.Module, cells: list[dict[str, torch.Tensor]],
               dropout_seeds: list[int], lora: bool) -> Masks:
    """Make ``model`` (built as one cell) the model of ``len(cells)`` cells, in place: their
    trained parameters (``cells``: each cell's by name; a lone cell's are the model's own)
    stacked when there are several (:func:`stacked.stack`), every dropout
    site drawing each cell's masks from its seed; returns the masks (what a forward needs
    told: :meth:`Masks.begin`)."""
    if len(cells) > 1:  # K cells as one model: each stacked leaf holds their K tensors
        stacked.check_family(model, lora)
        stacked.stack(model, cells)
    masks = Masks(dropout_seeds)
    use_cell_dropout(model, masks)
    return masks


def adamw(model: torch.nn.Module, weight_decay: float, learning_rate: float):
    """Fused AdamW: one kernel for all parameters (transformers.Trainer's default too); it is
    elementwise, so over stacked parameters each cell's update is its own."""
    return torch.optim.AdamW(optimizer_groups(model, weight_decay), lr=learning_rate,
                             fused=True)


def update_cells(pack: Pack, runs: list[Run], update: int, batches: list[np.ndarray],
                 live: list[bool]) -> list[np.ndarray]:
    """Update ``update`` (0-based) on each cell's global batch: forward/backward over this
    process's micro-batches (the cells folded into one batch), clipping per cell, then the
    step. Returns each cell's example positions this process used."""
    accelerator, model = pack.accelerator, pack.model
    model.train()
    size = len(batches[0])  # every cell of a pack has the same batch sizes
    micro = data.local_micro_batches(np.arange(size), pack.rank, pack.world,
                                     pack.cfg.runtime.gradient_accumulation)
    keep = pack.live(live)
    loss_sums = torch.zeros(pack.k, device=accelerator.device)
    for i, part in enumerate(micro):
        # An empty share still runs (on one example, weight 0) to join the all-reduce.
        weight = 0.0 if len(part) == 0 else 1.0
        rows = part if len(part) else np.arange(1)
        # the K cells' examples folded cell-major, padded to the longest of them all
        inputs = data.collate(pack.tokenizer, pack.train, np.stack(batches)[:, rows].ravel(),
                              accelerator.device)
        labels = inputs.pop("labels")
        pack.masks.begin(update, int(rows[0]))  # (micro-batches are consecutive rows)
        last = i == len(micro) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            losses = weight * pack.forward(model, inputs, labels, pack.k, pack.family)
            # DDP averages gradients over processes: scale so that the result is the gradient
            # of the mean loss over the whole global batch; ended cells take no gradient.
            accelerator.backward(torch.where(keep, losses, 0.0).sum() * pack.world / size)
        loss_sums += losses.detach()
    with signals_held():  # a checkpoint sees the state before or after this update
        if pack.cfg.train.max_grad_norm > 0:
            if accelerator.scaler is not None:  # fp16: the norm of the true gradients
                accelerator.unscale_gradients()
            stacked.clip_per_cell(pack.trained(), pack.k, pack.cfg.train.max_grad_norm)
        pack.optimizer.step()
        pack.scheduler.step()
        pack.optimizer.zero_grad()  # (to None: the next backward's gradients are assigned)
        means = (accelerator.reduce(loss_sums, "sum") / size).tolist()
        for k, run in enumerate(runs):
            if live[k]:
                run.progress.train_loss[update] = means[k]
                run.progress.update = update + 1
    return [batch[np.concatenate(micro)] for batch in batches]


def save_weights(pack: Pack, k: int, folder: Path) -> None:
    """Cell ``k``'s final model as a lone model that ``from_pretrained`` loads (LoRA merged into
    its body), and the tokenizer, in ``folder``: what ``[output] keep_weights`` keeps."""
    wi, _ = pack.cells[k]
    lone = load_model(pack.cfg.model, pack.task.num_labels, pack.cfg.train.dropout, wi,
                      pack.cfg.lora)
    lone.load_state_dict(pack.state(k)["model"])
    if hasattr(lone, "merge_and_unload"):  # peft: one model, not an adapter on a hub body
        lone = lone.merge_and_unload()
    lone.save_pretrained(folder)
    pack.tokenizer.save_pretrained(folder)


def forward_losses(model: torch.nn.Module, inputs: dict, labels: torch.Tensor, k: int,
                   family: str) -> torch.Tensor:
    """The forward of the K cells' folded batch and each cell's summed loss: what
    ``[runtime] compile`` compiles, as one graph."""
    out = model(**inputs, **stacked.fold_positions(family, inputs["input_ids"]))
    return loss_sums(out.logits.float(), labels, k)


def loss_sums(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Each cell's loss summed over its rows (cell-major): cross-entropy, or the squared error
    of the one output of a regression task (as transformers' problem_type "regression")."""
    if logits.shape[-1] == 1:
        per_row = F.mse_loss(logits.squeeze(-1), labels.float(), reduction="none")
    else:
        per_row = F.cross_entropy(logits, labels, reduction="none")
    return per_row.view(k, -1).sum(1)


def shard(pack: Pack, run: Run):
    """The cell as a shard Dataset, with what it ran on and with (the pack it trained in)."""
    cfg, val = pack.cfg, pack.val
    together = "" if pack.k == 1 else ", ".join(f"wi={wi} do={do}" for wi, do in pack.cells)
    return cell_dataset(
        seed_wi=run.seed_wi, seed_do=run.seed_do, logits=run.progress.logits, labels=val.labels,
        example_ids=val.ids, steps=pack.eval_at, epochs=pack.eval_at / pack.per_epoch,
        train_loss=run.progress.train_loss, status=run.status,
        wall_time_s=run.progress.wall_time_s(), label_names=pack.task.label_names, attrs={
            "task": pack.task.name, "metric": pack.task.metric, "model": cfg.model.name,
            "majority_baseline": metrics.majority_baseline(val.labels, pack.task.metric),
            "config_hash": cfg.hash, **pack.fingerprints,
            "config": cfg.to_toml(), "updates_per_epoch": pack.per_epoch,
            "n_train": len(pack.train), "num_processes": pack.world,
            "gradient_accumulation": cfg.runtime.gradient_accumulation,
            "deterministic": cfg.runtime.deterministic, "host": socket.gethostname(),
            "device": _device_name(pack.accelerator.device),
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "pack": together,
            "started": _iso(run.progress.started),  # (resumed: when this process took it over)
            "torch_threads": torch.get_num_threads(),
            "created": _iso(time.time()),
            **_versions(),
        })


_DATA: dict[str, tuple] = {}


def encoded_data(cfg: Config) -> tuple:
    """(tokenizer, train, validation), loaded once per process for the cells of a task."""
    key = json.dumps([dataclasses.asdict(cfg.task), dataclasses.asdict(cfg.model)], sort_keys=True)
    if key not in _DATA:
        train_split, val_split = load_splits(cfg.task)
        tokenizer = load_tokenizer(cfg.model)
        _DATA.clear()  # one task trains one config: keep one entry
        _DATA[key] = (tokenizer, data.encode(tokenizer, train_split, cfg.model.max_length),
                      data.encode(tokenizer, val_split, cfg.model.max_length),
                      {"data_train": train_split.fingerprint(),
                       "data_validation": val_split.fingerprint()})
    return _DATA[key]


def evaluate(pack: Pack, batch_size: int) -> np.ndarray:
    """Logits of every validation example for each cell, (cell, example, class), identical on
    every process.

    Examples are sorted by length (less padding) and each process evaluates a contiguous share;
    the shares are gathered and put back in the split's order. A pack evaluates each batch once
    per cell, folded.
    """
    model, accelerator, val, k = pack.model, pack.accelerator, pack.val, pack.k
    classes = pack.task.num_labels
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    order = np.argsort([len(f["input_ids"]) for f in val.features], kind="stable")
    shares = np.array_split(order, world)
    mine = shares[rank]
    width = len(shares[0])  # array_split: the first share is the longest
    out = torch.full((k, width, classes), float("nan"), device=accelerator.device)
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            inputs = data.collate(pack.tokenizer, val, mine[start:start + batch_size],
                                  accelerator.device)
            inputs.pop("labels")
            n = len(inputs["input_ids"])
            folded = {name: value.repeat(k, 1) for name, value in inputs.items()}
            positions = stacked.fold_positions(pack.family, folded["input_ids"])
            logits = model(**folded, **positions).logits
            out[:, start:start + n] = logits.float().view(k, n, classes)
    gathered = accelerator.gather(out.transpose(0, 1).contiguous()).cpu().numpy()
    gathered = gathered.reshape(world, width, k, classes)
    logits = np.empty((k, len(val), classes), np.float32)
    for r, share in enumerate(shares):  # a loop over processes, not examples
        logits[:, share] = gathered[r, :len(share)].transpose(1, 0, 2)
    return logits


def cell_names(cells) -> str:
    pairs = [(c.seed_wi, c.seed_do) if isinstance(c, Run) else c for c in cells]
    return " ".join(f"[wi={wi} do={do}]" for wi, do in pairs)


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
    return {"seedgrid_version": __version__,
            **{f"{n}_version": metadata.version(n) for n in names}}
