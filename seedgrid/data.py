"""What the trainer feeds, in which order: encoded splits, global batches, evaluation points.

The reproducibility contract lives here. A cell's training is a sequence of **global batches**:
epoch ``e`` takes :func:`seedgrid.seeds.epoch_permutation` ``(seed_do, e)`` and cuts it into
consecutive batches of ``batch_size`` (the last one may be smaller). With ``W`` processes and
``A`` gradient-accumulation micro-batches, process ``r`` takes its slice of each global batch
(:func:`local_micro_batches`) and every update sees exactly the global batch — whatever W and A
are. (Accelerate's default "one batch per process" would make the global batch W times larger and
reorder examples; seedgrid does not let Accelerate shard its training data.)
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from seedgrid.errors import UsageError
from seedgrid.seeds import epoch_permutation
from seedgrid.splits import Split

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Encoded:
    """A tokenised split: one dict of token lists per example, its label and its id."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def encode(tokenizer, split: Split, max_length: int) -> Encoded:
    enc = tokenizer(*split.texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(split))]
    return Encoded(features, split.labels, split.ids)


def collate(tokenizer, data: Encoded, index: np.ndarray, device) -> dict[str, "torch.Tensor"]:
    """Examples ``index`` padded to their longest (dynamic padding), labels included."""
    import torch

    batch = tokenizer.pad([data.features[i] for i in index], return_tensors="pt")
    batch["labels"] = torch.as_tensor(data.labels[index])
    return {k: v.to(device) for k, v in batch.items()}


def updates_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


def global_batches(n_train: int, batch_size: int, seed_do: int, epoch: int) -> list[np.ndarray]:
    """The global batches of ``epoch``: consecutive cuts of the epoch's permutation."""
    order = epoch_permutation(seed_do, epoch, n_train)
    return [order[i:i + batch_size] for i in range(0, n_train, batch_size)]


def local_micro_batches(batch: np.ndarray, rank: int, world: int,
                        accumulation: int) -> list[np.ndarray]:
    """Process ``rank``'s share of a global batch, cut into ``accumulation`` micro-batches.

    Some may be empty when the batch is smaller than ``world * accumulation``; the trainer still
    runs them (with zero weight) so that every process joins every gradient reduction.
    """
    return np.array_split(np.array_split(batch, world)[rank], accumulation)


def evaluation_updates(updates_per_epoch: int, epochs: int, evals_per_epoch: int) -> np.ndarray:
    """Update counts after which the validation set is evaluated: 0, then evals_per_epoch per epoch.

    Within an epoch of U updates, evaluation k (1..N) comes after k·U/N updates rounded half up,
    so the last one of each epoch is at its end.
    """
    if evals_per_epoch > updates_per_epoch:
        raise UsageError(f"[train] evals_per_epoch = {evals_per_epoch} exceeds the "
                         f"{updates_per_epoch} updates per epoch: lower it to at most "
                         f"{updates_per_epoch}, or train on more examples")
    k = np.arange(1, evals_per_epoch + 1)
    within = (k * updates_per_epoch + evals_per_epoch // 2) // evals_per_epoch
    per_epoch = [e * updates_per_epoch + within for e in range(epochs)]
    return np.concatenate([[0], *per_epoch])


def stop_update(eval_at: np.ndarray, fraction: float) -> int:
    """The update of the last evaluation at or before ``fraction`` of training (at least the
    first evaluation during training): where phase one stops."""
    during = eval_at[eval_at > 0]
    allowed = during[during <= fraction * eval_at[-1]]
    return int(allowed[-1] if len(allowed) else during[0])
