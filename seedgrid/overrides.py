"""``--set section.key=value``: settings given on the command line over a config file, and where
the users of transformers' Trainer and peft find seedgrid's name for theirs.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from typing import TYPE_CHECKING, Any

from seedgrid.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence


#: transformers' and peft's names for seedgrid's settings: where their users find each one
FOREIGN_NAMES = {
    **dict.fromkeys(("per_device_train_batch_size", "train_batch_size"),
                    "[train] batch_size, the global batch: all processes and gradient "
                    "accumulation steps together, not one device's"),
    "num_train_epochs": "[train] epochs (whole epochs)",
    "warmup_steps": "[train] warmup_ratio, a fraction of all updates, not a count",
    "gradient_accumulation_steps": "[runtime] gradient_accumulation (the global batch stays "
                                   "[train] batch_size)",
    "per_device_eval_batch_size": "[runtime] eval_batch_size",
    "max_seq_length": "[model] max_length", "model_name_or_path": "[model] name",
    **dict.fromkeys(("hidden_dropout_prob", "attention_probs_dropout_prob"),
                    "[train] dropout, which sets the model's own dropout"),
    "r": "[lora] rank", "lora_alpha": "[lora] alpha", "lora_dropout": "[lora] dropout",
    "seed": "[grid] seeds_wi (seed_wi: the new weights, the classification head) and seeds_do: "
            "a cell's seeds are the grid's",
    "data_seed": "[grid] seeds_do (seed_do: the order of the training data; dropout follows "
                 "it unless [train] dropout_seed says otherwise)",
    "lr_scheduler_type": "the schedule, linear with warmup as Trainer's default and Dodge et al.'s "
                         "([train] warmup_ratio); seedgrid has no other",
    "max_steps": "[train] epochs (whole epochs; [task] train_size for a smaller training set)",
    **dict.fromkeys(("eval_steps", "eval_strategy", "evaluation_strategy"),
                    "[train] evals_per_epoch (evenly spaced in each epoch, and one before "
                    "training)"),
    "optim": "[train] weight_decay: seedgrid's optimizer is AdamW (fused), the papers' own",
    **dict.fromkeys(("save_steps", "save_strategy"), "[runtime] checkpoint_every_evals"),
    "torch_compile": "[runtime] compile", "output_dir": "submit --out",
    "logging_steps": "none: every update's loss is kept (the shard's train_loss)",
    "bf16": '[train] mixed_precision = "bf16"', "fp16": '[train] mixed_precision = "fp16"',
    "lr": "[train] learning_rate",
}


def with_overrides(raw: dict[str, Any], overrides: Sequence[str],
                   sections: dict[str, type]) -> dict[str, Any]:
    """``raw`` (a config read from TOML) with each ``section.key=value`` of ``overrides`` set:
    the value is read as TOML (``3e-5``, ``true``, ``["q_proj", "v_proj"]``, an inline table),
    else taken as a string (``roberta-large``). What results is validated as a file is.
    ``sections``: the config's sections by name (their dataclasses), to say where a key
    given without its section lives."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, equals, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (equals and dot and section and name):
            known = FOREIGN_NAMES.get(key.strip()) or next(
                (f"[{s}] {key.strip()}" for s, cls in sections.items()
                 if key.strip() in {f.name for f in dataclasses.fields(cls)}), None)
            raise UsageError(f"--set {item!r}: give section.key=value, e.g. "
                             "train.learning_rate=3e-5" + (f" (seedgrid's {key.strip()!r} is "
                                                            f"{known})" if known else ""))
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise UsageError(f"--set {item!r}: [{section}] is not a table in the config")
        table[name] = value
    return raw


def sweep(overrides: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The runs of ``--set KEY=a,b,c`` (hydra's multirun): a run per value — per combination
    when several keys list values — each with its overrides, named ``KEY=a`` (``K1=a,K2=x``);
    without a list, one run named "". A comma inside brackets, braces or quotes is TOML's."""
    fixed: list[str] = []
    swept: list[list[tuple[str, str]]] = []
    for item in overrides:
        key, equals, text = item.partition("=")
        values = _top_level_split(text) if equals else [text]
        if len(values) > 1:
            if any(not v.strip() for v in values):
                raise UsageError(f"--set {item!r}: a value of the sweep is empty")
            swept.append([(key.strip(), v.strip()) for v in values])
        else:
            fixed.append(item)
    runs = [("", fixed)]
    for choices in swept:
        runs = [(",".join(filter(None, [name, f"{k}={v}"])), sets + [f"{k}={v}"])
                for name, sets in runs for k, v in choices]
    return runs


def _top_level_split(text: str) -> list[str]:
    """``text`` cut at the commas outside brackets, braces and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]
