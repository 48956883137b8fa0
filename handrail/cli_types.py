"""Argument types for the command line: a bad number is a one-line usage error, not a traceback."""

from __future__ import annotations

import argparse
import math


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def fraction(text: str) -> float:
    """A factor in (0, 1] (``--speed-scale``: it may only tighten a limit)."""
    value = _number(text)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1] — a speed scale can only tighten the limits")
    return value


def positive(text: str) -> float:
    """A finite number > 0 (a current, a duration)."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number > 0")
    return value
