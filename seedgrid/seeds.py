"""What a seed means — the one place where seedgrid turns seeds into random streams.

A cell of the grid is a pair (seed_wi, seed_do):

- ``seed_wi`` (weight initialisation) drives every freshly initialised parameter and nothing
  else: the classification head is drawn from :func:`wi_generator` after the pretrained
  weights are loaded, and (with ``[lora]``) every LoRA A matrix from its ``lora`` stream.
- ``seed_do`` (data order) drives the order of training examples: epoch ``e`` uses
  :func:`epoch_permutation` ``(seed_do, e)``. By default dropout follows ``seed_do`` too (as in
  Dodge et al. 2020's code, where the data-order seed was set after the model was built); the
  config's ``train.dropout_seed`` can tie it to ``seed_wi`` or to a fixed value instead. The
  masks of each update are keyed by the update, the dropout site and the example's place in
  the global batch (:mod:`seedgrid.dropout`), never by a process or a pack.

Each stream is derived from (stream name, seed, ...) through :class:`numpy.random.SeedSequence`,
so seed 3 of the WI stream and seed 3 of the DO stream are unrelated, and no stream depends on
the number of processes, the gradient-accumulation split or a restart.
"""

from __future__ import annotations

import numpy as np

# Stream identifiers: part of the reproducibility contract, never renumber them.
_STREAMS = {"wi": 0, "do": 1, "dropout": 2, "lora": 3}

# What a cell's dropout masks may follow; the index is part of the derived seed.
DROPOUT_SOURCES = ("seed_do", "seed_wi", "fixed")


def derive(stream: str, *keys: int) -> int:
    """A 63-bit integer seed for ``stream`` keyed by ``keys`` (e.g. a seed and an epoch)."""
    seq = np.random.SeedSequence([_STREAMS[stream], *[int(k) for k in keys]])
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


def wi_generator(seed_wi: int, stream: str = "wi"):
    """The CPU ``torch.Generator`` that draws every freshly initialised parameter of a cell:
    the head (``wi``), the LoRA adapters (``lora``, so that the head is the same with or
    without them)."""
    import torch  # here, not at import: the CLI's config checks need no torch

    return torch.Generator().manual_seed(derive(stream, seed_wi))


def epoch_permutation(seed_do: int, epoch: int, n: int) -> np.ndarray:
    """Order of the ``n`` training examples in ``epoch`` (0-based) for data-order seed ``seed_do``."""
    import torch

    g = torch.Generator().manual_seed(derive("do", seed_do, epoch))
    return torch.randperm(n, generator=g).numpy()


def dropout_seed(choice: str, seed_wi: int, seed_do: int) -> int:
    """The seed of a cell's dropout masks (:mod:`seedgrid.dropout` keys it further by update and
    site). ``choice`` is the config's ``train.dropout_seed``: ``"seed_do"`` (default),
    ``"seed_wi"``, or ``"fixed"`` (the same masks for every cell)."""
    source = DROPOUT_SOURCES.index(choice)
    seed = {"seed_do": seed_do, "seed_wi": seed_wi, "fixed": 0}[choice]
    return derive("dropout", source, seed)
