"""The version every rank of one launch writes to, with ``per_rank=True``.

Rank 0 claims the next free version as a single process does (``os.mkdir``,
race-free); the other ranks must learn that number, never guess it (a scan for
the newest version races with other runs starting in the same folder).  Two
ways, tried in order:

1. ``torch.distributed`` is initialised: rank 0 claims and broadcasts the
   number (``broadcast_object_list``).  Every rank must create its Experiment
   at the same point of the script, as with any collective; the wait is bounded
   by the process group's timeout.
2. Otherwise a launch key that every rank of this launch, and no other launch,
   sees in its environment: torchelastic's run id (``torchrun --standalone``,
   ``--rdzv-id``, or a single-node torchrun without ``--master_port``) with its
   restart count, or SLURM's job and step ids with the requeue count.  Rank 0
   publishes the number in ``<save_dir>/<name>/.rank_claims/<key>``; the other
   ranks poll that file for at most ``WAIT_SECONDS``.

On object storage (``_remote``) the claim is the store's and the published
number an object ``<prefix>/<name>/.rank_claims/<key>``: a :class:`Place`.

With neither, a lone process (rank 0, ``WORLD_SIZE`` unset or 1) just claims;
otherwise (a static torchrun rendezvous before ``init_process_group``, say)
``VersionAgreementError`` says to pass ``version=`` or to initialise the
process group first.  An explicit ``version=`` never comes here.
"""

from __future__ import annotations

import os
import re
import time
from typing import Protocol

from .._store import _layout

from . import _rank
from .._errors import VersionAgreementError

CLAIMS = ".rank_claims"
WAIT_SECONDS = 120.0


class Place(Protocol):
    """Where a launch's version is claimed and published: a folder on disk, or a prefix on object storage."""

    def claim(self) -> int:
        """Claim the next free version, race-free; return it."""
        ...

    def publish(self, key: str, version: int) -> None:
        """Make ``version`` readable under ``key`` by the other ranks."""
        ...

    def read(self, key: str) -> int | None:
        """The version published under ``key``, or None while there is none."""
        ...


class _Folder:
    """The experiment folder on a shared disk (``os.mkdir`` claims, a file per launch key)."""

    def __init__(self, exp_dir: str) -> None:
        self.exp_dir = exp_dir

    def claim(self) -> int:
        return _layout.claim_version(self.exp_dir)

    def publish(self, key: str, version: int) -> None:
        path = os.path.join(self.exp_dir, CLAIMS, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _layout.publish(path, str(version).encode(), fsync=False)

    def read(self, key: str) -> int | None:
        try:
            with open(os.path.join(self.exp_dir, CLAIMS, key), encoding="ascii") as f:
                return int(f.read())
        except FileNotFoundError:
            return None

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_opened: dict[str, int] = {}  # per experiment folder: per_rank Experiments this process has opened


def shared_version(exp_dir: str, rank: int, *, wait: float = WAIT_SECONDS, place: Place | None = None) -> int:
    """The version of this launch: claimed by rank 0, learnt by the others (blocking, bounded).

    ``place`` is where it is claimed and published (default: ``exp_dir`` on a shared disk).
    """
    place = _Folder(exp_dir) if place is None else place
    dist = _rank.initialised_distributed()
    if dist is not None:
        return _broadcast(dist, exp_dir, rank, place)
    key = launch_key()
    if key is None and rank == 0 and os.environ.get("WORLD_SIZE", "1") == "1":
        return place.claim()  # a single process: there is nobody to agree with
    if key is None:
        raise VersionAgreementError(
            "per_rank=True: the ranks cannot agree on a version: torch.distributed is not initialised and "
            "neither TORCHELASTIC_RUN_ID (other than 'none') nor SLURM_JOB_ID is set. Pass version=..., "
            "or create the Experiment after torch.distributed.init_process_group()."
        )
    # Every rank opens its Experiments in the same order, so the n-th one of a
    # launch under this name is the same run in every rank.
    count = _opened.get(exp_dir, 0)
    _opened[exp_dir] = count + 1
    name = f"{key}-{count}"
    if rank == 0:
        version = place.claim()
        place.publish(name, version)
        return version
    return _wait_for_claim(place, name, os.path.join(exp_dir, CLAIMS, name), wait)


def launch_key() -> str | None:
    """A name for this launch, the same in every rank and different for every launch; None if unknown."""
    env = os.environ
    run_id = env.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        key = f"torchelastic-{run_id}-{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    elif env.get("SLURM_JOB_ID"):
        key = (f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', 'batch')}"
               f"-{env.get('SLURM_RESTART_COUNT', '0')}")
    else:
        return None
    return _UNSAFE.sub("_", key)


def _broadcast(dist: object, exp_dir: str, rank: int, place: Place) -> int:
    # Rank 0 sends an error text instead of a number when its claim fails, so
    # the other ranks raise at once instead of waiting out the group's timeout.
    box: list[object] = [None]
    failure: BaseException | None = None
    if rank == 0:
        try:
            box[0] = place.claim()
        except BaseException as exc:  # re-raised below, after the others are told
            failure = exc
            box[0] = f"{type(exc).__name__}: {exc}"
    dist.broadcast_object_list(box, src=0)  # type: ignore[attr-defined]
    if failure is not None:
        raise failure
    if not isinstance(box[0], int):
        raise VersionAgreementError(f"per_rank=True: rank 0 could not claim a version in {exp_dir}: {box[0]}")
    return box[0]


def _wait_for_claim(place: Place, name: str, path: str, wait: float) -> int:
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        found = place.read(name)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise VersionAgreementError(
                f"per_rank=True: rank 0 did not publish its version in {path} within {wait:g} s; "
                f"is rank 0 running, with the same save_dir and name?",
                path=path,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
