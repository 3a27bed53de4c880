"""Config fields that are also command-line flags: one source for every default.

A config dataclass (``PretrainConfig``, ``TransferConfig``) declares each user-facing field with
:func:`option`; ``sim2real.cli`` builds the flags from the fields, so the CLI, the Python API and
the docs cannot disagree on a default.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with help text and CLI hints (``flag``, ``choices``, ``metavar``, ``negate``, ``cli=False``).

    Example:
        >>> from dataclasses import dataclass, fields
        >>> @dataclass
        ... class C:
        ...     seed: int = option(0, "random seed")
        >>> fields(C)[0].metadata["help"]
        'random seed'
    """
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **cli})
    return dataclasses.field(default=default, metadata={"help": help, **cli})
