"""The one validator of TOML tables — a config's sections, a cluster profile: unknown keys get a
"did you mean" (or, for transformers' and peft's names, seedgrid's), values of the wrong type
one line naming the key, the value and what it should be.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from seedgrid.errors import UsageError
from seedgrid.overrides import FOREIGN_NAMES


def check_keys(where: str, raw: dict[str, Any], valid) -> None:
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        key = unknown[0]
        if key in FOREIGN_NAMES:
            raise UsageError(f"unknown key {key!r} in {where}: seedgrid's is "
                             f"{FOREIGN_NAMES[key]}")
        close = difflib.get_close_matches(key, list(valid), n=1)
        raise UsageError(f"unknown key {key!r} in {where}: "
                         + (f"did you mean {close[0]!r}? " if close else "")
                         + f"valid keys are {', '.join(sorted(valid))}")


def table(cls, raw: dict[str, Any], where: str):
    """A dataclass ``cls`` from a TOML table: unknown keys and wrong types (a value of another
    type than the field's default; floats finite) are UsageErrors naming ``where`` — the one
    validator of config sections and cluster profiles."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a table, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(where, raw, fields)
    raw = dict(raw)
    for key, value in raw.items():
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        expected = type(default)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok, raw[key] = True, float(value)
        kinds = f.metadata.get("items", (str,))  # what a list's or table's values may be
        if ok and expected in (list, dict):
            items = list(value.values() if expected is dict else value)
            ok = all(isinstance(v, kinds) and not isinstance(v, bool) for v in items)
        if not ok:
            what = " or ".join({str: "strings", int: "integers"}[k] for k in kinds)
            kind = {list: f"a list of {what}", dict: f"a table of {what}", int: "an integer",
                    float: "a number", str: "a string", bool: "true or false"}.get(
                expected, expected.__name__)
            raise UsageError(f"{where} {key} = {value!r} should be {kind}")
        if expected is float and not math.isfinite(raw[key]):
            raise UsageError(f"{where} {key} = {value!r} is not a finite number: give a number "
                             "(TOML reads 1e400 as inf)")
        if expected is int and abs(value) > 2**31:
            raise UsageError(f"{where} {key} = {value!r} is out of range: give a count below "
                             f"{2**31}")
    try:
        return cls(**raw)
    except TypeError as e:  # a required key is missing
        raise UsageError(f"{where} is incomplete ({e}): add the missing key") from None
