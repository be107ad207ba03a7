"""The text of one trial's ``sbatch`` script, and the trial record it hands to the job.

Pure functions, no I/O: :class:`SlurmCluster` (``test_tube.hpc``) decides what
goes in, this module decides how it is spelled, so the script can be tested
without a scheduler.

The job learns which trial it runs from one environment variable,
``TEST_TUBE_SLURM_TRIAL``, exported by the script: a JSON object with the job
name, the trial's index (``hpc_exp_number``) and the values of the tunable
hyperparameters. The script re-runs the user's script with its original
command line, so every other argument parses exactly as it did in the launcher.
JSON keeps the values readable in the script and survives a requeue, since
Slurm re-runs the same script.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TRIAL_ENV",
    "ScriptSpec",
    "TrialRecord",
    "decode_trial",
    "encode_trial",
    "render",
]

#: The environment variable that tells a re-run script it is one trial of a search.
TRIAL_ENV = "TEST_TUBE_SLURM_TRIAL"


@dataclass(frozen=True)
class TrialRecord:
    """What a job needs to rebuild its trial: the search's name, the trial's index, its values."""

    job_name: str
    hpc_exp_number: int
    hparams: dict[str, Any]


def _same_json_value(a: Any, b: Any) -> bool:
    """True when ``b`` (decoded JSON) is ``a`` with the same types, so the job gets what the search chose."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json_value(a[k], b[k]) for k in a)
    return bool(a == b)


def encode_trial(record: TrialRecord) -> str:
    """The record as one line of JSON.

    Raises ``TypeError`` naming the hyperparameter when a value would not come
    back unchanged (a tuple would come back a list, an object not at all):
    submitting jobs that then train with other values would be worse.
    """
    for name, value in record.hparams.items():
        try:
            back = json.loads(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"hyperparameter {name!r} = {value!r} cannot be passed to a Slurm job: "
                f"only JSON values (str, int, float, bool, None, lists and dicts of them) can"
            ) from exc
        if not _same_json_value(value, back):
            raise TypeError(
                f"hyperparameter {name!r} = {value!r} would reach the Slurm job as {back!r}; "
                f"use str, int, float, bool, None, or lists and dicts of them"
            )
    return json.dumps(
        {
            "job_name": record.job_name,
            "hpc_exp_number": record.hpc_exp_number,
            "hparams": record.hparams,
        },
        ensure_ascii=True,
    )


def decode_trial(text: str) -> TrialRecord:
    """Parse ``TEST_TUBE_SLURM_TRIAL`` strictly; ``ValueError`` says what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{TRIAL_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"job_name", "hpc_exp_number", "hparams"}:
        raise ValueError(
            f"{TRIAL_ENV} must be a JSON object with exactly the keys job_name, "
            f"hpc_exp_number and hparams, got {text[:200]!r}"
        )
    job_name, number, hparams = data["job_name"], data["hpc_exp_number"], data["hparams"]
    if not isinstance(job_name, str) or not job_name:
        raise ValueError(f"{TRIAL_ENV}: job_name must be a non-empty string, got {job_name!r}")
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"{TRIAL_ENV}: hpc_exp_number must be an int >= 0, got {number!r}")
    if not isinstance(hparams, dict):
        raise ValueError(f"{TRIAL_ENV}: hparams must be an object, got {hparams!r}")
    return TrialRecord(job_name=job_name, hpc_exp_number=number, hparams=hparams)


@dataclass(frozen=True)
class ScriptSpec:
    """Everything one trial's script says. Paths are absolute; ``None`` leaves a line out."""

    job_display_name: str
    hpc_exp_number: int
    record_json: str
    describe: str
    command: Sequence[str]  # the argv that srun starts, unquoted
    workdir: str
    job_time: str
    nb_nodes: int
    nb_cpus: int
    memory_mb_per_node: int
    nb_gpus: int = 0  # 0: a CPU job, no --gres line
    gpu_type: str | None = None
    output_path: str | None = None
    error_path: str | None = None
    signal_seconds: int | None = None  # set with auto-resubmit: --signal and --requeue
    mail_user: str | None = None
    mail_types: Sequence[str] = ()
    slurm_commands: Sequence[tuple[str, str | None, str | None]] = ()
    modules: Sequence[str] = ()
    commands: Sequence[str] = ()


def _check_line(what: str, text: str) -> str:
    # A newline inside a directive would start a new shell line: refuse it
    # rather than run something the user never wrote.
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} must be one line, got {text!r}")
    return text


def _directive_value(what: str, value: str) -> str:
    """A value as ``#SBATCH`` reads it: bare when plain, in double quotes when it has spaces."""
    _check_line(what, value)
    if value == "" or any(c.isspace() or c in "'\"#\\" for c in value):
        if '"' in value or "\\" in value:
            raise ValueError(f"{what} must not contain '\"' or '\\', got {value!r}")
        return f'"{value}"'
    return value


def _directive(option: str, value: str | None, what: str) -> str:
    _check_line(what, option)
    if not option or option.startswith("-") or any(c.isspace() or c == "=" for c in option):
        raise ValueError(f"{what}: the option name must be like 'partition' (no dashes, spaces or '='), got {option!r}")
    if value is None:
        return f"#SBATCH --{option}"
    return f"#SBATCH --{option}={_directive_value(what, value)}"


def render(spec: ScriptSpec) -> str:
    """The full script text. Raises ``ValueError`` for a value that cannot be written safely."""
    lines = [
        "#!/bin/bash",
        f"# Generated by test_tube: trial {spec.hpc_exp_number} of Slurm job {spec.job_display_name!r}.",
        f"# Hyperparameters: {_check_line('describe', spec.describe)}",
        "",
        _directive("job-name", f"{spec.job_display_name}v{spec.hpc_exp_number}", "job name"),
        _directive("chdir", spec.workdir, "working directory"),
    ]
    if spec.output_path is not None:
        lines.append(_directive("output", spec.output_path, "output path"))
    if spec.error_path is not None:
        lines.append(_directive("error", spec.error_path, "error path"))
    # A requeued job runs the script again; append so both runs stay readable.
    lines.append("#SBATCH --open-mode=append")
    lines.append(_directive("time", spec.job_time, "job_time"))
    lines.append(f"#SBATCH --nodes={spec.nb_nodes}")
    # One task per GPU on GPU jobs (what DDP launchers expect from srun), else one per node.
    lines.append(f"#SBATCH --ntasks-per-node={max(1, spec.nb_gpus)}")
    lines.append(f"#SBATCH --cpus-per-task={spec.nb_cpus}")
    lines.append(f"#SBATCH --mem={spec.memory_mb_per_node}")
    if spec.nb_gpus > 0:
        gres = f"gpu:{spec.gpu_type}:{spec.nb_gpus}" if spec.gpu_type else f"gpu:{spec.nb_gpus}"
        lines.append(_directive("gres", gres, "gpu_type"))
    if spec.signal_seconds is not None:
        lines.append("# Ask for SIGUSR1 before the wall time: the job checkpoints and requeues itself.")
        lines.append(f"#SBATCH --signal=USR1@{spec.signal_seconds}")
        lines.append("#SBATCH --requeue")
    if spec.mail_user is not None and spec.mail_types:
        lines.append(_directive("mail-type", ",".join(spec.mail_types), "mail type"))
        lines.append(_directive("mail-user", spec.mail_user, "email"))
    for option, value, comment in spec.slurm_commands:
        if comment:
            lines.append(f"# {_check_line('comment', comment)}")
        lines.append(_directive(option, value, f"add_slurm_cmd({option!r})"))
    if spec.modules:
        lines.append("")
        lines.extend(f"module load {shlex.quote(_check_line('module', m))}" for m in spec.modules)
    if spec.commands:
        lines.append("")
        lines.extend(_check_line("command", c) for c in spec.commands)
    lines.append("")
    lines.append(f"export {TRIAL_ENV}={shlex.quote(_check_line('trial', spec.record_json))}")
    lines.append("srun " + " ".join(shlex.quote(_check_line("command", a)) for a in spec.command))
    return "\n".join(lines) + "\n"
