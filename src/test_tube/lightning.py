"""``TestTubeLogger``: test_tube as a PyTorch Lightning logger (Lightning 2.x).

Needs the ``lightning`` extra: ``.venv/bin/pip install -e '.[lightning]'`` from a clone,
``pip install 'test-tube[lightning]'`` once released.  This module imports Lightning and
torch; ``import test_tube`` does not import it, so scripts that never use
Lightning never pay for torch.

::

    from lightning import Trainer
    from test_tube.lightning import TestTubeLogger

    trainer = Trainer(logger=TestTubeLogger("test_tube_logs", name="mnist"))

Files land where test-tube always put them, ``<save_dir>/<name>/version_<N>/``,
with Lightning's checkpoints in its ``checkpoints/`` folder, and
``meta_tags.csv`` readable by Lightning's ``load_hparams_from_tags_csv``.
"""

from __future__ import annotations

import os
import threading
import weakref
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix, _convert_params, _flatten_dict, _sanitize_callable_params
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers.logger import Logger

from ._store import _layout
from ._experiment import Experiment

__all__ = ["TestTubeLogger"]

_TAG_TYPES = (bool, int, float, str, list, tuple, type(None))

# The Experiments the loggers of this process have open, by version folder: a copy
# of a logger (a pickled Trainer loaded in the same process) shares the original's
# Experiment instead of opening the version a second time.
_open: weakref.WeakValueDictionary[str, Experiment] = weakref.WeakValueDictionary()
_open_lock = threading.Lock()


class TestTubeLogger(Logger):
    """Log to ``<save_dir>/<name>/version_<N>/`` with a test_tube ``Experiment``.

    The arguments are those of Lightning's former ``TestTubeLogger``; any other
    keyword (``flush_interval``, ``formats``, ``record_git``, ...) goes to the
    :class:`~test_tube.Experiment`.  Only global rank 0 writes: on the other
    ranks ``experiment`` is Lightning's dummy and every method does nothing.

    The Experiment is opened on first use.  ``finalize()`` closes it, recording
    ``failed`` in ``meta.experiment`` when Lightning reports ``"failed"`` and
    ``finished`` for anything else (``"success"``, or ``"finished"`` before a
    SLURM requeue).  A later call (``trainer.validate`` after ``trainer.fit``)
    opens the same version again and appends to it, as does a new logger given
    ``version=`` of an earlier run, e.g. to resume from its checkpoint.

    A logger survives pickling (Lightning pickles the Trainer, e.g. to start
    ``ddp_spawn`` workers): the copy writes to the same version.  Pickling pins
    the version (claiming it now if none was claimed yet), flushes and closes
    this process's Experiment so that a copy loaded in another process can take
    the version over; whichever logger logs next opens it again and appends.
    Loggers of one process share one open Experiment per version, so a copy
    loaded in the same process and the original write through the same one.

    Args:
        save_dir: root folder of the experiments.
        name: experiment name, the folder under ``save_dir``.
        description: free text stored in ``meta.experiment``.
        debug: write nothing at all.
        version: ``None`` claims the next free version; an existing one is continued.
        create_git_tag: tag a snapshot of the working tree as ``tt_<name>_v<version>``.
        prefix: put ``<prefix>-`` in front of every metric name.
        experiment_options: keyword options of :class:`~test_tube.Experiment`.
    """

    __test__ = False  # keep pytest from collecting this as a test class
    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str = "default",
        description: str | None = None,
        debug: bool = False,
        version: int | None = None,
        create_git_tag: bool = False,
        prefix: str = "",
        **experiment_options: Any,
    ) -> None:
        super().__init__()
        self._save_dir = os.fspath(save_dir)
        self._name = name
        self.description = description
        self.debug = debug
        self._version = version
        self.create_git_tag = create_git_tag
        self._prefix = prefix
        self._options = experiment_options
        self._experiment: Experiment | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> Experiment:
        """The open :class:`~test_tube.Experiment` (opened now if need be); Lightning's dummy on other ranks."""
        experiment = self._experiment
        if experiment is None or experiment.closed:
            experiment = self._experiment = self._open_experiment()
            # Pin the version: after finalize(), the next use continues this one.
            self._version = experiment.version
        return experiment

    def _open_experiment(self) -> Experiment:
        """This process's open Experiment on our version, or a new one."""
        with _open_lock:
            if self._version is not None and not self.debug:
                shared = _open.get(_layout.version_dir(os.path.abspath(self._save_dir), self._name, self._version))
                if shared is not None and not shared.closed:
                    return shared
            experiment = Experiment(
                save_dir=self._save_dir, name=self._name, debug=self.debug, version=self._version,
                description=self.description, create_git_tag=self.create_git_tag, rank=0, **self._options,
            )
            if not self.debug:
                _open[experiment.log_dir] = experiment
            return experiment

    @property
    def name(self) -> str:
        """The experiment name."""
        return self._name

    @property
    def version(self) -> int:
        """The version number.

        On rank 0 this opens the Experiment, which claims the next free version.
        Other ranks, when no version was given, only report the next free number
        found by a scan: Lightning takes the paths it builds from it (checkpoints,
        ``trainer.log_dir``) from rank 0 by broadcast.
        """
        if self._version is None:
            if _global_rank() == 0:
                return int(self.experiment.version)
            return _layout.next_version(self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:
        """The root folder of the experiments."""
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``<save_dir>/<name>``: the folder that holds the versions."""
        return _layout.experiment_dir(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:
        """``<save_dir>/<name>/version_<N>``: this run's files."""
        return _layout.version_dir(self._save_dir, self._name, self.version)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace | None, *args: Any, **kwargs: Any) -> None:
        """Record hyperparameters as tags in ``meta_tags.csv``; nested dicts become ``outer/inner`` keys."""
        flat = _sanitize_callable_params(_flatten_dict(_convert_params(params)))
        self.experiment.tag({key: _tag_value(value) for key, value in flat.items()})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log one row at ``step``; never does I/O (see ``Experiment.log``).

        Tensors are read with ``.item()`` here, not later on the writer thread:
        Lightning may update a metric tensor in place after handing it over.
        """
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        row = {key: _metric_value(value) for key, value in metrics.items()}
        self.experiment.log(row, step=step)

    @rank_zero_only
    def save(self) -> None:
        """Block until every row logged so far is in ``metrics.csv`` and the journal (Lightning calls this at checkpoints)."""
        super().save()
        if self._experiment is not None:
            self._experiment.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Close the Experiment: ``"failed"`` is recorded as failed, any other status as finished."""
        experiment, self._experiment = self._experiment, None
        if experiment is not None:
            experiment.close(failed=status == "failed")

    def __getstate__(self) -> dict[str, Any]:
        """The logger without its Experiment (a thread and open files cannot be pickled).

        The version is pinned first, so the copy writes where the original
        does, and the Experiment is flushed and closed, so that a copy loaded
        in another process can open the version (one process writes a version
        at a time); the original opens it again on its next use.
        """
        if _global_rank() == 0 and not self.debug:
            if self._version is None:
                self._version = int(self.experiment.version)
            experiment, self._experiment = self._experiment, None
            if experiment is not None and not experiment.closed:
                experiment.close()
        state = self.__dict__.copy()
        state["_experiment"] = None
        return state


def _global_rank() -> int:
    # Lightning sets this attribute on its rank_zero_only decorator once it knows the rank.
    return int(getattr(rank_zero_only, "rank", 0))


def _metric_value(value: Any) -> Any:
    if hasattr(value, "item") and hasattr(value, "numel") and value.numel() == 1:
        return value.item()
    return value


def _tag_value(value: Any) -> Any:
    """A value meta_tags.csv can hold as text that Lightning reads back (``ast.literal_eval``)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a 0-d tensor or numpy scalar: its number, not "tensor(0.1000)"
    return value if isinstance(value, _TAG_TYPES) else str(value)
