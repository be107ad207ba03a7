"""Search strategies: turn per-argument value lists into trials.

This module stays at ``test_tube.hyper_opt_utils.strategies`` because scripts
written for the original test-tube import :func:`generate_trials` from here.

A *trial* is a tuple with one item per argument, taken from that argument's
list of candidate values. The items are opaque to the strategies: the parser
passes ``{'idx': int, 'val': value, 'name': str}`` dicts, but any values work.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Final

__all__ = ["STRATEGIES", "generate_trials", "iter_trials", "make_rng"]

#: The strategy names :func:`generate_trials` accepts.
STRATEGIES: Final[tuple[str, ...]] = ("grid_search", "random_search")


def make_rng(seed: int | random.Random | None) -> random.Random:
    """Return the random generator a search draws from.

    ``seed`` may be an int (a fresh generator seeded with it, so the same seed
    gives the same trials in every run), a :class:`random.Random` (used as is),
    or ``None``: a generator seeded from Python's global :mod:`random` state,
    so ``random.seed()`` in a script also fixes the search, as it did in the
    original test-tube.
    """
    if isinstance(seed, random.Random):
        return seed
    if seed is None:
        return random.Random(random.getrandbits(64))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, a random.Random or None, got {type(seed).__name__}")
    return random.Random(seed)


def _check_nb_trials(nb_trials: int | None, strategy: str) -> int | None:
    if nb_trials is None:
        if strategy == "random_search":
            raise TypeError(
                "nb_trials is required for strategy 'random_search': pass how many trials to draw"
            )
        return None
    if isinstance(nb_trials, bool) or not isinstance(nb_trials, int):
        raise TypeError(f"nb_trials must be an int or None, got {type(nb_trials).__name__}")
    if nb_trials < 0:
        raise ValueError(f"nb_trials must be >= 0, got {nb_trials}")
    return nb_trials


def _combination(
    index: int, params: Sequence[Sequence[Any]], sizes: Sequence[int]
) -> tuple[Any, ...]:
    # Decode a mixed-radix index with the last argument varying fastest, so
    # combination i of random search is exactly trial i of grid search.
    picked: list[Any] = []
    for values, size in zip(reversed(params), reversed(sizes)):
        index, offset = divmod(index, size)
        picked.append(values[offset])
    picked.reverse()
    return tuple(picked)


def iter_trials(
    strategy: str,
    flat_params: Sequence[Sequence[Any]],
    nb_trials: int | None = None,
    *,
    seed: int | random.Random | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Like :func:`generate_trials`, but return an iterator.

    A grid is produced lazily, so a huge product limited by ``nb_trials`` is
    never built in full. Arguments are checked before the iterator is returned.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}"
        )
    if isinstance(flat_params, (str, bytes)) or not isinstance(flat_params, Sequence):
        raise TypeError(
            f"flat_params must be a list of per-argument lists, got {type(flat_params).__name__}"
        )
    # Copy into tuples: the caller's lists are never reordered (the original
    # shuffled them in place).
    params = [tuple(values) for values in flat_params]
    limit = _check_nb_trials(nb_trials, strategy)

    if strategy == "grid_search":
        grid = itertools.product(*params)
        return grid if limit is None else itertools.islice(grid, limit)

    assert limit is not None  # _check_nb_trials requires it for random search
    sizes = [len(values) for values in params]
    total = math.prod(sizes)
    wanted = min(limit, total)
    rng = make_rng(seed)
    if total <= sys.maxsize:
        picks = rng.sample(range(total), wanted)
    else:
        # len(range) overflows past sys.maxsize; with that many combinations
        # a repeat is so rare that drawing until distinct is cheap.
        seen: set[int] = set()
        picks = []
        while len(picks) < wanted:
            pick = rng.randrange(total)
            if pick not in seen:
                seen.add(pick)
                picks.append(pick)
    return (_combination(pick, params, sizes) for pick in picks)


def generate_trials(
    strategy: str,
    flat_params: Sequence[Sequence[Any]],
    nb_trials: int | None = None,
    *,
    seed: int | random.Random | None = None,
) -> list[tuple[Any, ...]]:
    """Combine one value per argument into a list of trials.

    ``flat_params`` holds one list of candidate values per argument; each trial
    is a tuple with one item from each list, in argument order.

    - ``'grid_search'``: every combination, in :func:`itertools.product` order
      (the last argument varies fastest), cut to the first ``nb_trials`` when
      given. Draws no random numbers.
    - ``'random_search'``: ``min(nb_trials, number of combinations)`` distinct
      combinations in random order; ``nb_trials`` is required. ``seed`` (see
      :func:`make_rng`) makes the draw repeatable.

    Raises ``ValueError`` for an unknown strategy or a negative ``nb_trials``,
    and ``TypeError`` when random search gets no ``nb_trials``.
    """
    return list(iter_trials(strategy, flat_params, nb_trials, seed=seed))
