"""Search strategies behind :class:`test_tube.argparse_hopt.HyperOptArgumentParser`.

Kept as a package at its original path so ``from test_tube.hyper_opt_utils
import strategies`` keeps working.
"""

from __future__ import annotations

from . import strategies
from .strategies import generate_trials

__all__ = ["generate_trials", "strategies"]
