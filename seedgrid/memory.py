"""How much memory a pack of K cells needs, estimated before it is submitted.

From the model's parameter count (built without weights) and the batch: each cell's trained
parameters hold four tensors of their size (the weights, their gradients, AdamW's two moments),
the frozen body of a LoRA model is held once for the pack, and the activations kept for the
backward pass grow with the cells, the batch, the tokens and the layers: per token and layer,
:data:`PER_HIDDEN` bytes per hidden unit and :data:`PER_ATTENTION` per attention probability
(head × key position), measured on seedgrid's own engine by summing every tensor it saves for
the backward (``tests/test_memory.py`` keeps the rule within 25% of that measurement); with
bf16 the forward also keeps a bf16 copy of each weight. At ``[model] max_length`` tokens: an
upper bound, since batches are padded to their longest example only. ``benchmarks/gpu.py``
prints the estimate beside the peak a GPU measures.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

from seedgrid.grid.profile import Profile
from seedgrid.config import Config

GB = 1e9
#: bytes kept for the backward per token, layer and hidden unit (float32 training; bf16
#: autocast), and per token, layer, head and key position (the attention probabilities, their
#: dropout mask and the dropped probabilities): measured on seedgrid's engine (BERT's structure,
#: CPU, 2026-12-07) — 66-71 and 9 bytes in float32, 48-51 and 7 with bf16
PER_HIDDEN = {"fp32": 68, "bf16": 50}
PER_ATTENTION = {"fp32": 9, "bf16": 7}


@dataclasses.dataclass(frozen=True)
class PackMemory:
    k: int
    #: weights, gradients and AdamW state of the K cells' trained parameters
    trained_gb: float
    #: the frozen body, shared by the pack (LoRA)
    shared_gb: float
    #: what the forward keeps for the backward, K cells at max_length tokens
    activations_gb: float

    @property
    def total_gb(self) -> float:
        return self.trained_gb + self.shared_gb + self.activations_gb

    def describe(self, short: bool = False) -> str:
        parts = (f"trained parameters with gradients and AdamW state {gb(self.trained_gb)}, "
                 + (f"frozen body {gb(self.shared_gb)}, " if self.shared_gb else "")
                 + f"activations up to {gb(self.activations_gb)}")
        return parts if short else f"{gb(self.total_gb)} ({parts})"


def gb(value: float) -> str:
    """A size in GB with two significant digits (0.031 GB, 2.9 GB, 58 GB)."""
    return f"{value:.2g} GB" if value < 10 else f"{value:.0f} GB"


def pack_memory(cfg: Config, k: int) -> PackMemory:
    """The estimate for a pack of ``k`` cells of ``cfg`` (UsageError if the engine does not know
    the model's family)."""
    from seedgrid import model, stacked
    from seedgrid.tasks import get_task

    arch = model.architecture(cfg.model, get_task(cfg.task).num_labels, cfg.lora)
    inner = arch.get_base_model() if hasattr(arch, "get_base_model") else arch
    stacked.check_family(inner, bool(cfg.lora.rank))
    trained = sum(p.numel() * p.element_size() for p in arch.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in arch.parameters() if not p.requires_grad)
    c = inner.config
    return pack_gb(k, trained, frozen, getattr(c, "num_hidden_layers", 12),
                   getattr(c, "hidden_size", 768), getattr(c, "num_attention_heads", 12),
                   cfg.train.batch_size, cfg.model.max_length,
                   cfg.train.mixed_precision == "bf16", float32_matmul_bytes(arch),
                   cfg.runtime.gradient_checkpointing)


def float32_matmul_bytes(model) -> int:
    """Bytes of the float32 weights of ``model``'s linear layers: what bf16 autocast copies."""
    import torch

    return sum(m.weight.numel() * 4 for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32)


def pack_gb(k: int, trained: float, frozen: float, layers: int, hidden: int, heads: int,
            batch: int, seq: int, bf16: bool, cast: float = 0.0,
            checkpointing: bool = False) -> PackMemory:
    """The estimate for ``k`` cells of a model whose cell trains ``trained`` bytes of
    parameters beside ``frozen`` ones, at ``batch`` examples of ``seq`` tokens a cell; with
    ``bf16``, autocast keeps a bf16 copy of the ``cast`` bytes of float32 matmul weights; with
    ``checkpointing`` (gradient checkpointing) only each layer's input is kept, and one
    layer's activations at a time are recomputed in the backward."""
    precision = "bf16" if bf16 else "fp32"
    layer = batch * seq * (PER_HIDDEN[precision] * hidden + PER_ATTENTION[precision] * heads * seq)
    per_cell = float(layer + batch * seq * layers * hidden * 4 if checkpointing else
                     layer * layers)
    if bf16:
        per_cell += cast / 2
    return PackMemory(k, k * 4 * trained / GB, frozen / GB, k * per_cell / GB)


def available(profile: Profile) -> tuple[float, str]:
    """(GB, what) a task of ``profile`` trains in: its GPU's memory (the profile's gpu_mem_gb,
    or this machine's smallest GPU for the local executor), else its CPU memory (the profile's
    mem_gb on SLURM, this machine's on the local executor); 0 when unknown."""
    if profile.executor == "slurm":
        if profile.gpus_per_cell:
            return profile.gpu_mem_gb, f"a GPU (profile {profile.name!r}: gpu_mem_gb)"
        return profile.mem_gb, f"the task's memory (profile {profile.name!r}: mem_gb)"
    gpus = _local_gpu_memory()
    if gpus:
        return min(gpus), "this machine's GPU"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError):
        return 0.0, ""
    return total, "this machine's memory"


def largest_pack(cfg: Config, have_gb: float) -> int:
    """The most cells (up to 64) whose pack fits in ``have_gb``; 0 if not even one."""
    return max((k for k in range(1, 65) if pack_memory(cfg, k).total_gb <= have_gb), default=0)


def _local_gpu_memory() -> list[float]:
    from seedgrid.grid.local import gpus

    if not gpus() or shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,"
                              "nounits"], capture_output=True, text=True, timeout=60).stdout
        return [float(line) / 1024 for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
