"""A cell's dropout masks (seedgrid.dropout) and the kernels of a pack's update (seedgrid.engine,
seedgrid.stacked), checked on the CPU against independent computations: SplitMix64 against a
plain Python loop; a cell's masks the same alone, beside any neighbours, at any padding, in any
micro-batch; the keep rate; the stacked layer norm and per-cell clipping against the lone
operations; and what a GPU needs, counted here: the aten operators an update dispatches do not
grow with K, and the compiled forward and loss is one graph."""

import collections

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from seedgrid import stacked
from seedgrid.dropout import Masks, mix64

from conftest import tiny_config


def _splitmix64(state: int, n: int) -> list[int]:
    """Vigna's splitmix64.c, a plain loop over Python integers modulo 2^64."""
    out, mask = [], (1 << 64) - 1
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_the_mix_is_splitmix64_in_wrapping_int64():
    seed, gamma = 1234567, 0x9E3779B97F4A7C15
    expected = _splitmix64(seed, 8)
    states = [(seed + (i + 1) * gamma) % (1 << 64) for i in range(8)]
    as_int64 = torch.tensor([s - (1 << 64) if s >= 1 << 63 else s for s in states])
    got = [v % (1 << 64) for v in mix64(as_int64).tolist()]
    assert got == expected


def _masks(seeds, update=3, first_row=0):
    masks = Masks(seeds)
    masks.use_sites(8)
    masks.begin(update, first_row)
    return masks


@pytest.mark.parametrize("shape", [(16, 40, 32), (16, 4, 40, 40), (16, 32)])
def test_a_cells_mask_is_its_own_alone_in_any_pack_padding_and_micro_batch(shape):
    rows, rest = shape[0], shape[1:]
    alone = _masks([22]).keep((rows, *rest), 0.1, site=5)
    pack = _masks([11, 22, 33]).keep((3 * rows, *rest), 0.1, site=5)
    assert torch.equal(pack[rows:2 * rows], alone)  # cell 2 of 3: its rows are its own
    other_pack = _masks([22, 99]).keep((2 * rows, *rest), 0.1, site=5)
    assert torch.equal(other_pack[:rows], alone)
    seq_dims = {3: (1,), 4: (2, 3)}.get(len(shape), ())  # token (query, key) positions
    padded = [n + 7 if d in seq_dims else n for d, n in enumerate(shape)]
    longer = _masks([22]).keep(padded, 0.1, site=5)  # the batch padded 7 tokens further
    assert torch.equal(longer[tuple(slice(0, n) for n in shape)], alone)
    second_half = _masks([22], first_row=rows // 2).keep((rows // 2, *rest), 0.1, site=5)
    assert torch.equal(second_half, alone[rows // 2:])  # a micro-batch of rows 8..15
    assert not torch.equal(_masks([22], update=4).keep((rows, *rest), 0.1, 5), alone)
    assert not torch.equal(_masks([22]).keep((rows, *rest), 0.1, 6), alone)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_the_keep_rate_is_one_minus_p(p):
    kept = _masks([1, 2]).keep((2 * 64, 50, 30), p, site=0).double().mean().item()
    n = 2 * 64 * 50 * 30
    assert abs(kept - (1 - p)) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12  # five sigmas


def test_the_stacked_layer_norm_is_each_cells_layer_norm():
    k, width = 3, 24
    torch.manual_seed(0)
    weight, bias = torch.randn(k, width), torch.randn(k, width)
    x = torch.randn(k * 5, 7, width, requires_grad=True)
    grouped = stacked.StackedLayerNorm(weight.clone(), bias.clone(), 1e-12)(x)
    each = torch.cat([F.layer_norm(x[i * 5:(i + 1) * 5], (width,), weight[i], bias[i], 1e-12)
                      for i in range(k)])
    torch.testing.assert_close(grouped, each, atol=1e-6, rtol=0)


def test_clipping_per_cell_is_clip_grad_norm_of_each_cell():
    k = 3
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(k, 4, 5)), torch.nn.Parameter(torch.randn(k, 6))]
    for p, scale in zip(params, (1.0, 50.0)):
        p.grad = torch.randn_like(p) * scale
    params[0].grad[1] *= 1e-3  # cell 1: a small norm, left as it is
    lone = [[torch.nn.Parameter(p[i].detach().clone()) for p in params] for i in range(k)]
    for i, cell in enumerate(lone):
        for q, p in zip(cell, params):
            q.grad = p.grad[i].clone()
    norms = stacked.clip_per_cell(params, k, max_norm=1.0)
    for i, cell in enumerate(lone):
        expected = torch.nn.utils.clip_grad_norm_(cell, 1.0, foreach=False)
        torch.testing.assert_close(norms[i], expected, atol=1e-5, rtol=1e-6)
        for q, p in zip(cell, params):
            torch.testing.assert_close(p.grad[i], q.grad, atol=1e-6, rtol=1e-6)


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _ops_of_an_update(k: int) -> int:
    import time

    from seedgrid import data, engine
    from seedgrid.resume import resume_cells

    pack = engine.setup(tiny_config(), [(1, d) for d in range(1, k + 1)])
    runs = resume_cells(pack, [None] * k, lambda _: None, time.time())
    orders = [data.global_batches(len(pack.train), 8, run.seed_do, 0) for run in runs]
    engine.update_cells(pack, runs, 0, [o[0] for o in orders], [True] * k)
    with _Count() as count:
        engine.update_cells(pack, runs, 1, [o[1] for o in orders], [True] * k)
    return sum(count.ops.values())


def test_the_kernels_of_an_update_do_not_grow_with_the_cells():
    """What a GPU launches per update, counted as dispatched aten operators (views left out):
    a pack of 2, 4 or 8 dispatches the same but for one multi-tensor scale per cell
    (benchmarks/ops.py counts BERT-large's structure)."""
    two, four, eight = (_ops_of_an_update(k) for k in (2, 4, 8))
    assert four - two == 2 and eight - four == 4, (two, four, eight)


def test_the_compiled_forward_and_loss_is_one_graph():
    import torch._dynamo

    from seedgrid import data, engine

    pack = engine.setup(tiny_config(), [(1, 1), (1, 2), (2, 1), (2, 2)])
    pack.model.train()
    inputs = data.collate(pack.tokenizer, pack.train, np.arange(32), "cpu")
    labels = inputs.pop("labels")
    pack.masks.begin(0, 0)
    explained = torch._dynamo.explain(engine.forward_losses)(pack.model, inputs, labels, 4,
                                                             pack.family)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        explained.break_reasons
