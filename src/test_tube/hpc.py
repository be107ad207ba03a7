"""SlurmCluster: run each trial of a hyperparameter search as its own Slurm job.

The API is test-tube 0.7.5's, at its import path::

    hparams = parser.parse_args()
    cluster = SlurmCluster(hyperparam_optimizer=hparams, log_path="/scratch/logs",
                           python_cmd=sys.executable)
    cluster.add_slurm_cmd(cmd="partition", value="debug", comment="which queue")
    cluster.per_experiment_nb_cpus = 2
    cluster.optimize_parallel_cluster_cpu(train, nb_trials=4, job_name="search")

One script, two roles. Run by you (the *launcher*), the ``optimize_parallel_cluster_*``
call writes one ``sbatch`` script per trial to
``<log_path>/<job_name>/slurm_scripts/trial_<i>.sh`` and submits it. Each script
runs your script again, with the same command line, on the cluster; there the
same call notices it runs inside trial ``i`` (the ``TEST_TUBE_SLURM_TRIAL``
variable the script exports) and calls ``train(hparams, cluster)`` with that
trial's hyperparameters instead of submitting anything.

With ``enable_auto_resubmit=True`` the script asks Slurm for SIGUSR1
``minutes_to_checkpoint_before_walltime`` minutes before the wall time. The job
then calls the checkpoint function you registered, runs ``scontrol requeue``
and exits; Slurm runs the same trial again, and
:meth:`SlurmCluster.set_checkpoint_load_function` calls your load function at
once in the requeued run.
"""

from __future__ import annotations

import copy
import inspect
import os
import shlex
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ._hyperopt import _slurm_script
from ._errors import TestTubeError
from ._hyperopt._slurm_script import TRIAL_ENV, ScriptSpec, TrialRecord
from .argparse_hopt import HyperOptNamespace

__all__ = ["SlurmCluster", "SlurmError", "SlurmJob"]

# How long sbatch or scontrol may take to answer before we give up on it.
_COMMAND_TIMEOUT_S = 120.0


class SlurmError(TestTubeError, RuntimeError):
    """``sbatch`` could not submit a trial (or could not be run at all).

    ``submitted`` lists the :class:`SlurmJob` objects of the trials that were
    submitted before the failure (they are queued; cancel them with ``scancel``
    if you want to start over). ``stderr`` is what the command printed.
    """

    def __init__(self, message: str, *, submitted: Sequence[SlurmJob] = (), stderr: str = "") -> None:
        super().__init__(message)
        self.submitted = list(submitted)
        self.stderr = stderr


@dataclass(frozen=True)
class SlurmJob:
    """One submitted trial: its index (``hpc_exp_number``), Slurm job id, script and hyperparameters."""

    hpc_exp_number: int
    job_id: str
    script_path: Path
    hparams: HyperOptNamespace


def _trial_from_env() -> TrialRecord | None:
    """The trial this process runs, from ``TEST_TUBE_SLURM_TRIAL``; None in the launcher."""
    text = os.environ.get(TRIAL_ENV)
    if text is None:
        return None
    return _slurm_script.decode_trial(text)


def _restart_count() -> int:
    """How many times Slurm has requeued this job (``SLURM_RESTART_COUNT``; absent means 0)."""
    text = os.environ.get("SLURM_RESTART_COUNT", "0") or "0"
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def _int_setting(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"SlurmCluster.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"SlurmCluster.{name} must be >= {minimum}, got {value}")
    return value


def _train_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments to pass: 2 (hparams, cluster), or 3 for 0.7.5-style functions.

    test-tube 0.7.5 called ``train(hparams, cluster, {})``; a function written
    for it that needs the third argument still gets one (an empty dict).
    """
    if not callable(fn):
        raise TypeError(f"train_function must be callable, got {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: trust the documented convention
        return 2
    for arity in (2, 3):
        try:
            sig.bind(*([None] * arity))
        except TypeError:
            continue
        return arity
    raise TypeError(
        f"train_function {getattr(fn, '__name__', fn)!r} must accept (hparams, cluster); "
        f"its signature is {sig}"
    )


class SlurmCluster:
    """Submit a hyperparameter search to Slurm, one job per trial, with 0.7.5's API.

    ``hyperparam_optimizer`` is the namespace from
    ``HyperOptArgumentParser.parse_args()``; ``log_path`` the folder under which
    each search gets ``<job_name>/slurm_scripts/`` (the generated scripts) and
    ``<job_name>/slurm_out/`` (what the jobs print). ``python_cmd`` starts Python
    on the compute node (``sys.executable`` is a good choice when the node sees
    the same file system). ``enable_log_out`` / ``enable_log_err`` turn off the
    ``--output`` / ``--error`` lines (Slurm then writes ``slurm-<id>.out`` in the
    working directory).

    Settings are plain attributes, read when a search is submitted:
    ``job_time`` (``'15:00'``), ``per_experiment_nb_nodes`` (1),
    ``per_experiment_nb_cpus`` (1, per task), ``per_experiment_nb_gpus`` (1, GPU
    searches only; also the number of tasks per node), ``gpu_type`` (None),
    ``memory_mb_per_node`` (2000), ``minutes_to_checkpoint_before_walltime`` (5),
    ``script_name`` (this script, absolute), ``script_args`` (its command line),
    ``workdir`` (the current directory: jobs start there, so relative paths mean
    the same thing).

    A SlurmCluster is not thread-safe; use it from the main thread.
    """

    #: The command that submits a script.
    RUN_CMD = "sbatch"
    #: The command that requeues a job.
    SCONTROL_CMD = "scontrol"

    def __init__(
        self,
        hyperparam_optimizer: HyperOptNamespace,
        log_path: str | os.PathLike[str],
        python_cmd: str = "python3",
        enable_log_err: bool = True,
        enable_log_out: bool = True,
    ) -> None:
        if not isinstance(hyperparam_optimizer, HyperOptNamespace):
            raise TypeError(
                "hyperparam_optimizer must be the namespace returned by "
                f"HyperOptArgumentParser.parse_args(), got {type(hyperparam_optimizer).__name__}"
            )
        if log_path is None:
            raise TypeError("log_path is required: the folder for the generated scripts and job output")
        self.hyperparam_optimizer = hyperparam_optimizer
        self.log_path = Path(os.path.abspath(os.fspath(log_path)))
        self.python_cmd = python_cmd
        self.enable_log_err = enable_log_err
        self.enable_log_out = enable_log_out

        self.job_time = "15:00"
        self.minutes_to_checkpoint_before_walltime: float = 5
        self.per_experiment_nb_gpus = 1
        self.per_experiment_nb_cpus = 1
        self.per_experiment_nb_nodes = 1
        self.memory_mb_per_node = 2000
        self.gpu_type: str | None = None
        self.email: str | None = None
        self.notify_on_end = False
        self.notify_on_fail = False
        self.script_name = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        self.script_args: list[str] = list(sys.argv[1:])
        self.workdir = os.getcwd()

        self.modules: list[str] = []
        self.commands: list[str] = []
        self.slurm_commands: list[tuple[str, str | None, str | None]] = []
        self.checkpoint_save_function: tuple[Callable[..., Any], dict[str, Any]] | None = None
        self.checkpoint_load_function: tuple[Callable[..., Any], dict[str, Any]] | None = None

        self._trial = _trial_from_env()
        self._handling_signal = False

    @staticmethod
    def slurm_time_to_seconds(job_time: str) -> int:
        """Seconds in a Slurm time limit, read as 0.7.5 read it.

        ``"D-HH:MM:SS"``, ``"HH:MM:SS"``, ``"MM:SS"`` as Slurm means them; a bare
        number is seconds, as in 0.7.5 (Slurm itself reads ``--time=12`` as 12
        minutes); ``"D-HH"`` and ``"D-HH:MM"`` are days and hours (and minutes),
        as Slurm means them.  Raises ``ValueError`` naming the text otherwise.
        """
        text = job_time.strip() if isinstance(job_time, str) else None
        if not text or not all(part.isdigit() for part in text.replace("-", ":", 1).split(":")):
            raise ValueError(f"slurm_time_to_seconds(): {job_time!r} is not a Slurm time such as '15:00', "
                             f"'1:20:12' or '1-12:20:12'")
        days = 0
        if "-" in text:
            day_text, text = text.split("-", 1)
            days = int(day_text)
            parts = [int(p) for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError(f"slurm_time_to_seconds(): {job_time!r} has too many ':' fields")
            hours, minutes, seconds = (parts + [0, 0])[:3]
            return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        parts = [int(p) for p in text.split(":")]
        if len(parts) > 3:
            raise ValueError(f"slurm_time_to_seconds(): {job_time!r} has too many ':' fields")
        total = 0
        for part in parts:
            total = total * 60 + part
        return total

    # -- where we run -----------------------------------------------------------

    @property
    def is_from_slurm_object(self) -> bool:
        """True inside a job this class submitted (the script was re-run for one trial)."""
        return self._trial is not None

    @property
    def hpc_exp_number(self) -> int | None:
        """The index of the trial this job runs (0, 1, ...), or None in the launcher."""
        return None if self._trial is None else self._trial.hpc_exp_number

    @property
    def restart_count(self) -> int:
        """How many times Slurm requeued this job (0 on the first run and in the launcher)."""
        return _restart_count() if self._trial is not None else 0

    @property
    def call_load_checkpoint(self) -> bool:
        """True in a requeued job: the run should continue from its checkpoint."""
        return self.restart_count > 0

    # -- settings (0.7.5's methods) ------------------------------------------------

    def add_slurm_cmd(self, cmd: str, value: Any = None, comment: str | None = None) -> None:
        """Add ``#SBATCH --<cmd>=<value>`` to every script (``value=None``: ``#SBATCH --<cmd>``)."""
        self.slurm_commands.append((cmd, None if value is None else str(value), comment))

    def add_command(self, cmd: str) -> None:
        """Add a shell line (``source activate env``, ``export X=1``) run before the trial starts."""
        self.commands.append(cmd)

    def load_modules(self, modules: Sequence[str]) -> None:
        """Run ``module load <name>`` for each name before the trial starts (replaces earlier ones)."""
        if isinstance(modules, str):
            raise TypeError("modules must be a list of module names, not one string")
        self.modules = list(modules)

    def notify_job_status(self, email: str, on_done: bool, on_fail: bool) -> None:
        """Ask Slurm to mail ``email`` when a job ends (``on_done``) or fails (``on_fail``)."""
        self.email = email
        self.notify_on_end = on_done
        self.notify_on_fail = on_fail

    def set_checkpoint_save_function(
        self, fx: Callable[..., Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        """Register ``fx(**kwargs)``, called on SIGUSR1 before the job requeues itself."""
        self.checkpoint_save_function = (fx, dict(kwargs or {}))

    def get_checkpoint_save_function(self) -> tuple[Callable[..., Any], dict[str, Any]] | None:
        """The registered save function and its keyword arguments, or None."""
        return self.checkpoint_save_function

    def set_checkpoint_load_function(
        self, fx: Callable[..., Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        """Register ``fx(**kwargs)``; in a requeued job it is called at once (as in 0.7.5)."""
        self.checkpoint_load_function = (fx, dict(kwargs or {}))
        if self.call_load_checkpoint:
            fx(**self.checkpoint_load_function[1])

    def get_checkpoint_load_function(self) -> tuple[Callable[..., Any], dict[str, Any]] | None:
        """The registered load function and its keyword arguments, or None."""
        return self.checkpoint_load_function

    # -- the search ---------------------------------------------------------------

    def optimize_parallel_cluster_cpu(
        self,
        train_function: Callable[..., Any],
        nb_trials: int | None,
        job_name: str,
        enable_auto_resubmit: bool = False,
        job_display_name: str | None = None,
        *,
        seed: int | None = None,
    ) -> list[SlurmJob]:
        """Submit ``nb_trials`` trials as CPU jobs, or, inside one of them, run its trial.

        In the launcher: writes ``<log_path>/<job_name>/slurm_scripts/trial_<i>.sh``
        for every trial, then submits each with ``sbatch``, and returns the
        submitted jobs without waiting for them. All scripts are written before
        the first is submitted, so a value that cannot be passed to a job
        (``TypeError``) submits nothing; a failing ``sbatch`` raises
        :class:`SlurmError`.

        Inside a job: calls ``train_function(hparams, cluster)`` with the trial's
        hyperparameters (``hparams.hpc_exp_number`` is its index), lets its
        exceptions through (the job fails, the traceback is in ``slurm_out/``),
        and returns ``[]``. A call with another ``job_name`` does nothing there.
        ``seed`` is passed to :meth:`HyperOptNamespace.trials`.
        """
        return self._optimize(
            train_function, nb_trials, job_name, enable_auto_resubmit, job_display_name, seed, on_gpu=False
        )

    def optimize_parallel_cluster_gpu(
        self,
        train_function: Callable[..., Any],
        nb_trials: int | None,
        job_name: str,
        enable_auto_resubmit: bool = False,
        job_display_name: str | None = None,
        *,
        seed: int | None = None,
    ) -> list[SlurmJob]:
        """As :meth:`optimize_parallel_cluster_cpu`, asking each job for ``per_experiment_nb_gpus`` GPUs per node.

        The script requests ``--gres=gpu[:gpu_type]:N`` and ``N`` tasks per node,
        and ``srun`` starts one process per task (what Lightning's Slurm support
        expects), so ``train_function`` runs once per GPU.
        """
        return self._optimize(
            train_function, nb_trials, job_name, enable_auto_resubmit, job_display_name, seed, on_gpu=True
        )

    def _optimize(
        self,
        train_function: Callable[..., Any],
        nb_trials: int | None,
        job_name: str,
        enable_auto_resubmit: bool,
        job_display_name: str | None,
        seed: int | None,
        *,
        on_gpu: bool,
    ) -> list[SlurmJob]:
        if not isinstance(job_name, str) or not job_name or os.sep in job_name or job_name in (".", ".."):
            raise ValueError(f"job_name must be a non-empty folder name, got {job_name!r}")
        arity = _train_arity(train_function)
        if self._trial is not None:
            if self._trial.job_name == job_name:
                self._run_trial(train_function, arity, enable_auto_resubmit)
            return []
        return self._submit(
            nb_trials, job_name, job_display_name or job_name, enable_auto_resubmit, seed, on_gpu
        )

    # -- in the launcher ------------------------------------------------------------

    def _specs(
        self,
        trials: list[HyperOptNamespace],
        job_name: str,
        display_name: str,
        auto_resubmit: bool,
        on_gpu: bool,
    ) -> list[ScriptSpec]:
        nodes = _int_setting("per_experiment_nb_nodes", self.per_experiment_nb_nodes, 1)
        cpus = _int_setting("per_experiment_nb_cpus", self.per_experiment_nb_cpus, 1)
        memory = _int_setting("memory_mb_per_node", self.memory_mb_per_node, 0)
        gpus = _int_setting("per_experiment_nb_gpus", self.per_experiment_nb_gpus, 0) if on_gpu else 0
        if not isinstance(self.job_time, str) or not self.job_time:
            raise TypeError(f"SlurmCluster.job_time must be a Slurm time such as '15:00', got {self.job_time!r}")
        signal_seconds: int | None = None
        if auto_resubmit:
            minutes = self.minutes_to_checkpoint_before_walltime
            if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes >= 0:
                raise ValueError(
                    f"SlurmCluster.minutes_to_checkpoint_before_walltime must be a number >= 0, got {minutes!r}"
                )
            signal_seconds = int(round(minutes * 60))
        if not self.script_name:
            raise ValueError("SlurmCluster.script_name is empty: set it to the script the jobs should run")
        mail_types = [t for t, on in (("END", self.notify_on_end), ("FAIL", self.notify_on_fail)) if on]
        out_dir = self.log_path / job_name / "slurm_out"
        command = [*shlex.split(self.python_cmd), self.script_name, *self.script_args]
        tunables = [t.dest for t in self.hyperparam_optimizer._space().tunables]
        specs = []
        for number, trial in enumerate(trials):
            values = {name: getattr(trial, name) for name in tunables}
            record = TrialRecord(job_name=job_name, hpc_exp_number=number, hparams=values)
            specs.append(
                ScriptSpec(
                    job_display_name=display_name,
                    hpc_exp_number=number,
                    record_json=_slurm_script.encode_trial(record),
                    describe=", ".join(f"{k}={v!r}" for k, v in values.items()) or "none tunable",
                    command=command,
                    workdir=self.workdir,
                    job_time=self.job_time,
                    nb_nodes=nodes,
                    nb_cpus=cpus,
                    memory_mb_per_node=memory,
                    nb_gpus=gpus,
                    gpu_type=self.gpu_type,
                    # Slurm expands %-patterns in these paths: a % of the folder's own name is doubled.
                    output_path=f"{_slurm_literal(out_dir)}/trial_{number}_%j.out" if self.enable_log_out else None,
                    error_path=f"{_slurm_literal(out_dir)}/trial_{number}_%j.err" if self.enable_log_err else None,
                    signal_seconds=signal_seconds,
                    mail_user=self.email,
                    mail_types=mail_types,
                    slurm_commands=list(self.slurm_commands),
                    modules=list(self.modules),
                    commands=list(self.commands),
                )
            )
        return specs

    def _submit(
        self,
        nb_trials: int | None,
        job_name: str,
        display_name: str,
        auto_resubmit: bool,
        seed: int | None,
        on_gpu: bool,
    ) -> list[SlurmJob]:
        trials = self.hyperparam_optimizer.generate_trials(nb_trials, seed=seed)
        specs = self._specs(trials, job_name, display_name, auto_resubmit, on_gpu)
        texts = [_slurm_script.render(spec) for spec in specs]
        scripts_dir = self.log_path / job_name / "slurm_scripts"
        scripts_dir.mkdir(parents=True, exist_ok=True)
        # Slurm opens --output itself and does not create missing folders.
        (self.log_path / job_name / "slurm_out").mkdir(parents=True, exist_ok=True)
        paths = []
        for number, text in enumerate(texts):
            path = scripts_dir / f"trial_{number}.sh"
            path.write_text(text, encoding="utf-8")
            path.chmod(0o755)
            paths.append(path)
        jobs: list[SlurmJob] = []
        for number, (trial, path) in enumerate(zip(trials, paths)):
            job_id = self._sbatch(path, jobs)
            jobs.append(SlurmJob(hpc_exp_number=number, job_id=job_id, script_path=path, hparams=trial))
        return jobs

    def _sbatch(self, path: Path, submitted: list[SlurmJob]) -> str:
        argv = [self.RUN_CMD, "--parsable", str(path)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmError(
                f"could not run {shlex.join(argv)}: {exc}; is Slurm installed and sbatch on PATH?",
                submitted=submitted,
            ) from exc
        if done.returncode != 0:
            raise SlurmError(
                f"{shlex.join(argv)} failed with exit status {done.returncode}: {done.stderr.strip()}",
                submitted=submitted,
                stderr=done.stderr,
            )
        # --parsable prints "<id>" or "<id>;<cluster>".
        job_id = done.stdout.strip().split(";")[0]
        if not job_id:
            raise SlurmError(f"{shlex.join(argv)} printed no job id", submitted=submitted, stderr=done.stderr)
        return job_id

    # -- inside a job ----------------------------------------------------------------

    def _run_trial(self, train_function: Callable[..., Any], arity: int, auto_resubmit: bool) -> None:
        record = self._trial
        assert record is not None
        trial = copy.copy(self.hyperparam_optimizer)
        for name, value in record.hparams.items():
            setattr(trial, name, value)
        trial.hpc_exp_number = record.hpc_exp_number
        if auto_resubmit:
            signal.signal(signal.SIGUSR1, self._on_usr1)
        args: list[Any] = [trial, self]
        if arity == 3:
            args.append({})
        train_function(*args)

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        """Checkpoint, requeue, exit: Slurm's warning that the wall time is near."""
        # srun delivers the signal to every task; one requeue is enough, and
        # only the first task saves, as with DDP's rank 0.
        if os.environ.get("SLURM_PROCID", "0") != "0" or self._handling_signal:
            return
        self._handling_signal = True
        job_id = os.environ.get("SLURM_JOB_ID", "")
        print(f"test_tube: SIGUSR1 in job {job_id}: checkpointing, then requeueing", file=sys.stderr, flush=True)
        if self.checkpoint_save_function is not None:
            fx, kwargs = self.checkpoint_save_function
            try:
                fx(**kwargs)
            except Exception:
                # Requeue anyway: the run continues from its last good checkpoint
                # instead of ending at the wall time.
                print("test_tube: the checkpoint save function failed:", file=sys.stderr)
                traceback.print_exc()
        # Requeueing ends this run with SIGTERM, possibly before scontrol
        # returns; ignore it so the final flush of open Experiments is not cut
        # short, and exit on our own.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not self._requeue(job_id):
            signal.signal(signal.SIGTERM, previous)
            self._handling_signal = False
            return
        raise SystemExit(0)

    def _requeue(self, job_id: str) -> bool:
        if not job_id:
            print("test_tube: SLURM_JOB_ID is not set; cannot requeue", file=sys.stderr, flush=True)
            return False
        argv = [self.SCONTROL_CMD, "requeue", job_id]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"test_tube: {shlex.join(argv)} failed: {exc}", file=sys.stderr, flush=True)
            return False
        if done.returncode != 0:
            print(
                f"test_tube: {shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}",
                file=sys.stderr,
                flush=True,
            )
            return False
        print(f"test_tube: job {job_id} requeued", file=sys.stderr, flush=True)
        return True


def _slurm_literal(path: os.PathLike[str] | str) -> str:
    """``path`` for an ``--output``/``--error`` pattern, where Slurm reads ``%`` as the start of a field."""
    return os.fspath(path).replace("%", "%%")
