"""Spreading a grid of backend-light cases over `make test`'s backends.

Some parametrized tests repeat one backend-specific path many times with
different numbers (a scheduler table, a CLI subcommand's options): the
backend-specific code is already covered by the first case on every backend,
and the rest only re-check arithmetic done on the host. `spread` gives each
case a `once(on=BACKEND)` mark, round robin over the three backends, so every
case still runs in `make test`, every backend still runs some of them, and
the grid costs one backend's time instead of three. A plain pytest run on one
backend runs them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest

ORDER = ("jax", "tensorflow", "torch")


def spread(values: Iterable[Any], every_backend: Sequence[Any] = (), start: int = 0,
           order: Sequence[str] = ORDER) -> list[Any]:
    """`values` as pytest params, each marked to run on one backend in
    `make test` (round robin over `order`, from `order[start]`); the ones in
    `every_backend` stay unmarked and run on all."""
    params, turn = [], start
    for value in values:
        if value in every_backend:
            params.append(value)
            continue
        args = value if isinstance(value, tuple) else (value,)
        params.append(pytest.param(*args, marks=pytest.mark.once(on=order[turn % len(order)])))
        turn += 1
    return params
