"""Numbers on a command line, in ASCII digits only.

Python's ``int()`` and ``float()`` take any Unicode decimal digit ('٨', the
Arabic-Indic eight; '８', a full-width one) and digit groups ('1_000'), so
``--gpus ٨`` would run with 8 GPUs and a program that hands its arguments on
would write ``--gpus 8`` where the user typed something else. These read
what a user of a shell or a script means by a number, and refuse the rest.

The ``*_option`` functions are argparse types named "int" and "float", so
argparse says ``invalid int value: '٨'`` as it does for ``type=int``.
Light on purpose: the viewers import it while they start.
"""

from __future__ import annotations


def ascii_int(text: str) -> int:
    """``text`` as int() reads it (signed, surrounding whitespace allowed), in ASCII digits."""
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in ("+", "-") else stripped
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"invalid literal for int() with base 10: {text!r}")
    return int(stripped)


def ascii_float(text: str) -> float:
    """``text`` as float() reads it ("1.5", "2e3", "inf", "nan"), in ASCII, without '_'."""
    stripped = text.strip()
    if not stripped.isascii() or "_" in stripped:
        raise ValueError(f"could not convert string to float: {text!r}")
    return float(stripped)


def int_option(text: str) -> int:
    """An argparse type: an integer (argparse: "invalid int value: ...")."""
    return ascii_int(text)


def float_option(text: str) -> float:
    """An argparse type: a number (argparse: "invalid float value: ...")."""
    return ascii_float(text)


int_option.__name__ = "int"
float_option.__name__ = "float"
