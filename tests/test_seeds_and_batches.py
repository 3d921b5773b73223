"""The reproducibility contract: what seed_wi and seed_do drive, and global batches on 1 or 2
processes, with or without gradient accumulation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from seedgrid import data, seeds
from seedgrid.model import load_model
from seedgrid.store import read_shard
from seedgrid.trainer import train_cell

from conftest import REPO, tiny_config


def test_streams_are_distinct_and_stable():
    assert seeds.derive("wi", 3) != seeds.derive("do", 3)
    assert seeds.derive("do", 3, 0) != seeds.derive("do", 3, 1)
    assert seeds.derive("wi", 3) == seeds.derive("wi", 3)
    np.testing.assert_array_equal(seeds.epoch_permutation(5, 0, 100),
                                  seeds.epoch_permutation(5, 0, 100))
    assert not np.array_equal(seeds.epoch_permutation(5, 0, 100), seeds.epoch_permutation(5, 1, 100))
    assert not np.array_equal(seeds.epoch_permutation(5, 0, 100), seeds.epoch_permutation(6, 0, 100))


def test_head_depends_on_seed_wi_only_and_the_body_on_neither():
    cfg = tiny_config().model
    a, b, c = (load_model(cfg, 2, 0.1, wi) for wi in (3, 3, 4))
    for name, p in a.named_parameters():
        same_as_b = torch.equal(p, dict(b.named_parameters())[name])
        same_as_c = torch.equal(p, dict(c.named_parameters())[name])
        assert same_as_b
        assert same_as_c == (not name.startswith("classifier.weight")), name
    assert torch.count_nonzero(a.classifier.bias) == 0
    std = a.classifier.weight.std().item()
    assert 0.005 < std < 0.05  # normal(0, 0.02), as HF initialises heads


@pytest.fixture(scope="module")
def recorded():
    """Train four tiny cells once, recording the examples of each update."""
    cfg = tiny_config()
    out = {}
    for wi, do in [(3, 5), (4, 5), (3, 6)]:
        seen = {}
        shard = train_cell(cfg, wi, do, log=lambda _: None,
                           on_update=lambda u, idx, seen=seen: seen.__setitem__(u, sorted(idx)))
        out[wi, do] = (shard, seen)
    return out


def test_same_do_means_the_same_batches_whatever_the_wi(recorded):
    assert recorded[3, 5][1] == recorded[4, 5][1]
    assert recorded[3, 5][1] != recorded[3, 6][1]


def test_same_wi_means_the_same_initial_predictions_whatever_the_do(recorded):
    before = {k: shard.logits.isel(step=0).values for k, (shard, _) in recorded.items()}
    np.testing.assert_array_equal(before[3, 5], before[3, 6])
    assert not np.array_equal(before[3, 5], before[4, 5])
    after = {k: shard.logits.isel(step=-1).values for k, (shard, _) in recorded.items()}
    assert not np.array_equal(after[3, 5], after[3, 6])  # training did depend on the order


@pytest.mark.parametrize("world, accumulation", [(1, 1), (2, 1), (1, 3), (2, 2), (3, 4)])
def test_process_shares_and_micro_batches_cover_each_global_batch_exactly(world, accumulation):
    for n, batch_size in [(40, 8), (41, 8), (5, 16)]:
        for epoch in range(2):
            batches = data.global_batches(n, batch_size, 9, epoch)
            np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(n))
            for batch in batches:
                parts = [data.local_micro_batches(batch, r, world, accumulation)
                         for r in range(world)]
                assert all(len(p) == accumulation for p in parts)
                np.testing.assert_array_equal(np.concatenate(sum(parts, [])), batch)


def test_evaluation_points():
    np.testing.assert_array_equal(data.evaluation_updates(10, 2, 4), [0, 3, 5, 8, 10, 13, 15, 18, 20])
    np.testing.assert_array_equal(data.evaluation_updates(3, 1, 3), [0, 1, 2, 3])
    from seedgrid.errors import UsageError
    with pytest.raises(UsageError, match="evals_per_epoch = 4 exceeds the 3 updates per epoch"):
        data.evaluation_updates(3, 1, 4)


def _record(tmp_path, name, processes, **sections):
    from conftest import tiny_raw, write_toml

    config = write_toml(tmp_path / f"{name}.toml", tiny_raw(**sections))
    prefix = str(tmp_path / name)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                "--standalone"] if processes > 1 else [sys.executable]
    run = subprocess.run([*launcher, str(REPO / "tests/helpers/record_cell.py"), str(config),
                          "2", "3", prefix], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"processes {processes}" in run.stdout
    with open(prefix + ".json") as f:
        return {int(k): v for k, v in json.load(f).items()}, read_shard(prefix + ".nc")


def test_one_and_two_processes_and_accumulation_see_the_same_global_batches(tmp_path):
    # Dropout on (0.1): a cell's masks are its own whatever the layout, so the same batches
    # give the same losses and logits, up to the order of float sums, and the same predictions.
    # batch 6 over 40 examples leaves a last batch of 4: uneven shares, empty micro-batches.
    common = {"train": {"dropout": 0.1, "batch_size": 6}}
    one, shard_one = _record(tmp_path, "one", 1, **common)
    two, shard_two = _record(tmp_path, "two", 2, **common)
    acc, shard_acc = _record(tmp_path, "acc", 2, runtime={"gradient_accumulation": 3}, **common)
    expected = {u + 1 + e * 7: sorted(b.tolist()) for e in range(2)
                for u, b in enumerate(data.global_batches(40, 6, 3, e))}
    assert one == expected
    assert two == expected
    assert acc == expected
    assert shard_two.attrs["num_processes"] == 2
    for other in (shard_two, shard_acc):
        np.testing.assert_allclose(other.train_loss.values, shard_one.train_loss.values,
                                   rtol=0, atol=1e-5)
        np.testing.assert_allclose(other.logits.values, shard_one.logits.values, rtol=0,
                                   atol=1e-5)
        assert (other.logits.values.argmax(-1) == shard_one.logits.values.argmax(-1)).all()
    no_dropout = _record(tmp_path, "off", 1, train={"dropout": 0.0, "batch_size": 6})[1]
    assert not np.allclose(no_dropout.train_loss.values, shard_one.train_loss.values)
