"""A pack: K cells of an array task trained as ONE stacked model (cells_per_gpu, submit --pack K),
on a CPU here. Each cell is what it is alone: tiny BERT, RoBERTa and Llama + LoRA packs equal
their lone cells; a cell is the same in any pack; clipping, divergence, early stopping and
checkpoints are per cell, in both directions between a pack and a lone cell; a pack stopped by
SIGTERM (and, on the dev SLURM, by USR2 and a requeue) resumes to what it would have been; the
folded batch's padding is neutral. Packing as processes (pack_as = "processes") stays for model
families the engine does not know."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from seedgrid.checkpoint import Checkpointer
from seedgrid.grid.local import alive
from seedgrid.rundir import task_log
from seedgrid.store import read_shard
from seedgrid.trainer import train_cell, train_cells

from conftest import REPO, run_cli, tiny_config, tiny_raw, wait_until, write_toml

LORA_LLAMA = {"model": {"name": "tiny-random-llama", "max_length": 32},
              "lora": {"rank": 4, "alpha": 8, "dropout": 0.1,
                       "target_modules": ["q_proj", "v_proj"]}}
FAMILIES = {"bert": {}, "roberta": {"model": {"name": "tiny-random-roberta", "max_length": 32}},
            "llama + lora": LORA_LLAMA,
            "bert + lora": {"lora": {"rank": 4, "alpha": 8, "dropout": 0.1,
                                     "target_modules": ["query", "value"]}}}
QUIET = {"log": lambda _: None}


def _same_cell(a, b, atol=1e-5):
    """Within float tolerance on the CPU: logits and losses to 1e-5, the same predictions."""
    assert a.status.item() == b.status.item()
    for name in ("logits", "train_loss"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=atol, rtol=0)
    assert (a.logits.values.argmax(-1) == b.logits.values.argmax(-1)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_pack_equals_its_cells_trained_alone(family):
    cfg = tiny_config(**FAMILIES[family])  # dropout 0.1 everywhere, padding differs per cell
    cells = [(1, 2), (2, 1), (3, 3)]
    packed = train_cells(cfg, cells, **QUIET)
    for cell, shard in zip(cells, packed):
        _same_cell(shard, train_cell(cfg, *cell, **QUIET))
        assert shard.attrs["pack"] == "wi=1 do=2, wi=2 do=1, wi=3 do=3"
    trained = [s.logits.values[0, 0, :, -1] for s in packed]
    assert not np.allclose(trained[0], trained[1])  # the cells did differ


def test_a_compiled_pack_equals_the_eager_one():
    """[runtime] compile: the forward and loss as one graph (fullgraph: a graph break would
    be an error), the same cells within float tolerance."""
    cells = [(1, 2), (2, 1)]
    compiled = train_cells(tiny_config(runtime={"compile": True}), cells, **QUIET)
    for a, b in zip(compiled, train_cells(tiny_config(), cells, **QUIET)):
        _same_cell(a, b)


def test_a_pack_with_gradient_checkpointing_is_the_same():
    """The recomputed forward draws the same masks (they are a function of the update and the
    rows, not of a generator's state)."""
    cells = [(1, 2), (2, 1)]
    recomputed = train_cells(tiny_config(runtime={"gradient_checkpointing": True}), cells,
                             **QUIET)
    for a, b in zip(recomputed, train_cells(tiny_config(), cells, **QUIET)):
        _same_cell(a, b)


def test_a_cell_is_the_same_in_any_pack_and_its_masks_are_its_own():
    cfg = tiny_config()
    small = train_cells(cfg, [(3, 5), (1, 1)], **QUIET)[0]
    large = train_cells(cfg, [(2, 7), (9, 9), (3, 5)], **QUIET)[2]
    _same_cell(small, large, atol=1e-6)
    no_dropout = train_cell(tiny_config(train={"dropout": 0.0}), 3, 5, **QUIET)
    assert not np.allclose(small.train_loss.values, no_dropout.train_loss.values)  # masks on


class _Stop(Exception):
    pass


def _checkpoints_at(cfg, cells, tmp_path, update, tag):
    """Each cell trained alone up to ``update``, its checkpoint saved there (as on SIGTERM)."""
    paths = []
    for wi, do in cells:
        checkpointer = Checkpointer(tmp_path / f"{tag}_wi{wi}_do{do}.pt")

        def stop(u, _, checkpointer=checkpointer):
            if u == update:
                checkpointer.save()
                raise _Stop

        with pytest.raises(_Stop):
            train_cell(cfg, wi, do, checkpointer=checkpointer, on_update=stop, **QUIET)
        paths.append(checkpointer.path)
    return paths


def _copy(path, to):
    to.write_bytes(path.read_bytes())
    return Checkpointer(to)


def test_clipping_is_per_cell_a_wild_neighbour_leaves_a_quiet_cell_as_alone(tmp_path):
    cfg = tiny_config(train={"max_grad_norm": 0.1})
    quiet, wild = _checkpoints_at(cfg, [(1, 1), (2, 2)], tmp_path, 3, "at3")
    state = torch.load(wild, weights_only=True)
    state["model"]["classifier.weight"] *= 1e4  # huge logits: its gradient norm is far above 0.1
    torch.save(state, wild)
    alone = train_cell(cfg, 1, 1, checkpointer=_copy(quiet, tmp_path / "alone.pt"), **QUIET)
    packed = train_cells(cfg, [(1, 1), (2, 2)], checkpointers=[
        _copy(quiet, tmp_path / "p1.pt"), _copy(wild, tmp_path / "p2.pt")], **QUIET)
    _same_cell(packed[0], alone, atol=1e-6)
    assert packed[1].train_loss.values[0, 0, 3] > 10  # the neighbour did train wild


def test_a_nan_cell_in_a_pack_diverges_alone_and_its_neighbours_go_on(tmp_path):
    cfg = tiny_config()
    healthy, broken = _checkpoints_at(cfg, [(1, 2), (2, 1)], tmp_path, 2, "at2")
    state = torch.load(broken, weights_only=True)
    state["model"]["classifier.weight"][0, 0] = float("nan")
    torch.save(state, broken)
    alone = train_cell(cfg, 1, 2, checkpointer=_copy(healthy, tmp_path / "alone.pt"), **QUIET)
    packed = train_cells(cfg, [(1, 2), (2, 1)], checkpointers=[
        _copy(healthy, tmp_path / "p1.pt"), _copy(broken, tmp_path / "p2.pt")], **QUIET)
    # nothing crossed: bitwise with torch 2.13; torch 2.5.1 rounds the stacked kernels apart
    # by up to 7.5e-9 — a NaN that crossed would make NaNs
    _same_cell(packed[0], alone, atol=1e-7)
    assert packed[1].status.item() == "diverged"
    assert np.isnan(packed[1].logits.values[0, 0][:, -1]).all()  # not evaluated after it


def test_checkpoints_go_both_ways_between_a_pack_and_a_lone_cell(tmp_path):
    cfg = tiny_config()
    cells = [(1, 2), (2, 1)]
    whole = {cell: train_cell(cfg, *cell, **QUIET) for cell in cells}
    # a lone checkpoint resumes inside a pack
    lone = _checkpoints_at(cfg, cells, tmp_path, 4, "lone")
    resumed = train_cells(cfg, cells, checkpointers=[Checkpointer(p) for p in lone], **QUIET)
    for cell, shard in zip(cells, resumed):
        _same_cell(shard, whole[cell])
    # a packed cell's checkpoint resumes alone
    checkpointers = [Checkpointer(tmp_path / f"pack_{k}.pt") for k in range(2)]

    def stop(u, _):
        if u == 6:
            for c in checkpointers:
                c.save()
            raise _Stop

    with pytest.raises(_Stop):
        train_cells(cfg, cells, checkpointers=checkpointers, on_update=stop, **QUIET)
    saved = torch.load(checkpointers[1].path, weights_only=True)
    assert saved["update"] == 6 and saved["model"]["classifier.weight"].shape == (2, 32)
    alone = train_cell(cfg, *cells[1], checkpointer=checkpointers[1], **QUIET)
    _same_cell(alone, whole[cells[1]])


def test_early_stopping_in_a_pack_keeps_each_cells_checkpoint_at_the_stop(tmp_path):
    cfg = tiny_config()
    checkpointers = [Checkpointer(tmp_path / f"c{k}.pt") for k in range(2)]
    stopped = train_cells(cfg, [(1, 1), (2, 2)], checkpointers=checkpointers,
                          stop_fractions=[0.5, None], **QUIET)
    assert [s.status.item() for s in stopped] == ["stopped", "done"]
    assert torch.load(checkpointers[0].path, weights_only=True)["update"] == 5
    continued = train_cell(cfg, 1, 1, checkpointer=checkpointers[0], **QUIET)
    _same_cell(continued, train_cell(cfg, 1, 1, **QUIET))


def test_the_folded_batch_padding_is_neutral_and_needs_the_mask_function():
    """A cell's rows padded further in the pack (its neighbour's sentences are longer) give
    its lone numbers; without seedgrid's mask function registered, transformers would build no
    padding mask at all, and the same comparison fails."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    cfg = tiny_config(train={"dropout": 0.0}, task={"train_size": 40})
    lone = train_cell(cfg, 1, 1, **QUIET)
    _same_cell(train_cells(cfg, [(1, 1), (1, 2)], **QUIET)[0], lone, atol=1e-6)
    saved = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.pop("seedgrid")
    try:
        ALL_MASK_ATTENTION_FUNCTIONS.register = lambda *a: None  # it stays unregistered
        unmasked = train_cells(cfg, [(1, 1), (1, 2)], **QUIET)[0]
    finally:
        del ALL_MASK_ATTENTION_FUNCTIONS.register
        ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["seedgrid"] = saved
    with pytest.raises(AssertionError):  # the check above would have caught a lost mask
        _same_cell(unmasked, lone)


def _submit(*args, wait=True, gpus=None):
    env = dict(os.environ)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    command = [sys.executable, "-m", "seedgrid", "submit", *args] + (["--wait"] if wait else [])
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


# 500 updates a cell: time to signal the task while its pack trains
LONGER = {"task": {"train_size": 400},
          "train": {"batch_size": 8, "evals_per_epoch": 2, "epochs": 10}}


def test_submit_pack_on_a_cpu_and_sigterm_then_resume_equals_the_uninterrupted_pack(tmp_path):
    config = write_toml(tmp_path / "long.toml", tiny_raw(grid={"n_wi": 1, "n_do": 2}, **LONGER))
    twin = _submit("--config", str(config), "--pack", "2", "--out", str(tmp_path / "twin"))
    assert twin.returncode == 0, twin.stdout + twin.stderr
    assert "a pack of 2 cells needs about" in twin.stderr
    out = tmp_path / "run"
    proc = _submit("--config", str(config), "--pack", "2", "--out", str(out), wait=False)
    markers = [out / "running/wi1_do1.json", out / "running/wi1_do2.json"]
    wait_until(lambda: all(m.exists() for m in markers), "the pack to start", 300)
    (task,) = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"][0][
        "task_ids"]
    log = task_log(out, task)
    wait_until(lambda: log.exists() and log.read_text().count("update 50/500") == 2,
               "both cells to evaluate once", 300)
    os.kill(json.loads(markers[0].read_text())["pid"], signal.SIGTERM)
    proc.communicate(timeout=300)
    wait_until(lambda: not alive(task), "the task to end after saving", 120)  # (else: queued)
    assert "SIGTERM: saved" in log.read_text()
    saved = [torch.load(out / f"checkpoints/wi1_do{d}.pt", weights_only=True)["update"]
             for d in (1, 2)]
    assert saved[0] == saved[1] and 50 <= saved[0] < 500  # in step: both at one update
    again = _submit("--resume", str(out), "--cluster", "local")
    assert again.returncode == 0, again.stdout + again.stderr
    for d in (1, 2):
        resumed, whole = (read_shard(r / f"shards/wi1_do{d}.nc") for r in (out, tmp_path / "twin"))
        for name in ("logits", "train_loss"):  # same threads, same pack: bitwise
            assert resumed[name].values.tobytes() == whole[name].values.tobytes(), name


def test_pack_as_processes_stays_for_gpus(tmp_path, tiny_toml):
    config = tiny_toml(grid={"n_wi": 1, "n_do": 2})
    out = tmp_path / "processes"
    result = _submit("--config", str(config), "--pack", "2", "--pack-as", "processes",
                     "--out", str(out), gpus="7")
    assert result.returncode == 0, result.stdout + result.stderr
    for d in (1, 2):
        shard = read_shard(out / f"shards/wi1_do{d}.nc")
        assert shard.attrs["gpu"] == "7" and shard.attrs["pack"] == ""  # each alone, side by side
        _same_cell(shard, train_cell(tiny_config(), 1, d, **QUIET))


def _distilbert(tmp_path):
    """A saved model folder of a family the pack engine does not know (random DistilBERT)."""
    import transformers

    from seedgrid.model import resolve

    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve("embedded:minilm"))
    config = transformers.DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1,
                                           n_heads=2, hidden_dim=64)
    folder = tmp_path / "distil"
    transformers.DistilBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("case", ["unknown family", "llama without lora", "fp16", "too large",
                                  "fits recomputed", "another config", "processes without a gpu",
                                  "several processes"])
def test_packs_that_cannot_be_are_one_line_exit_2_and_nothing_written(tmp_path, case):
    sections, args, message = {}, [], ""
    if case == "unknown family":
        sections = {"model": {"name": _distilbert(tmp_path), "max_length": 32}}
        message = "does not know model type 'distilbert'"
    elif case == "llama without lora":
        sections = {"model": LORA_LLAMA["model"]}
        message = "model type 'llama' without [lora]"
    elif case == "fp16":
        sections, message = {"train": {"mixed_precision": "fp16"}}, "one loss scale"
        args = ["--cluster", str(write_toml(tmp_path / "gpu.toml", {"executor": "slurm",
                                                                      "gpus_per_cell": 1}))]
    elif case == "too large":
        args = ["--cluster", str(write_toml(tmp_path / "small.toml", {"executor": "slurm",
                                                                        "mem_gb": 0.01}))]
        message = "more than the 0.01 GB of the task's memory"
    elif case == "fits recomputed":  # between the two estimates: checkpointing is the advice
        from seedgrid import memory

        cfg = tiny_config()
        recomputed = tiny_config(runtime={"gradient_checkpointing": True})
        have = (memory.pack_memory(cfg, 2).total_gb + memory.pack_memory(recomputed, 2).total_gb) / 2
        args = ["--cluster", str(write_toml(tmp_path / "mid.toml", {"executor": "slurm",
                                                                      "mem_gb": have}))]
        message = "or set [runtime] gradient_checkpointing = true (the pack of 2 then fits"
    elif case == "another config":
        first = _submit("--config", str(write_toml(tmp_path / "a.toml", tiny_raw())),
                        "--out", str(tmp_path / "run"), wait=False)
        assert first.wait(timeout=300) == 0
        sections, message = {"train": {"learning_rate": 0.5}}, "holds cells of config"
        args = ["--resume", str(tmp_path / "run")]
    elif case == "processes without a gpu":
        args, message = ["--pack-as", "processes"], "its tasks get no GPU to share"
    else:
        args = ["--cluster", str(write_toml(tmp_path / "multi.toml", {"executor": "slurm",
                                                                        "gpus_per_cell": 2}))]
        message = "a pack trains in one process"
    config = write_toml(tmp_path / "c.toml", tiny_raw(**sections))
    out = tmp_path / "new"
    result = _submit("--config", str(config), "--out", str(out), "--pack", "2", *args,
                     wait=False, gpus="")
    _, err = result.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_a_preempted_pack_checkpoints_every_cell_and_the_requeue_resumes_them(
        slurm, tmp_path, tiny_toml):
    profile = write_toml(tmp_path / "packed.toml", {
        "executor": "slurm", "partition": "debug", "cpus_per_task": 2, "mem_gb": 2,
        "time_min": 30, "cells_per_gpu": 2})
    config = tiny_toml(grid={"n_wi": 1, "n_do": 2}, runtime={"deterministic": True}, **LONGER)
    out = tmp_path / "packed"
    submitted = run_cli("submit", "--config", str(config), "--cluster", str(profile), "--out",
                        str(out))
    assert submitted.returncode == 0, submitted.stderr
    (array,) = json.loads((out / "jobs.json").read_text())["submissions"][0]["arrays"]
    (task,) = array["task_ids"]  # two cells, one task, one process
    log = task_log(out, task)

    def said(text, times=1):
        return log.exists() and log.read_text(errors="replace").count(text) >= times

    wait_until(lambda: said("update 50/500", 2), "both cells to evaluate once", 300)
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    wait_until(lambda: said("resumed from", 2), "the requeued task to resume both cells", 300)
    wait_until(lambda: all((out / f"shards/wi1_do{d}.nc").exists() for d in (1, 2)),
               "both shards", 600)
    assert not list((out / "checkpoints").glob("*.pt"))
    # the same pack never stopped: a requeue adds nothing (a pack and its cells alone round
    # differently, and over 500 updates that drift grows past 1e-5: 8e-5 and 1e-2 here)
    whole = train_cells(tiny_config(runtime={"deterministic": True}, **LONGER),
                        [(1, 1), (1, 2)], **QUIET)
    for d in (1, 2):
        resumed = read_shard(out / f"shards/wi1_do{d}.nc")
        assert resumed.attrs["pack"] == "wi=1 do=1, wi=1 do=2"
        _same_cell(resumed, whole[d - 1], atol=1e-6)
