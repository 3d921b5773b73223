"""K cells as ONE stacked model (a pack): the transformers module tree, K folded into the batch.

The rows of a forward are cell-major: rows ``k*b .. k*b+b-1`` are cell k's. Every leaf module
that trains is replaced by a stacked one holding the K cells' parameters along a new first
dimension — ``nn.Linear`` → :class:`StackedLinear` (one batched matmul over K),
``nn.LayerNorm`` → :class:`StackedLayerNorm`, ``nn.Embedding`` → :class:`StackedEmbedding` (one
table, ids offset per cell) — and leaves that do not train (a LoRA model's frozen body) stay as
they are, shared: their matmuls see all K·b rows at once. Attention has no parameters and runs
once over the folded batch; each cell's dropout draws from its own masks
(:mod:`seedgrid.dropout`). With HFTA's recipe (Wang et al., MLSys 2021) this makes K cells'
small kernels one large one's, which is what fills a GPU.

Nothing numeric crosses between cells: no stacked parameter element is shared, the loss is a sum
of per-cell losses, AdamW is elementwise, and clipping takes a norm per cell
(:func:`clip_per_cell`). Parameter names stay the lone model's, slice k of each stacked tensor
being cell k's — so :func:`cell_state` and :func:`load_cell_state` turn a pack's model and
optimizer state into a lone cell's checkpoint and back.

The engine knows the families whose parameterised leaves are only these three and whose inputs
it can fold: BERT and RoBERTa (MiniLM is a BERT), fully fine-tuned or with ``[lora]``, and
decoders (Llama) with ``[lora]`` (their RMSNorm is then frozen, shared).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seedgrid.errors import UsageError

#: model_type → how a folded batch gets its position ids: passed as arange (BERT keeps a
#: batch-1 buffer), computed by the model from the input ids (RoBERTa), or not per-cell at
#: all (Llama: rotary, no parameters)
FAMILIES = {"bert": "arange", "roberta": "model", "llama": "model"}
#: families the engine packs only with [lora] (their norms would train otherwise)
LORA_ONLY = ("llama",)


class StackedLinear(nn.Module):
    """K ``nn.Linear`` in one: weight (K, out, in), bias (K, out) — the lone layout, stacked."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        rows = x.reshape(k, -1, x.shape[-1])  # (K, rows per cell, in)
        if self.bias is None:
            y = torch.bmm(rows, self.weight.transpose(1, 2))
        else:
            y = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight.transpose(1, 2))
        return y.reshape(*x.shape[:-1], -1)


class StackedLayerNorm(nn.Module):
    """K ``nn.LayerNorm`` in one: every row normalised at once (no affine), then each cell's
    rows scaled and shifted by its own weight and bias — two kernels whatever K is."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, width = self.weight.shape
        rows = F.layer_norm(x, (width,), None, None, self.eps).reshape(k, -1, width)
        if self.bias is None:
            return (rows * self.weight.unsqueeze(1)).reshape(x.shape)
        return torch.addcmul(self.bias.unsqueeze(1), rows, self.weight.unsqueeze(1)).reshape(
            x.shape)


class StackedEmbedding(nn.Module):
    """K ``nn.Embedding`` in one table (K, V, H): cell k's ids are looked up at ``ids + k*V``."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.padding_idx = padding_idx
        if padding_idx is not None:  # as nn.Embedding: the padding row never trains
            self.weight.register_post_accumulate_grad_hook(self._no_padding_gradient)

    def _no_padding_gradient(self, weight: torch.Tensor) -> None:
        if weight.grad is not None:
            weight.grad[:, self.padding_idx].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        k, vocab, width = self.weight.shape
        offset = torch.arange(k, device=ids.device).repeat_interleave(ids.shape[0] // k) * vocab
        flat = ids + offset.view(-1, *[1] * (ids.dim() - 1))
        return F.embedding(flat, self.weight.reshape(k * vocab, width))


def check_family(model: nn.Module, lora: bool) -> None:
    """UsageError unless the engine can pack this model (see :data:`FAMILIES`)."""
    family = getattr(model.config, "model_type", "?")
    if family not in FAMILIES or family in LORA_ONLY and not lora:
        known = ", ".join(f"{f} ([lora] only)" if f in LORA_ONLY else f for f in FAMILIES)
        raise UsageError(f"--pack: the pack engine does not know model type {family!r}"
                         + (" without [lora]" if family in LORA_ONLY else "")
                         + f" (it packs {known}): pack its cells as processes (profile "
                         "pack_as = 'processes', on a GPU), or do not pack")


def stack(model: nn.Module, cells: list[dict[str, torch.Tensor]]) -> nn.Module:
    """Make ``model`` (built as one cell) the pack of ``len(cells)`` cells, in place: every leaf
    with a parameter that trains becomes stacked, cell k's tensors being ``cells[k]`` (its
    trainable parameters by name, as :func:`seedgrid.model.cell_parameters` gives them)."""
    for name, module in list(model.named_modules()):
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        prefix = f"{name}." if name else ""

        def stacked(attr: str) -> torch.Tensor:
            return torch.stack([cell[prefix + attr] for cell in cells]).detach().clone()

        def bias() -> torch.Tensor | None:
            return None if getattr(module, "bias", None) is None else stacked("bias")

        if isinstance(module, nn.Linear):
            new: nn.Module = StackedLinear(stacked("weight"), bias())
        elif isinstance(module, nn.LayerNorm):
            new = StackedLayerNorm(stacked("weight"), bias(), module.eps)
        elif isinstance(module, nn.Embedding):
            new = StackedEmbedding(stacked("weight"), module.padding_idx)
        else:
            raise UsageError(f"--pack: {name} ({type(module).__name__}) trains, and the pack "
                             "engine stacks only Linear, LayerNorm and Embedding layers: pack "
                             "its cells as processes (profile pack_as = 'processes'), or do "
                             "not pack")
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, new)
    return model


def stacked_names(model: nn.Module) -> set[str]:
    """Names of the model's parameters that are stacked (a leading dimension of K cells)."""
    return {f"{name}.{p}" if name else p for name, module in model.named_modules()
            if isinstance(module, (StackedLinear, StackedLayerNorm, StackedEmbedding))
            for p, _ in module.named_parameters(recurse=False)}


def fold_positions(family: str, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Extra inputs a folded batch of a model of type ``family`` needs: BERT's position ids,
    as the model makes them for a lone batch (its default is a shared batch-1 buffer that
    cannot be split per cell)."""
    if FAMILIES.get(family, "model") == "arange":
        seq = input_ids.shape[1]
        return {"position_ids": torch.arange(seq, device=input_ids.device).expand(
            input_ids.shape[0], seq)}
    return {}


@torch.no_grad()
def clip_per_cell(params: list[nn.Parameter], k: int, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for each of the K cells on its own: the norm of cell k's gradients
    (slice k of every parameter), its coefficient applied to them only. ``params`` are the
    stacked parameters (leading dimension K); with ``k == 1``, a lone model's. A constant
    number of kernels: one multi-tensor norm over every cell's slices, one norm per cell, one
    multi-tensor scale per cell. Returns the K norms before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(k)
    cells = [grads] if k == 1 else list(zip(*(g.unbind(0) for g in grads)))  # (views)
    norms = torch.stack(torch._foreach_norm([s for cell in cells for s in cell]))
    total = torch.linalg.vector_norm(norms.view(k, len(grads)), dim=1)  # (K,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for i, cell in enumerate(cells):
        torch._foreach_mul_(list(cell), coef[i])
    return total


def optimizer_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in its own order (that of its state dict)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def cell_state(model: nn.Module, optimizer: torch.optim.Optimizer, k: int,
               stacked: set[str]) -> tuple[dict, dict]:
    """Cell ``k``'s model and optimizer state dicts, as a lone cell's: slice k of every
    stacked tensor, the shared ones as they are."""
    names = optimizer_names(model, optimizer)
    model_state = {name: (value[k] if name in stacked else value).detach().clone()
                   for name, value in model.state_dict().items()}
    opt = optimizer.state_dict()
    state = {i: {key: (v[k].clone() if torch.is_tensor(v) and v.dim() and names[i] in stacked
                       else v.clone() if torch.is_tensor(v) else v)
                 for key, v in per_param.items()}
             for i, per_param in opt["state"].items()}
    return model_state, {"state": state, "param_groups": opt["param_groups"]}


def load_cell_states(model: nn.Module, optimizer: torch.optim.Optimizer,
                     states: list[tuple[dict, dict]], stacked: set[str]) -> None:
    """Load K lone cells' (model state, optimizer state) into the pack: slice k of every
    stacked tensor from cell k; shared tensors and the optimizer's step count from cell 0 (a
    pack trains cells at the same update)."""
    names = optimizer_names(model, optimizer)
    model.load_state_dict({
        name: torch.stack([s[0][name] for s in states]) if name in stacked else value
        for name, value in states[0][0].items()})
    first = states[0][1]
    optimizer.load_state_dict({
        "param_groups": first["param_groups"],
        "state": {i: {key: torch.stack([s[1]["state"][i][key] for s in states])
                      if torch.is_tensor(v) and v.dim() and names[int(i)] in stacked else v
                      for key, v in per_param.items()}
                  for i, per_param in first["state"].items()}})
