"""The options of an Experiment: one frozen value, validated once when it is built.

The Experiment, its writer and the run folder read their settings from an
:class:`Options` and never check them again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._store._location import Location, resolve

DEFAULT_SAVE_DIR = "test_tube_logs"
_FORMATS = frozenset({"csv", "parquet", "tensorboard"})


@dataclass(frozen=True)
class Options:
    """Every constructor argument of an Experiment, normalised (see ``Experiment`` for each)."""

    save_dir: str
    name: str
    debug: bool
    version: int | None
    autosave: bool
    description: str | None
    create_git_tag: bool
    rank: int | None
    per_rank: bool
    flush_interval: float
    formats: tuple[str, ...]
    max_queue_rows: int
    max_queue_bytes: int
    exit_timeout: float
    image_workers: int
    jpeg_quality: int
    record_git: bool
    #: Where runs go: the filesystem and the path in it (``save_dir`` resolved, with ``filesystem=``).
    location: Location
    #: True when the user passed ``filesystem=`` (their client settings are kept as they are).
    filesystem_given: bool = False

    @property
    def remote(self) -> bool:
        """True when runs go to a filesystem other than this machine's (object storage)."""
        return not self.location.local

    @classmethod
    def of(cls, *, save_dir: str | os.PathLike[str] | None, name: Any, debug: Any, version: Any, autosave: Any,
           description: Any, create_git_tag: Any, rank: Any, per_rank: Any, flush_interval: Any, formats: Any,
           max_queue_rows: Any, max_queue_bytes: Any, exit_timeout: Any, image_workers: Any, jpeg_quality: Any,
           record_git: Any, filesystem: Any = None) -> Options:
        """Check every argument (raising ``TypeError``/``ValueError`` naming it) and build the value."""
        _check_positional(debug=debug, autosave=autosave, create_git_tag=create_git_tag, description=description)
        _check_options(name, version, rank, flush_interval, formats, max_queue_rows, max_queue_bytes, exit_timeout,
                       image_workers, jpeg_quality)
        if save_dir is not None and not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f"Experiment(save_dir=...) must be a path or a URI, got {type(save_dir).__name__}")
        # resolve() raises TypeError for a filesystem that is not a pyarrow one, ValueError for a bad URI.
        location = resolve(save_dir if save_dir is not None else DEFAULT_SAVE_DIR, filesystem)
        return cls(
            save_dir=location.path if location.local else location.shown,
            location=location, filesystem_given=filesystem is not None,
            name=name, debug=bool(debug), version=None if version is None else int(version),
            autosave=bool(autosave), description=description, create_git_tag=bool(create_git_tag),
            rank=None if rank is None else int(rank), per_rank=bool(per_rank), flush_interval=float(flush_interval),
            formats=tuple(formats), max_queue_rows=int(max_queue_rows), max_queue_bytes=int(max_queue_bytes),
            exit_timeout=float(exit_timeout), image_workers=int(image_workers), jpeg_quality=int(jpeg_quality),
            record_git=bool(record_git),
        )


def _check_positional(*, description: Any, **flags: Any) -> None:
    """Refuse values that show arguments given in another version's positional order.

    test-tube releases put ``debug``, ``version``, ``autosave`` and
    ``description`` in different orders; a number or text where a flag goes,
    or a flag where the description goes, is an argument in the wrong place,
    never to be taken silently.
    """
    for flag, value in flags.items():
        if not (isinstance(value, (bool, np.bool_)) or (type(value) is int and value in (0, 1))):
            raise TypeError(
                f"Experiment({flag}=...) must be a bool, got {value!r}: an argument in another position? "
                f"Positional arguments follow test-tube 0.7.5 (save_dir, name, debug, version, autosave, "
                f"description, create_git_tag, rank); pass them by keyword"
            )
    if description is not None and not isinstance(description, str):
        raise TypeError(f"Experiment(description=...) must be a str or None, got {description!r}: "
                        f"an argument in another position? Pass it by keyword")


def _check_options(
    name: Any, version: Any, rank: Any, flush_interval: Any, formats: Any, max_queue_rows: Any, max_queue_bytes: Any,
    exit_timeout: Any, image_workers: Any, jpeg_quality: Any,
) -> None:
    if not isinstance(name, str) or not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"Experiment(name=...) must be a non-empty folder name, got {name!r}")
    if version is not None and (type(version) is bool or not isinstance(version, (int, np.integer)) or version < 0):
        raise ValueError(f"Experiment(version=...) must be None or an int >= 0, got {version!r}")
    if rank is not None and (type(rank) is bool or not isinstance(rank, (int, np.integer)) or rank < 0):
        raise ValueError(f"Experiment(rank=...) must be None or an int >= 0, got {rank!r}")
    if not flush_interval > 0:
        raise ValueError(f"flush_interval must be > 0 seconds, got {flush_interval!r}")
    unknown = set(formats) - _FORMATS
    if unknown:
        raise ValueError(f"formats: unknown {sorted(unknown)}; choose from {sorted(_FORMATS)}")
    if max_queue_rows < 1 or max_queue_bytes < 1:
        raise ValueError("max_queue_rows and max_queue_bytes must be >= 1")
    if not exit_timeout > 0:
        raise ValueError(f"exit_timeout must be > 0 seconds, got {exit_timeout!r}")
    if image_workers < 1:
        raise ValueError(f"image_workers must be >= 1, got {image_workers!r}")
    if not 1 <= jpeg_quality <= 95:
        raise ValueError(f"jpeg_quality must be in 1..95, got {jpeg_quality!r}")
