"""The exceptions and warnings test_tube raises.

Every exception derives from :class:`TestTubeError` and, where one fits, from the
builtin that callers already catch (``TypeError``, ``ValueError``, ``OSError``,
``RuntimeError``), so ``except TypeError`` keeps working for bad input.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any


class TestTubeError(Exception):
    """Base class of every exception raised by test_tube."""

    __test__ = False  # keep pytest from collecting this as a test class


class LogTypeError(TestTubeError, TypeError):
    """A value passed to ``log()`` or ``tag()`` has a type that cannot be stored.

    ``key`` names the offending column; ``value_type`` is the type that was given.
    """

    def __init__(self, message: str, *, key: Any = None, value_type: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value_type = value_type


class LogValueError(TestTubeError, ValueError):
    """A value passed to ``log()`` has a storable type but an unusable value.

    ``key`` names the offending column.
    """

    def __init__(self, message: str, *, key: Any = None) -> None:
        super().__init__(message)
        self.key = key


class ExperimentClosedError(TestTubeError, RuntimeError):
    """The Experiment was closed (or belongs to another process) and takes no more rows."""


class VersionInUseError(TestTubeError, RuntimeError):
    """Another live process has this version open for writing.

    ``log_dir`` is the version folder that is locked.
    """

    def __init__(self, message: str, *, log_dir: str) -> None:
        super().__init__(message)
        self.log_dir = log_dir


class WriterError(TestTubeError, OSError):
    """The background writer failed to write; the cause is chained as ``__cause__``.

    Rows published before the failure stay readable. ``path`` names the file
    that could not be written, when known.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DamagedRunError(TestTubeError, ValueError):
    """A file of a run is damaged in a way that no reader can work around.

    ``path`` names the file.  Raised for a ``meta.experiment`` or
    ``meta_tags.csv`` that cannot be parsed, and for journal frames that are
    whole (their checksums match) but disagree with each other (a column's
    type changes in a way ``log()`` never allows, ``step`` missing): files
    made or edited by hand.  Move the file away to resume the run.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class DamagedRunWarning(RuntimeWarning):
    """A run's journal is damaged; what could be read, or recovered from the published files, was.

    ``path`` names the damaged file, ``damaged`` lists the ``(start, end)`` byte
    ranges that could not be read, ``rows`` is the number of rows returned or
    kept, ``recovered`` the rows of those that came from ``metrics.parquet`` or
    ``metrics.csv`` instead of the journal.
    """

    def __init__(self, message: str, *, path: str = "", damaged: tuple[tuple[int, int], ...] = (),
                 rows: int = 0, recovered: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.damaged = damaged
        self.rows = rows
        self.recovered = recovered


class GitSnapshotWarning(UserWarning):
    """The optional git snapshot could not be taken; the experiment still runs."""


class FinalFlushWarning(UserWarning):
    """The final flush at interpreter exit could not write every row in time."""


class UploadWarning(UserWarning):
    """A run on object storage was not completely uploaded at ``close()`` or exit.

    ``spool`` is the local folder that keeps every row; opening the same
    version again on this host uploads the rest.
    """

    def __init__(self, message: str, *, spool: str = "") -> None:
        super().__init__(message)
        self.spool = spool


class RankError(TestTubeError, ValueError):
    """An environment variable that gives the process's rank does not hold one.

    ``variable`` names it (``RANK``, ``SLURM_PROCID`` or ``LOCAL_RANK``).
    """

    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


class VersionAgreementError(TestTubeError, RuntimeError):
    """With ``per_rank=True``, this rank could not learn which version rank 0 claimed.

    ``path`` is the claim file it waited for, when there was one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn_from_caller(message: Warning | str, category: type[Warning] | None = None) -> None:
    """Issue a warning attributed to the first frame outside test_tube: the user's line.

    A fixed ``stacklevel`` breaks whenever the call path inside the package
    changes (``Experiment()`` and ``read()`` reach the same warning at different
    depths); counting the package's own frames does not.
    """
    level = 1
    frame = sys._getframe(0)
    while frame.f_back is not None and in_package(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def in_package(filename: str) -> bool:
    """Whether ``filename`` is a source file of the test_tube package."""
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR + os.sep)
