"""The search space of a HyperOptArgumentParser: tunable arguments and their values.

Everything here is a frozen, picklable value, so the space can ride along on
each trial namespace into worker processes without the (unpicklable) parser.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Union

from ..hyper_opt_utils import strategies

# Above this many draws per value wanted, sampling by rejection gets slow, so
# log-scale ints switch to exact weighted sampling over all candidates.
_REJECTION_RATIO = 4


@dataclass(frozen=True)
class OptList:
    """A tunable argument whose candidates are a fixed list of options."""

    dest: str
    options: tuple[Any, ...]

    def values(self, rng: random.Random) -> tuple[Any, ...]:
        """Return the candidates (the options as given; ``rng`` is unused)."""
        return self.options


@dataclass(frozen=True)
class OptRange:
    """A tunable argument whose ``nb_samples`` candidates are drawn from a range.

    ints are drawn from ``low`` to ``high - 1`` (like :func:`range`, as the
    original did); floats from ``[low, high]``. With ``log_base`` the draw is
    uniform in log space. Candidates are distinct and sorted ascending.
    """

    dest: str
    low: float
    high: float
    kind: type[int] | type[float]
    nb_samples: int
    log_base: float | None

    def values(self, rng: random.Random) -> tuple[int | float, ...]:
        """Draw this argument's candidates from ``rng``."""
        if self.kind is int:
            low, high = int(self.low), int(self.high)
            if self.log_base is None:
                count = min(self.nb_samples, high - low)
                return tuple(sorted(rng.sample(range(low, high), count)))
            return tuple(sorted(_log_ints(rng, low, high, self.nb_samples)))
        if self.log_base is None:
            drawn = [rng.uniform(self.low, self.high) for _ in range(self.nb_samples)]
        else:
            base = self.log_base
            lo, hi = math.log(self.low, base), math.log(self.high, base)
            # Clamp: base ** log(x, base) can land an ulp outside [low, high].
            drawn = [
                min(max(base ** rng.uniform(lo, hi), self.low), self.high)
                for _ in range(self.nb_samples)
            ]
        return tuple(sorted(drawn))


def _log_ints(rng: random.Random, low: int, high: int, nb_samples: int) -> list[int]:
    """Draw distinct ints in ``[low, high)``, each weighted by its width in log space.

    Equivalent to flooring log-uniform draws from ``[low, high)`` and keeping
    the first ``nb_samples`` distinct ones (or all ints, if fewer exist).
    """
    count = high - low
    wanted = min(nb_samples, count)
    log_low, log_high = math.log(low), math.log(high)
    if wanted * _REJECTION_RATIO <= count:
        # Few values wanted: unseen ints still carry most of the mass, so
        # redrawing on a repeat terminates fast.
        picked: dict[int, None] = {}
        while len(picked) < wanted:
            value = math.floor(math.exp(rng.uniform(log_low, log_high)))
            picked[min(max(value, low), high - 1)] = None
        return list(picked)
    # Many values wanted: weighted sampling without replacement over every
    # candidate (Efraimidis-Spirakis keys, in log form to avoid underflow).
    keys = []
    for value in range(low, high):
        weight = math.log(value + 1) - math.log(value)
        keys.append((math.log(1.0 - rng.random()) / weight, value))
    keys.sort(reverse=True)
    return [value for _, value in keys[:wanted]]


Tunable = Union[OptList, OptRange]


@dataclass(frozen=True)
class SearchSpace:
    """The strategy, default seed and tunable arguments of one parser."""

    strategy: str
    seed: int | None
    tunables: tuple[Tunable, ...]

    def flat_params(self, rng: random.Random) -> list[list[dict[str, Any]]]:
        """Return the per-argument candidate lists in ``generate_trials`` form.

        ``idx`` is the argument's position among the tunable arguments.
        """
        return [
            [{"idx": idx, "val": value, "name": tunable.dest} for value in tunable.values(rng)]
            for idx, tunable in enumerate(self.tunables)
        ]

    def rng(self, seed: int | None) -> random.Random:
        """Return the generator for one search: ``seed``, else the parser's seed."""
        return strategies.make_rng(seed if seed is not None else self.seed)
