"""One module per ``cadenza`` verb, and the argument types they share."""

from __future__ import annotations

import argparse


def seed(text: str) -> int:
    """``--seed``: a whole number of 0 or more (NumPy's generators take no negative seed).

    >>> seed("7")
    7
    >>> seed("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: a seed is a whole number of 0 or more, got '-1'
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a whole number of 0 or more, got {text!r}")
    return value
