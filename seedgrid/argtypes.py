"""argparse types of the command line: a bad value is refused with the range or form it needs
(argparse turns the message into seedgrid's one-line error, exit status 2)."""

from __future__ import annotations

import argparse
import math


def integer(lo: int, hi: int):
    """An argparse type: an integer from ``lo`` to ``hi``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {lo} to {hi}")
        return value
    return parse


def sizes(text: str) -> list[int]:
    """An argparse type: distinct positive integers, comma-separated (``100,1000,10000``)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers") from None
    if any(v < 1 for v in values) or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"{text} must be distinct positive sizes")
    return values


def number(lo: float, hi: float, open_ends: bool = False):
    """An argparse type: a finite number in [lo, hi] (or (lo, hi)); nan and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = lo < value < hi if open_ends else lo <= value <= hi
        if not math.isfinite(value) or not inside:
            span = f"({lo:g}, {hi:g})" if open_ends else f"[{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"{text} is not a finite number in {span}")
        return value
    return parse
