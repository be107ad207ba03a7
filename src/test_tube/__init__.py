"""test_tube: an experiment logger for training loops.

``Experiment.log()`` never touches the disk: a background writer publishes
``metrics.csv`` and ``metrics.parquet`` and keeps a crash-tolerant journal, so
nothing flushed is lost when a job is killed.  Importing this package starts no
thread and creates no file.
"""

from ._errors import (
    DamagedRunError,
    DamagedRunWarning,
    ExperimentClosedError,
    FinalFlushWarning,
    GitSnapshotWarning,
    RankError,
    TestTubeError,
    UploadWarning,
    VersionAgreementError,
    VersionInUseError,
    WriterError,
)
from ._experiment import Experiment
from ._git import checkout_snapshot
from ._hyperopt._hyperopt_pool import TrialError
from ._store._read import read
from ._store._runs import runs
from .argparse_hopt import HyperOptArgumentParser
from .hpc import SlurmCluster

__version__ = "0.8.0.dev0"

__all__ = [
    "DamagedRunError",
    "DamagedRunWarning",
    "Experiment",
    "ExperimentClosedError",
    "FinalFlushWarning",
    "GitSnapshotWarning",
    "HyperOptArgumentParser",
    "RankError",
    "SlurmCluster",
    "TestTubeError",
    "TrialError",
    "UploadWarning",
    "VersionAgreementError",
    "VersionInUseError",
    "WriterError",
    "__version__",
    "checkout_snapshot",
    "read",
    "runs",
]
