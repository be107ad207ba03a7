"""Which rank this process has in multi-process training.

Read in one place, in this order:

1. ``torch.distributed``'s rank, when the process group is initialised: it is
   the global rank for certain, whatever launched the process.  torch is never
   imported to find out; only a ``torch.distributed`` already in
   ``sys.modules`` is asked.
2. The environment variables launchers set before any process group exists:
   ``RANK`` (torchrun, Lightning's SLURM and torchelastic environments), then
   ``SLURM_PROCID`` (``srun``), then ``LOCAL_RANK`` (Lightning's own DDP
   launcher; the local rank is the global one on a single node).  A local
   rank above 0 wins over a global rank of 0 read before it: such a process
   is never global rank 0 (an inherited ``SLURM_PROCID=0``).
3. Otherwise 0: a plain single-process run.

An explicit ``Experiment(rank=...)`` bypasses all of this.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from .._errors import RankError

ENV_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK")

_DIGITS = re.compile(r"[0-9]+")


def detect_rank() -> int:
    """The rank of this process (0 when nothing says otherwise).

    Raises ``RankError`` naming the variable when one of ``ENV_VARIABLES`` is
    set to something other than a non-negative integer.
    """
    dist = initialised_distributed()
    if dist is not None:
        return int(dist.get_rank())
    rank = 0
    for variable in ENV_VARIABLES:
        text = os.environ.get(variable)
        if text is not None:
            rank = parse_rank(variable, text)
            break
    local = os.environ.get("LOCAL_RANK")
    if rank == 0 and local is not None:
        # A process with a local rank above 0 is never global rank 0.  Lightning's
        # launcher sets only LOCAL_RANK, and its children may inherit SLURM_PROCID=0
        # from an interactive `srun --pty` shell.
        rank = parse_rank("LOCAL_RANK", local)
    return rank


def parse_rank(variable: str, text: str) -> int:
    """``text`` as a rank; strict, because a typo here would make every process rank 0 and all write."""
    if not _DIGITS.fullmatch(text):
        raise RankError(
            f"environment variable {variable}={text!r} is not a rank (a non-negative integer); "
            f"fix or unset it, or pass Experiment(rank=...)",
            variable=variable,
        )
    return int(text)


def initialised_distributed() -> Any:
    """The ``torch.distributed`` module if it is imported and its default process group exists, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    # Builds without distributed support have no is_initialized at all.
    is_available = getattr(dist, "is_available", None)
    is_initialized = getattr(dist, "is_initialized", None)
    if is_available is None or is_initialized is None or not is_available() or not is_initialized():
        return None
    return dist
