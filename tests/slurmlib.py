"""A private one-node Slurm cluster on localhost for the tests, and helpers to wait on its jobs.

``start_cluster(folder)`` starts ``munged``, ``slurmctld`` and ``slurmd`` in the
foreground (so the test owns their process ids and stops them) with every file
under ``folder``: the MUNGE key and socket, ``slurm.conf``, state, spool and
logs. Nothing outside ``folder`` is read or written, and the ports are free
ones picked at start, so it does not disturb a Slurm that may run on the host.
The daemons come from Debian's ``slurmctld slurmd slurm-client munge``
(``.ci/run`` installs them when missing).

The configuration avoids everything that needs cgroups or a database:
``proctrack/pgid``, ``task/none``, no accounting. ``cred_expire=10`` makes a
requeued job eligible again after 10 s instead of Slurm's default 120 s, and
``MinJobAge`` keeps finished jobs visible to ``squeue -t all``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
     "PREEMPTED"}
)
_START_TIMEOUT_S = 30.0


class ClusterUnavailable(Exception):
    """The cluster could not be started; the message says why (the tests skip with it)."""


def missing_commands() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    folder: Path
    conf: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def logs(self) -> str:
        """The tail of every daemon log, for assertion messages."""
        parts = []
        for log in sorted((self.folder / "log").glob("*.log")):
            text = log.read_text(errors="replace")
            parts.append(f"--- {log.name} (last 3000 chars)\n{text[-3000:]}")
        return "\n".join(parts)

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's state as ``squeue -t all`` shows it (finished jobs stay for MinJobAge)."""
        out = self.run("squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T")
        states = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def wait_jobs(self, job_ids: list[str], timeout: float) -> dict[str, str]:
        """Wait (bounded) until every job is in a terminal state; return the states."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.job_states(job_ids)
            if len(states) == len(job_ids) and set(states.values()) <= TERMINAL_STATES:
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs not finished after {timeout} s: {states}\n{self.logs()}")
            time.sleep(0.5)

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        fields = {}
        for item in out.split():
            key, _, value = item.partition("=")
            fields[key] = value
        return fields

    def stop(self) -> None:
        """Cancel our jobs, then stop the daemons this object started (by their own pids)."""
        if self.procs:
            self.run("scancel", "--user", str(os.getuid()), timeout=10)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


def _write_conf(folder: Path, munge_socket: Path) -> Path:
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=testtube
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "log" / "slurmctld.log"}
SlurmdLogFile={folder / "log" / "slurmd.log"}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
DefMemPerCPU=256
MinJobAge=600
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost CPUs=4 RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""",
        encoding="utf-8",
    )
    return conf


def start_cluster(folder: Path) -> Cluster:
    """Start the three daemons and wait (at most 30 s) until the node is idle."""
    missing = missing_commands()
    if missing:
        raise ClusterUnavailable(
            f"Slurm/MUNGE commands not installed: {', '.join(missing)} "
            "(.ci/run installs Debian's slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        raise ClusterUnavailable("the private Slurm cluster runs its daemons as root; run the tests as root")
    munge = folder / "munge"
    munge.mkdir(parents=True, exist_ok=True)
    munge.chmod(0o755)  # munged wants its socket folder reachable by everyone
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = munge / "munge.sock"
    conf = _write_conf(folder, munge_socket)
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = Cluster(folder=folder, conf=conf, env=env)
    log = folder / "log"
    daemons = [
        ["munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}",
         f"--log-file={log / 'munged.log'}", f"--pid-file={munge / 'munged.pid'}",
         f"--seed-file={munge / 'munged.seed'}"],
        ["slurmctld", "-D", "-i", "-f", str(conf)],
        ["slurmd", "-D", "-N", "localhost", "-f", str(conf)],
    ]
    try:
        for argv in daemons:
            with open(log / f"{argv[0]}.stdout.log", "wb") as out:
                cluster.procs.append(
                    subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                )
            if argv[0] == "munged":
                _wait_for(lambda: munge_socket.exists(), "munged to create its socket", cluster)
        _wait_for(lambda: _node_idle(cluster), "the node to become idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_idle(cluster: Cluster) -> bool:
    state = cluster.run("sinfo", "-h", "-N", "-o", "%t", timeout=10).stdout.strip()
    if state.startswith(("drain", "down")):
        cluster.run("scontrol", "update", "nodename=localhost", "state=resume", timeout=10)
    return state == "idle"


def _wait_for(ready: Callable[[], bool], what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not ready():
        dead = [p.args[0] for p in cluster.procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(map(str, dead))} exited" if dead else f"timed out after {_START_TIMEOUT_S} s"
            raise ClusterUnavailable(f"Slurm did not start ({why}) while waiting for {what}\n{cluster.logs()}")
        time.sleep(0.2)
