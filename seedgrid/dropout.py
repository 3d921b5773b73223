"""A cell's dropout masks: a function of its seeds, the update and the example's place in its
global batch — never of the layout that trains it.

Dropout is the one random thing in a cell's training besides its two seeds' draws (the head,
the data order: :mod:`seedgrid.seeds`). torch's own dropout draws from one stream per process,
so a cell trained on 2 processes, with gradient accumulation, or beside other cells in a pack
would see other masks than the same cell alone. Here every dropout site of the model is a
:class:`CellDropout`, and the masks of update ``u`` at site ``s`` of a cell are a Bernoulli draw
from a generator seeded by ``(the cell's dropout seed, u, s)`` at the shape of the cell's whole
global batch (its ``B`` examples, padded to its longest); a forward takes the rows of the
examples it holds, cut (or padded) to its own length. Padded positions never reach a real token,
so the mask a real token gets is the same alone or in a pack of any K, on 1 or N processes, in
one micro-batch or several, before or after a requeue (nothing to save: the update says it).

The sites are numbered in the model's module order. A site's tensor is ``(rows, seq, width)``
(hidden states, LoRA inputs), ``(rows, heads, seq, seq)`` (attention probabilities, through the
``seedgrid`` attention function registered here) or ``(rows, width)`` (the pooled output).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seedgrid.seeds import derive

if TYPE_CHECKING:
    from collections.abc import Sequence

#: the name of seedgrid's attention function (and its mask function) in transformers' registry
ATTENTION = "seedgrid"


class Masks:
    """What the dropout sites of one model draw from: one dropout seed per cell (K cells folded
    into the batch, cell-major), and what :meth:`begin` says of the forward to come."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = list(seeds)
        self._update = -1
        self._positions = torch.zeros(0, dtype=torch.int64)
        self._batch = 0
        self._longest: list[int] = []
        self._drawn: dict[tuple[int, int], torch.Tensor] = {}

    def begin(self, update: int, positions: np.ndarray, batch: int, longest: Sequence[int]):
        """The next forward holds, for every cell, the examples at ``positions`` (0-based, in
        order) of its global batch of update ``update``, which has ``batch`` examples, the
        longest of cell k's being ``longest[k]`` tokens."""
        if update != self._update:
            self._drawn.clear()  # masks are drawn once per update, then cut per forward
        self._update, self._positions = update, torch.from_numpy(np.asarray(positions, np.int64))
        self._batch, self._longest = batch, list(longest)

    @torch.compiler.disable  # generators and a per-update cache: eager, between compiled parts
    def apply(self, x: torch.Tensor, p: float, site: int) -> torch.Tensor:
        """``x`` (the K cells' rows, cell-major) with each cell's mask of ``site``, scaled by
        1 / (1 - p) as torch's dropout does."""
        k = len(self.seeds)
        parts = [self._mask(cell, site, p, chunk) for cell, chunk in enumerate(x.chunk(k))]
        return x * torch.cat(parts).to(x.dtype) * (1.0 / (1 - p))

    def _mask(self, cell: int, site: int, p: float, chunk: torch.Tensor) -> torch.Tensor:
        """Cell ``cell``'s mask for ``chunk``: its rows of the whole batch's draw, cut or
        padded (kept: padding) to the chunk's sequence length."""
        full = self._drawn.get((cell, site))
        if full is None:
            full = self._draw(cell, site, p, chunk)
            self._drawn[cell, site] = full
        rows = full[self._positions.to(full.device)]
        seq_dims = {3: (1,), 4: (2, 3)}.get(chunk.dim(), ())
        for d in seq_dims:
            n = chunk.shape[d]
            rows = rows.narrow(d, 0, min(n, rows.shape[d]))
            if rows.shape[d] < n:
                pad = [0, 0] * (rows.dim() - 1 - d) + [0, n - rows.shape[d]]
                rows = F.pad(rows, pad, value=True)
        if rows.shape != chunk.shape:
            raise RuntimeError(f"dropout site {site}: a mask of shape {tuple(rows.shape)} for "
                               f"rows of shape {tuple(chunk.shape)}")
        return rows

    def _draw(self, cell: int, site: int, p: float, chunk: torch.Tensor) -> torch.Tensor:
        """The mask of a cell's whole global batch at ``site`` for this update (kept: True),
        kept as booleans (a quarter of float32's memory) until the update ends."""
        longest = self._longest[cell]
        shape = list(chunk.shape)
        shape[0] = self._batch
        for d in {3: (1,), 4: (2, 3)}.get(chunk.dim(), ()):
            shape[d] = longest
        generator = torch.Generator(chunk.device)
        generator.manual_seed(derive("dropout", self.seeds[cell], self._update, site))
        return torch.empty(shape, device=chunk.device).bernoulli_(
            1 - p, generator=generator).bool()


class CellDropout(nn.Module):
    """``nn.Dropout`` whose masks come from :class:`Masks` (site ``site``); identity in eval."""

    def __init__(self, p: float, site: int, masks: Masks) -> None:
        super().__init__()
        self.p, self.site = p, site
        self.masks = masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return self.masks.apply(x, self.p, self.site)

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
