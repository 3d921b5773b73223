"""A cell's dropout masks: a function of its seeds, the update and the example's place in its
global batch — never of the layout that trains it, and computed on the device for every cell
of a pack at once.

Dropout is the one random thing in a cell's training besides its two seeds' draws (the head,
the data order: :mod:`seedgrid.seeds`). torch's own dropout draws from one stream per process,
so a cell trained on 2 processes, with gradient accumulation, or beside other cells in a pack
would see other masks than the same cell alone. Here every dropout site of the model is a
:class:`CellDropout`, and whether element ``(row, i, j, ...)`` of site ``s`` is kept at update
``u`` is a counter-based draw (SplitMix64, Steele et al. 2014): 64 bits of
``mix64(key + counter * gamma)``, where the cell's key at that site and update is
``mix64(mix64(seed + gamma (u + 1)) + gamma (s + 1))`` from its dropout seed (every site's keys
computed once a forward, :meth:`Masks.begin`), and ``counter`` packs the example's place in the
cell's *global* batch and the element's position (token, feature; head, query, key) 16 bits
apiece. The top 32 bits are compared with ``p · 2^32``. Nothing depends on the padded length,
the other cells, the process or the micro-batch, so a real token gets the same mask alone or in
a pack of any K, on 1 or N processes, in one micro-batch or several, before or after a requeue
(nothing to save: the update says it).

Computed with int64 tensor ops (wrapping multiplies, masked shifts) over index tensors built on
the device: no generator, no host copy, no sync, nothing that stops ``torch.compile`` (one
fused kernel per site under inductor). The keys and the first row of a forward live in device
tensors that :meth:`Masks.begin` fills in place. A checkpoint needs nothing of them.

The sites are numbered in the model's module order. A site's tensor is ``(rows, seq, width)``
(hidden states, LoRA inputs), ``(rows, heads, seq, seq)`` (attention probabilities, through the
``seedgrid`` attention function registered here) or ``(rows, width)`` (the pooled output).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Sequence

#: the name of seedgrid's attention function (and its mask function) in transformers' registry
ATTENTION = "seedgrid"

# SplitMix64's constants as int64 (two's complement): the golden-ratio increment and the two
# multipliers of its finaliser (Steele, Lea and Flood 2014; Vigna's splitmix64.c)
_GAMMA = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
#: bits of the counter per dimension after the row: each dimension below 65,536
_BITS = 16


def _wrap(n: int) -> int:
    """``n`` modulo 2^64 as an int64 (two's complement): a constant of wrapping arithmetic."""
    return (n + (1 << 63)) % (1 << 64) - (1 << 63)


def _shr(x: torch.Tensor, n: int) -> torch.Tensor:
    """A logical right shift of int64 ``x`` (torch's ``>>`` keeps the sign)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, in wrapping int64 arithmetic."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


class Masks(nn.Module):
    """What the dropout sites of one model draw from: one dropout seed per cell (K cells folded
    into the batch, cell-major; a buffer, moved with the model), and for the forward to come
    each site's key per cell and the first row — tensors on the same device that
    :meth:`begin` fills in place. Those two are not buffers: a process's first row is its own,
    and DDP would overwrite it with rank 0's at every forward."""

    seeds: torch.Tensor

    def __init__(self, seeds: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("seeds", torch.tensor([int(s) for s in seeds], dtype=torch.int64),
                             persistent=False)
        self.sites = 0
        #: (site, cell): mix64(mix64(seed + gamma (u + 1)) + gamma (s + 1)) of update u
        self.keys = torch.zeros((0, len(seeds)), dtype=torch.int64)
        self.first_row = torch.zeros((), dtype=torch.int64)

    def use_sites(self, sites: int) -> None:
        """The model has ``sites`` dropout sites (numbered 0..sites-1)."""
        self.sites = sites

    def begin(self, update: int, first_row: int) -> None:
        """The next forward holds, for every cell, the consecutive examples of its global batch
        of update ``update`` (0-based) from position ``first_row`` on: every site's key for
        every cell computed on the device at once (no copy from the host, no sync)."""
        device = self.seeds.device
        if self.keys.shape[0] != self.sites or self.keys.device != device:  # (once)
            self.keys = torch.zeros((self.sites, self.seeds.shape[0]), dtype=torch.int64,
                                    device=device)
            self.first_row = torch.zeros((), dtype=torch.int64, device=device)
        sites = torch.arange(1, self.sites + 1, device=device)
        cell = mix64(self.seeds + _wrap(_GAMMA * (update + 1)))
        self.keys.copy_(mix64(cell + sites.unsqueeze(1) * _GAMMA))
        self.first_row.fill_(first_row)

    def keep(self, shape: Sequence[int], p: float, site: int) -> torch.Tensor:
        """Which elements of a site's tensor of ``shape`` (K cells' rows, cell-major) are kept,
        as booleans of that shape."""
        k = self.seeds.shape[0]
        rows, rest = shape[0] // k, list(shape[1:])
        if any(n >= 1 << _BITS for n in rest):
            raise ValueError(f"dropout site {site}: a dimension of {tuple(shape)} is above "
                             f"{(1 << _BITS) - 1}")
        device = self.seeds.device
        # key + counter * gamma, the counter's parts (row, then each other dimension, 16 bits
        # apiece) each multiplied by its place value times gamma and broadcast
        row = (self.first_row + torch.arange(rows, device=device)) * _wrap(
            _GAMMA << (_BITS * len(rest)))
        z = self.keys[site].view(k, 1, *[1] * len(rest)) + row.view(1, rows, *[1] * len(rest))
        for d, n in enumerate(rest):
            index = torch.arange(n, device=device) * _wrap(_GAMMA << (_BITS * (len(rest) - 1 - d)))
            z = z + index.view(1, 1, *[1] * d, n, *[1] * (len(rest) - 1 - d))
        threshold = min(int(round(p * 2.0**32)), 1 << 32)
        return (_shr(mix64(z), 32) >= threshold).reshape(shape)

    def drop(self, x: torch.Tensor, p: float, site: int) -> torch.Tensor:
        """``x`` (the K cells' rows, cell-major) with each cell's mask of ``site``, scaled by
        1 / (1 - p) as torch's dropout does."""
        return torch.where(self.keep(x.shape, p, site), x * (1.0 / (1 - p)), 0.0)  # (saves
        # only the booleans for the backward)


class CellDropout(nn.Module):
    """``nn.Dropout`` whose masks come from :class:`Masks` (site ``site``); identity in eval."""

    def __init__(self, p: float, site: int, masks: Masks) -> None:
        super().__init__()
        self.p, self.site = p, site
        self.masks = masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return self.masks.drop(x, self.p, self.site)

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site}"


def use_cell_dropout(model: nn.Module, masks: Masks) -> int:
    """Make every dropout of ``model`` a :class:`CellDropout` drawing from ``masks`` — its
    ``nn.Dropout`` modules, and attention probabilities through the ``seedgrid`` attention
    function — in place; returns the number of sites."""
    sites = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Dropout):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, CellDropout(module.p, sites, masks))
            sites += 1
        elif isinstance(getattr(module, "attention_dropout", None), float):  # decoders (Llama)
            module.seedgrid_dropout = CellDropout(module.attention_dropout, sites, masks)
            sites += 1
    for module in model.modules():  # encoders (BERT, RoBERTa): the attention's own dropout
        if isinstance(getattr(module, "dropout", None), CellDropout) and hasattr(module,
                                                                                  "scaling"):
            module.seedgrid_dropout = module.dropout
    _register_attention()
    for sub in [model, *model.modules()]:  # some models keep a copy of the config per submodule
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = ATTENTION
    masks.use_sites(sites)
    return sites


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention with the cell's own masks on the probabilities: eager while
    training with dropout, SDPA otherwise (evaluation; a decoder without attention dropout)."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if dropout == 0.0 or not module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                                      scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, :key.shape[-2]]
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = module.seedgrid_dropout(weights)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _register_attention() -> None:
    """``seedgrid`` in transformers' attention registry, and its mask function: without the
    latter transformers builds no padding mask at all for an unknown attention name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register(ATTENTION, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, eager_mask)
