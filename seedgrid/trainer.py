"""Train cells with Accelerate — one alone, or K at once as one stacked model (a pack) — and hand
each back as a shard Dataset.

Reads top to bottom: set up (data; the model: pretrained body, a head from each cell's seed_wi,
K cells stacked into one model when K > 1; AdamW, the schedule) → resume each cell from its
checkpoint → evaluate before training → for each update: each cell's global batch of its seed_do
order, forward/backward over this process's micro-batches (the K cells folded into one batch),
clipping per cell, one optimizer update → evaluate when due → each cell as a Dataset, as soon as
it ends.

A lone cell runs on one process (``python -m seedgrid run``) or several (``torchrun``,
``accelerate launch``, a multi-GPU SLURM task): each process takes its slice of every global batch
(:mod:`seedgrid.data`). A pack runs in one process. Either way a cell is its seeds: the same
global batches and dropout masks (:mod:`seedgrid.dropout`), its own clipping, optimizer state,
divergence and early stop, whatever the layout.
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
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from transformers import get_linear_schedule_with_warmup

from seedgrid import data, metrics, seeds, stacked
from seedgrid.version import __version__
from seedgrid.checkpoint import Checkpointer, Progress, rng_state, signals_held
from seedgrid.config import Config
from seedgrid.dropout import Masks, use_cell_dropout
from seedgrid.errors import UsageError
from seedgrid.log import logger
from seedgrid.model import cell_parameters, load_model, load_tokenizer, optimizer_groups
from seedgrid.store import cell_dataset
from seedgrid.tasks import Task, get_task, load_splits

#: called on every process after each update with (update, each cell's example positions this
#: process used)
OnUpdate = Callable[[int, list], None]
#: called on the main process with (cell index, its shard) as soon as a cell ends
OnEnd = Callable[[int, object], None]

#: a mean cross-entropy above this (nats per example: the gold label's probability below
#: e^-100; regression: a squared error of 100) means training has exploded; the cell is marked
#: diverged, as for a NaN loss
EXPLODED_LOSS = 100.0


@dataclasses.dataclass
class _Run:
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


def train_cell(cfg: Config, seed_wi: int, seed_do: int, *, on_update=None,
               checkpointer: Checkpointer | None = None, log: Callable[[str], None] = logger.info,
               stop_fraction: float | None = None):
    """Fine-tune one cell and return its shard (an ``xarray.Dataset``; None on processes other
    than the main one); see :func:`train_cells`. ``on_update`` gets (update, the example
    positions this process used)."""
    hook = None if on_update is None else (lambda u, used: on_update(u, used[0]))
    shards = train_cells(cfg, [(seed_wi, seed_do)], checkpointers=[checkpointer],
                         stop_fractions=[stop_fraction], on_update=hook, log=log)
    return shards[0]


def train_cells(cfg: Config, cells: list[tuple[int, int]], *,
                checkpointers: list[Checkpointer | None] | None = None,
                stop_fractions: list[float | None] | None = None,
                on_update: OnUpdate | None = None, on_end: OnEnd | None = None,
                log: Callable[[str], None] = logger.info) -> list:
    """Fine-tune ``cells`` at once (one stacked model when there are several) and return their
    shards (main process; None elsewhere), each also given to ``on_end`` when its cell ends.

    With checkpointers, each cell resumes from its checkpoint if there is one (all at the same
    update: a pack trains cells in step), and binds its state so that a preemption handler can
    save it; with ``[runtime] checkpoint_every_evals`` they also save after every N-th
    evaluation. A cell with a ``stop_fraction`` (early stopping, seedgrid.grid.early_stop) stops
    after the last evaluation at or before that fraction of training, saves its checkpoint and
    ends as ``stopped``; trained again without it, it continues from there. A cell whose loss
    explodes ends as ``diverged`` while the others go on.
    """
    started = time.time()
    checkpointers = checkpointers or [None] * len(cells)
    stop_fractions = stop_fractions or [None] * len(cells)
    pack = _setup(cfg, cells)
    main = pack.accelerator.is_main_process
    say = log if main else (lambda _: None)
    try:
        runs = _resume(pack, checkpointers, say, started)
    except _NotInStep as e:  # trained as packs in step, one after the other
        del pack
        return _in_step(cfg, cells, e, checkpointers, stop_fractions, on_update, on_end, log)
    for run, fraction in zip(runs, stop_fractions):
        run.stop_at = None if fraction is None else data.stop_update(pack.eval_at, fraction)
    say(f"{_names(runs)} {pack.task.name}: {len(pack.train)} train / {len(pack.val)} "
        f"validation examples, {pack.total_updates} updates, {len(pack.eval_at)} evaluations, "
        + (f"{pack.world} process(es)" if pack.k == 1 else f"a pack of {pack.k} cells"))
    shards: list = [None] * len(runs)

    def end(k: int, status: str) -> None:  # a cell is over: its shard, its checkpoint frozen
        runs[k].status = status
        checkpointer = runs[k].checkpointer
        if checkpointer is not None:
            checkpointer.bind(None)  # (a later save would write a state past its end)
        if main:
            shards[k] = _shard(pack, runs[k])
            if on_end is not None:
                on_end(k, shards[k])

    # --- evaluations due by now: before training, or interrupted during one ------------------
    start = update = runs[0].progress.update  # (the cells of a pack resume at one update)
    due = int(np.searchsorted(pack.eval_at, update, side="right"))
    if any(run.progress.evaluated < due for run in runs):
        logits = pack.evaluate()
        for k, run in enumerate(runs):
            run.progress.logits[due - 1] = logits[k]
            run.progress.evaluated = due

    # --- training: one optimizer update per global batch (of each cell) ----------------------
    for epoch in range(update // pack.per_epoch, cfg.train.epochs):
        orders = [data.global_batches(len(pack.train), cfg.train.batch_size, run.seed_do, epoch)
                  for run in runs]
        for b in range(pack.per_epoch):
            update = epoch * pack.per_epoch + b
            if update < start:
                continue  # done before a restart
            for k, run in enumerate(runs):
                if run.status == "training" and update == run.stop_at:  # early stopping
                    if run.checkpointer is not None and main:
                        run.checkpointer.save()
                    say(f"{run.name} stopped at update {update} (early stopping)")
                    end(k, "stopped")
            live = [run.status == "training" for run in runs]
            if not any(live):
                break
            used = _update(pack, runs, update, [order[b] for order in orders], live)
            if on_update is not None:
                on_update(update + 1, used)
            for k, run in enumerate(runs):
                loss = run.progress.train_loss[update]
                if live[k] and not loss <= EXPLODED_LOSS:  # NaN fails this comparison too
                    say(f"{run.name} diverged at update {update + 1}: loss {loss}")
                    end(k, "diverged")  # keeps what was evaluated so far; the rest stays NaN
            if update + 1 in pack.eval_at:
                _evaluate_due(pack, runs, update + 1, say)
        if not any(run.status == "training" for run in runs):
            break

    pack.accelerator.wait_for_everyone()
    for k, run in enumerate(runs):
        if run.status == "training":
            end(k, "done")
    return shards


def _in_step(cfg: Config, cells: list[tuple[int, int]], e: "_NotInStep", checkpointers: list,
             stop_fractions: list, on_update: OnUpdate | None, on_end: OnEnd | None,
             log: Callable[[str], None]) -> list:
    """Cells whose checkpoints resume at different updates (one was set aside): a pack for
    each group in step, one after the other; their shards in the cells' order."""
    shards: list = [None] * len(cells)
    for group in e.groups:
        for k in group:
            if checkpointers[k] is not None:
                checkpointers[k].keep(e.saved[k])

        def ended(i: int, shard, group: list[int] = group) -> None:
            if on_end is not None:
                on_end(group[i], shard)

        done = train_cells(cfg, [cells[k] for k in group],
                           checkpointers=[checkpointers[k] for k in group],
                           stop_fractions=[stop_fractions[k] for k in group],
                           on_update=on_update, on_end=ended, log=log)
        for k, shard in zip(group, done):
            shards[k] = shard
    return shards


def _evaluate_due(pack: "_Pack", runs: list[_Run], update: int, say) -> None:
    """The evaluation after ``update``: every training cell's logits, its metric said, and its
    periodic checkpoint written when one is due."""
    j = int(np.searchsorted(pack.eval_at, update))
    logits = pack.evaluate()
    every = pack.cfg.runtime.checkpoint_every_evals
    for k, run in enumerate(runs):
        if run.status != "training":
            continue
        run.progress.logits[j] = logits[k]
        run.progress.evaluated = j + 1
        value = metrics.score(logits[k], pack.val.labels, pack.task.metric)
        say(f"{run.name} update {update}/{pack.total_updates} (epoch "
            f"{update / pack.per_epoch:.2f}) loss {run.progress.train_loss[update - 1]:.4f} "
            f"{pack.task.metric} {value:.4f}")
        if (run.checkpointer is not None and pack.accelerator.is_main_process and every
                and j % every == 0 and update < pack.total_updates):
            run.checkpointer.save_if_possible()  # one writer: states are equal on all ranks


@dataclasses.dataclass
class _Pack:
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

    def trained(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def evaluate(self) -> np.ndarray:
        """(cell, example, class)."""
        return _evaluate(self, self.cfg.runtime.eval_batch_size)

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
                "model": model_state, "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None}


def _setup(cfg: Config, cells: list[tuple[int, int]]) -> _Pack:
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
    task = get_task(cfg.task.name)
    tokenizer, train, val, fingerprints = _encoded_data(cfg)
    per_epoch = data.updates_per_epoch(len(train), cfg.train.batch_size)
    total_updates = per_epoch * cfg.train.epochs
    eval_at = data.evaluation_updates(per_epoch, cfg.train.epochs, cfg.train.evals_per_epoch)
    model = load_model(cfg.model, task.num_labels, cfg.train.dropout, cells[0][0], cfg.lora)
    if len(cells) > 1:  # K cells as one model: each stacked leaf holds their K tensors
        stacked.check_family(model, bool(cfg.lora.rank))
        stacked.stack(model, [cell_parameters(model, wi) for wi, _ in cells])
    masks = Masks([seeds.dropout_seed(cfg.train.dropout_seed, wi, do) for wi, do in cells])
    use_cell_dropout(model, masks)
    if cfg.runtime.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or \
            model.gradient_checkpointing_enable  # (its name before transformers 5.24)
        enable({"use_reentrant": False})
    # Fused AdamW: one kernel for all parameters (transformers.Trainer's default too); it is
    # elementwise, so over stacked parameters each cell's update is its own.
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.train.weight_decay),
                                  lr=cfg.train.learning_rate, fused=True)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(cfg.train.warmup_ratio * total_updates), total_updates)
    names, family = stacked.stacked_names(model), getattr(model.config, "model_type", "")
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if accelerator.is_main_process:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        logger.debug(f"{_names(cells)} config {cfg.hash} on {accelerator.device}, mixed "
                     f"precision {accelerator.mixed_precision}, {torch.get_num_threads()} CPU "
                     "threads")
        if gpus and accelerator.device.type == "cpu":  # GPUs given, none usable: say so
            logger.warning(f"{_names(cells)} CUDA_VISIBLE_DEVICES={gpus} but torch sees no CUDA "
                           "device (a CPU build of torch, or no driver): training on the CPU")
    return _Pack(cfg, list(cells), accelerator, task, tokenizer, train, val, per_epoch,
                 eval_at, model, optimizer, scheduler, masks, names, family, fingerprints)


def _resume(pack: _Pack, checkpointers: list, say, started: float) -> list[_Run]:
    """Each cell's progress: fresh, or its checkpoint's (model, optimizer and schedule
    restored); each checkpointer bound to its cell's state."""
    runs = []
    for k, ((wi, do), checkpointer) in enumerate(zip(pack.cells, checkpointers)):
        progress = Progress(
            logits=np.full((len(pack.eval_at), len(pack.val), pack.task.num_labels), np.nan,
                           np.float32),
            train_loss=np.full(pack.total_updates, np.nan, np.float32), rng=rng_state(),
            started=started)
        runs.append(_Run(wi, do, progress, checkpointer))
    saved = [None if c is None else c.load() for c in checkpointers]
    for k, (run, state, c) in enumerate(zip(runs, saved, checkpointers)):
        problem = None if state is None else _checkpoint_problem(pack, run, state)
        if problem is not None:
            if pack.accelerator.is_main_process:
                c.reject(problem)
            saved[k] = None
    updates = {0 if s is None else int(s["update"]) for s in saved}
    if len(updates) > 1:  # (a checkpoint set aside above: that cell starts afresh)
        raise _NotInStep([[k for k, s in enumerate(saved) if (0 if s is None else s["update"])
                           == u] for u in sorted(updates)], saved)
    if any(s is not None for s in saved):
        _load(pack, [s if s is not None else pack.state(k) for k, s in enumerate(saved)])
        for run, state, c in zip(runs, saved, checkpointers):
            if state is not None:
                run.progress.restore(state)
                say(f"{run.name} resumed from {c.path} at update {run.progress.update}/"
                    f"{pack.total_updates}")
    for k, (run, c) in enumerate(zip(runs, checkpointers)):
        if c is not None and pack.accelerator.is_main_process:
            c.bind(_state_of(pack, k, run))
    return runs


class _NotInStep(Exception):
    """The cells of a pack resume at different updates: groups of cell indices, in step."""

    def __init__(self, groups: list[list[int]], saved: list) -> None:
        super().__init__(groups)
        self.groups, self.saved = groups, saved


def _state_of(pack: _Pack, k: int, run: _Run) -> Callable[[], dict]:
    """What cell k's checkpoint saves: its share of the pack and its progress."""
    return lambda: {**pack.state(k), **run.progress.state()}


def _checkpoint_problem(pack: _Pack, run: _Run, state: dict) -> str | None:
    """Why ``state`` cannot be ``run``'s checkpoint in this pack (None if it can): another
    config or cell, progress out of range, or tensors of other shapes than the model's."""
    try:
        return _state_problem(pack, run, state)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        return f"not a checkpoint of this shape ({type(e).__name__}: {e})"


def _state_problem(pack: _Pack, run: _Run, state: dict) -> str | None:
    if (state["config_hash"], state["seed_wi"], state["seed_do"]) != (
            pack.cfg.hash, run.seed_wi, run.seed_do):
        return "it is of another config or cell"
    update, evaluated = state["update"], state["evaluated"]
    if not (isinstance(update, int) and 0 <= update <= pack.total_updates):
        return f"update {update!r} is not within 0..{pack.total_updates}"
    due = int(np.searchsorted(pack.eval_at, update, side="right"))
    if not (isinstance(evaluated, int) and 0 <= evaluated <= due):
        return f"{evaluated!r} evaluations done by update {update}, of at most {due}"
    expected = {"logits": run.progress.logits.shape, "train_loss": run.progress.train_loss.shape}
    for name, shape in expected.items():
        if not torch.is_tensor(state[name]) or tuple(state[name].shape) != shape:
            return f"its {name} are not of shape {shape}"
    model = pack.accelerator.unwrap_model(pack.model)
    shapes = {name: tuple(value.shape[1:] if name in pack.stacked else value.shape)
              for name, value in model.state_dict().items()}
    theirs = state["model"] if isinstance(state["model"], dict) else {}
    if set(theirs) != set(shapes):
        return "its model has other parameters than this config's"
    wrong = next((n for n, v in theirs.items()
                  if not torch.is_tensor(v) or tuple(v.shape) != shapes[n]), None)
    if wrong is not None:
        return f"its {wrong} is not of shape {shapes[wrong]}"
    names = stacked.optimizer_names(model, pack.optimizer)
    for i, per_param in state["optimizer"].get("state", {}).items():
        if not (isinstance(i, int) and 0 <= i < len(names)):
            return "its optimizer state is of other parameters"
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.dim() and tuple(value.shape) != shapes[names[i]]:
                return f"its optimizer's {key} of {names[i]} is not of shape {shapes[names[i]]}"
    return None


def _load(pack: _Pack, states: list[dict]) -> None:
    """The cells' checkpointed model, optimizer and schedule states into the pack."""
    model = pack.accelerator.unwrap_model(pack.model)
    if pack.k == 1:
        model.load_state_dict(states[0]["model"])
        pack.optimizer.load_state_dict(states[0]["optimizer"])
    else:
        stacked.load_cell_states(model, pack.optimizer,
                                 [(s["model"], s["optimizer"]) for s in states], pack.stacked)
    pack.scheduler.load_state_dict(states[0]["scheduler"])
    if pack.accelerator.scaler is not None and states[0].get("scaler"):
        pack.accelerator.scaler.load_state_dict(states[0]["scaler"])


def _update(pack: _Pack, runs: list[_Run], update: int, batches: list[np.ndarray],
            live: list[bool]) -> list[np.ndarray]:
    """Update ``update`` (0-based) on each cell's global batch: forward/backward over this
    process's micro-batches (the cells folded into one batch), clipping per cell, then the
    step. Returns each cell's example positions this process used."""
    accelerator, model = pack.accelerator, pack.model
    model.train()
    size = len(batches[0])  # every cell of a pack has the same batch sizes
    micro = data.local_micro_batches(np.arange(size), pack.rank, pack.world,
                                     pack.cfg.runtime.gradient_accumulation)
    longest = [max(len(pack.train.features[i]["input_ids"]) for i in batch) for batch in batches]
    keep = torch.tensor(live, device=accelerator.device)
    loss_sums = torch.zeros(pack.k, device=accelerator.device)
    for i, part in enumerate(micro):
        # An empty share still runs (on one example, weight 0) to join the all-reduce.
        weight = 0.0 if len(part) == 0 else 1.0
        rows = part if len(part) else np.arange(1)
        inputs = _fold([data.collate(pack.tokenizer, pack.train, batch[rows], accelerator.device)
                        for batch in batches], pack.tokenizer.pad_token_id)
        labels = inputs.pop("labels")
        pack.masks.begin(update, rows, size, longest)
        last = i == len(micro) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            out = model(**inputs, **stacked.fold_positions(pack.family, inputs["input_ids"]))
            losses = weight * _loss_sums(out.logits.float(), labels, pack.k)
            # DDP averages gradients over processes: scale so that the result is the gradient
            # of the mean loss over the whole global batch; ended cells take no gradient.
            accelerator.backward(losses[keep].sum() * pack.world / size)
        loss_sums += losses.detach()
    with signals_held():  # a checkpoint sees the state before or after this update
        if pack.cfg.train.max_grad_norm > 0:
            if accelerator.scaler is not None:  # fp16: the norm of the true gradients
                accelerator.unscale_gradients()
            stacked.clip_per_cell(pack.trained(), pack.k, pack.cfg.train.max_grad_norm)
        pack.optimizer.step()
        pack.scheduler.step()
        pack.optimizer.zero_grad()
        means = (accelerator.reduce(loss_sums, "sum") / size).tolist()
        for k, run in enumerate(runs):
            if live[k]:
                run.progress.train_loss[update] = means[k]
                run.progress.update = update + 1
                run.progress.rng = rng_state()
    return [batch[np.concatenate(micro)] for batch in batches]


def _fold(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """The K cells' collated batches as one, cell-major, each padded on the right to the
    longest (its extra positions are padding: masked, never reaching a real token)."""
    if len(parts) == 1:
        return parts[0]
    longest = max(p["input_ids"].shape[1] for p in parts)
    folded = {}
    for name in parts[0]:
        if name == "labels":
            folded[name] = torch.cat([p[name] for p in parts])
            continue
        value = pad_id if name == "input_ids" else 0
        folded[name] = torch.cat([F.pad(p[name], (0, longest - p[name].shape[1]), value=value)
                                  for p in parts])
    return folded


def _loss_sums(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Each cell's loss summed over its rows (cell-major): cross-entropy, or the squared error
    of the one output of a regression task (as transformers' problem_type "regression")."""
    if logits.shape[-1] == 1:
        per_row = F.mse_loss(logits.squeeze(-1), labels.float(), reduction="none")
    else:
        per_row = F.cross_entropy(logits, labels, reduction="none")
    return per_row.view(k, -1).sum(1)


def _shard(pack: _Pack, run: _Run):
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


def _encoded_data(cfg: Config) -> tuple:
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


def _evaluate(pack: _Pack, batch_size: int) -> np.ndarray:
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
            logits = model(**folded, **stacked.fold_positions(pack.family, folded["input_ids"])).logits
            out[:, start:start + n] = logits.float().view(k, n, classes)
    gathered = accelerator.gather(out.transpose(0, 1).contiguous()).cpu().numpy()
    gathered = gathered.reshape(world, width, k, classes)
    logits = np.empty((k, len(val), classes), np.float32)
    for r, share in enumerate(shares):  # a loop over processes, not examples
        logits[:, share] = gathered[r, :len(share)].transpose(1, 0, 2)
    return logits


def _names(cells) -> str:
    pairs = [(c.seed_wi, c.seed_do) if isinstance(c, _Run) else c for c in cells]
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
