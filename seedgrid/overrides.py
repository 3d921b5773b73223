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
    "seed": "[grid] seeds_wi and seeds_do: a cell's seeds are the grid's",
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
