"""The final weights a run keeps (``[output] keep_weights``): the best N cells by the task's metric
at their last evaluation, or every cell's, as ``save_pretrained`` folders —
``<run>/weights/wi<W>_do<D>/`` with the tokenizer, which ``from_pretrained`` loads to give the
cube's final logits (a LoRA cell's adapters merged into its body). A pack writes its cells as
lone models.

A cell's folder is written whole under a temporary name and renamed into place; then, under the
run's weights lock (tasks end concurrently), only the best N stay: folders of worse cells are
removed when provably seedgrid's (:mod:`seedgrid.folders`). A cell that diverged, failed or was
stopped early keeps no weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from seedgrid import metrics
from seedgrid.config import Config
from seedgrid.files import locked, temporary_folder, write_json_atomic
from seedgrid.folders import folder_fd, provably_own
from seedgrid.log import logger
from seedgrid.rundir import Cell, cell_name, cell_of

WEIGHTS = "weights"
#: what a kept folder says of itself: its cell, config and score
RECORD = "seedgrid-weights.json"


def keep(cfg: Config, run_dir: Path, cell: Cell, shard, save: Callable[[Path], None]) -> None:
    """Write ``cell``'s final weights (``save`` writes them into a folder) if the run keeps
    weights and the cell ended done; then keep only the best ``keep_weights`` cells."""
    if shard.status.item() != "done":
        return
    logits = shard.logits.values[0, 0][:, -1]  # (example, class) at the last evaluation
    asked = metrics.questions_for(cfg_metric := shard.attrs["metric"],
                                  shard["example"].values)
    value = float(metrics.score_predictions(metrics.predict(logits), shard.label.values,
                                            cfg_metric, asked))
    root = run_dir / WEIGHTS
    os.close(folder_fd(root, run_dir, make=True))  # (never a link)
    target = root / cell_name(*cell)
    tmp = temporary_folder(target)
    try:
        save(tmp)
        write_json_atomic(tmp / RECORD, {"seed_wi": cell[0], "seed_do": cell[1],
                                         "config_hash": cfg.hash, "metric": cfg_metric,
                                         "value": value})
        with locked(root):
            _remove(target, run_dir)  # (a cell trained again: its newer weights)
            os.rename(tmp, target)
            if cfg.output.keep_weights > 0:
                _best_only(root, run_dir, cfg.output.keep_weights)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"[wi={cell[0]} do={cell[1]}] final weights kept in {target} "
                f"({cfg_metric} {value:.4f})" if target.exists() else
                f"[wi={cell[0]} do={cell[1]}] final weights not among the best "
                f"{cfg.output.keep_weights}")


def kept(run_dir: Path) -> dict[Cell, dict]:
    """The cells whose weights the run keeps, with what each folder's record says."""
    found = {}
    for folder in sorted((Path(run_dir) / WEIGHTS).glob("wi*_do*")):
        cell = cell_of(folder, "")
        with contextlib.suppress(OSError, ValueError):
            if cell is not None and provably_own(folder / RECORD, Path(run_dir)):
                found[cell] = json.loads((folder / RECORD).read_text())
    return found


def _best_only(root: Path, run_dir: Path, n: int) -> None:
    """Remove the folders of every cell but the ``n`` best (ties: the earlier cell stays)."""
    ranked = sorted(kept(run_dir).items(), key=lambda item: (
        -item[1]["value"] if np.isfinite(item[1]["value"]) else np.inf, item[0]))
    for cell, _ in ranked[n:]:
        _remove(root / cell_name(*cell), run_dir)


def _remove(folder: Path, run_dir: Path) -> None:
    """A kept folder, removed if its record proves it seedgrid's (reached without a link)."""
    if os.path.lexists(folder) and provably_own(folder / RECORD, run_dir) \
            and not folder.is_symlink():
        shutil.rmtree(folder)  # (rmtree follows no link inside)
