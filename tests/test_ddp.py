"""Multi-process training: rank detection, only rank 0 writing, per_rank folders, torchrun and Lightning DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import test_tube
from test_tube import Experiment, RankError, VersionAgreementError

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID",
                  "SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT", "WORLD_SIZE")
TIMEOUT = 120


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no launcher variables, whatever the machine running the suite has."""
    for variable in RANK_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    env.update(variables)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


# -- rank detection -------------------------------------------------------------


@pytest.mark.parametrize(("variables", "rank"), [
    ({}, 0),
    ({"LOCAL_RANK": "3"}, 3),
    ({"SLURM_PROCID": "2", "LOCAL_RANK": "0"}, 2),
    ({"RANK": "1", "SLURM_PROCID": "0", "LOCAL_RANK": "0"}, 1),
    ({"RANK": "0", "SLURM_PROCID": "5"}, 0),
])
def test_rank_comes_from_rank_then_slurm_procid_then_local_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], rank: int
) -> None:
    """RANK wins over SLURM_PROCID, which wins over LOCAL_RANK; with none of them the rank is 0."""
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    exp = Experiment(save_dir=tmp_path, name="r", record_git=False)
    exp.close()
    assert exp.rank == rank
    assert (tmp_path / "r").exists() == (rank == 0)


def test_explicit_rank_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rank=0 passed by the caller writes even where RANK says 1."""
    monkeypatch.setenv("RANK", "1")
    with Experiment(save_dir=tmp_path, name="r", rank=0, record_git=False) as exp:
        exp.log({"a": 1})
    assert test_tube.read(exp.log_dir).column("a").to_pylist() == [1]


@pytest.mark.parametrize("text", ["", "one", "-1", " 1", "1.0", "0x1"])
def test_malformed_rank_variable_raises_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """A rank variable that is not a non-negative integer raises RankError naming the variable; nothing is written."""
    monkeypatch.setenv("SLURM_PROCID", text)
    with pytest.raises(RankError, match="SLURM_PROCID") as info:
        Experiment(save_dir=tmp_path, name="r")
    assert info.value.variable == "SLURM_PROCID"
    assert isinstance(info.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_other_ranks_write_nothing_and_log_is_a_plain_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 without per_rank: no folder, no thread, and log() is a no-op function that still takes any row."""
    import threading

    monkeypatch.setenv("RANK", "1")
    threads = threading.active_count()
    exp = Experiment(save_dir=tmp_path, name="r")
    exp.log({"loss": 1.0})
    exp.log({"anything": object()}, step=3)
    exp.tag({"lr": 0.1})
    exp.save()
    exp.close()
    assert threading.active_count() == threads
    assert list(tmp_path.iterdir()) == []
    assert "inert" in repr(exp)


# -- per_rank ---------------------------------------------------------------------


def test_per_rank_with_explicit_version_gives_each_rank_its_folder(tmp_path: Path) -> None:
    """per_rank=True with version=2: rank r writes a complete version folder at version_2/rank_<r>."""
    for rank in (0, 1):
        with Experiment(save_dir=tmp_path, name="pr", version=2, rank=rank, per_rank=True, record_git=False) as exp:
            exp.tag({"rank": rank})
            exp.log({"loss": float(rank)})
        assert exp.log_dir == str(tmp_path / "pr" / "version_2" / f"rank_{rank}")
    for rank in (0, 1):
        log_dir = tmp_path / "pr" / "version_2" / f"rank_{rank}"
        assert test_tube.read(log_dir).column("loss").to_pylist() == [float(rank)]
        assert json.loads((log_dir / "meta.experiment").read_text())["status"] == "finished"
        assert (log_dir / "meta_tags.csv").read_text() == f"key,value\nrank,{rank}\n"


def test_per_rank_without_a_way_to_agree_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """per_rank=True with no version, no process group and no launch id raises VersionAgreementError, on rank 1
    and on rank 0 of a world of 2; nothing is created."""
    with pytest.raises(VersionAgreementError, match="version="):
        Experiment(save_dir=tmp_path, name="pr", rank=1, per_rank=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(VersionAgreementError, match="version="):
        Experiment(save_dir=tmp_path, name="pr", rank=0, per_rank=True)
    assert list(tmp_path.iterdir()) == []


def test_per_rank_in_a_single_process_claims_a_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone process (no launcher, WORLD_SIZE unset) with per_rank=True writes version_<N>/rank_0."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    (tmp_path / "pr" / "version_0").mkdir(parents=True)
    with Experiment(save_dir=tmp_path, name="pr", per_rank=True, record_git=False) as exp:
        exp.log({"a": 1})
    assert exp.log_dir == str(tmp_path / "pr" / "version_1" / "rank_0")
    assert test_tube.read(exp.log_dir).column("a").to_pylist() == [1]


def test_per_rank_ranks_of_one_slurm_step_agree_on_the_version(tmp_path: Path) -> None:
    """Two srun tasks (SLURM_PROCID 0 and 1, same job and step) share the version rank 0 claims, whoever starts first.

    version_0 exists already, so rank 1 can only get version_1 from rank 0's claim, not by scanning.
    """
    (tmp_path / "s" / "version_0").mkdir(parents=True)
    script = tmp_path / "task.py"
    script.write_text(textwrap.dedent("""
        import sys, test_tube
        exp = test_tube.Experiment(save_dir=sys.argv[1], name="s", per_rank=True, record_git=False)
        exp.log({"rank": exp.rank})
        exp.close()
        print(exp.version, exp.log_dir)
    """))
    common = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"}
    # Rank 1 starts first and waits for the claim; rank 0 starts once rank 1 is surely waiting.
    late = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=_env(SLURM_PROCID="1", **common),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = _run([sys.executable, str(script), str(tmp_path)], _env(SLURM_PROCID="0", **common), tmp_path)
        out, err = late.communicate(timeout=TIMEOUT)
    finally:
        late.kill()
    assert late.returncode == 0, err
    assert first.stdout.split()[0] == out.split()[0] == "1"
    for rank in (0, 1):
        assert test_tube.read(tmp_path / "s" / "version_1" / f"rank_{rank}").column("rank").to_pylist() == [rank]


# -- torchrun ---------------------------------------------------------------------

TORCHRUN_SCRIPT = """
import os, sys
import torch
import torch.distributed as dist
import test_tube

save_dir, mode = sys.argv[1], sys.argv[2]
if mode == "static":
    # Before init_process_group: the rank comes from torchrun's RANK variable.
    plain = test_tube.Experiment(save_dir=save_dir, name="plain", record_git=False)
    dist.init_process_group("gloo")
    # After it: per_rank agrees on the version through a broadcast.
    mine = test_tube.Experiment(save_dir=save_dir, name="mine", per_rank=True, record_git=False)
else:
    # A single-node torchrun without --master_port names the launch (TORCHELASTIC_RUN_ID).
    mine = test_tube.Experiment(save_dir=save_dir, name="mine", per_rank=True, record_git=False)
    plain = None
    dist.init_process_group("gloo")
rank = dist.get_rank()
for step in range(5):
    total = torch.tensor([float(step + rank)])
    dist.all_reduce(total)
    if plain is not None:
        plain.log({"rank": rank, "total": total.item()})
    mine.log({"rank": rank, "total": total[0]})  # a 0-d tensor, read on the writer thread
if plain is not None:
    plain.close()
mine.close()
dist.destroy_process_group()
print("rank", rank, "plain", None if plain is None else plain.rank, "mine", mine.log_dir)
"""


def _torchrun(tmp_path: Path, mode: str, *extra: str) -> None:
    pytest.importorskip("torch.distributed")
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    _run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", *extra,
          str(script), str(tmp_path / "logs"), mode], _env(OMP_NUM_THREADS="1"), tmp_path)


def _versions(exp_dir: Path) -> list[str]:
    return sorted(p.name for p in exp_dir.iterdir() if p.name.startswith("version_"))


def test_torchrun_only_rank_0_writes_and_per_rank_agrees_by_broadcast(tmp_path: Path) -> None:
    """torchrun --nproc_per_node 2 (gloo, static rendezvous): a plain Experiment writes rank 0's rows only; per_rank
    Experiments opened after init_process_group share the version that rank 0 claimed."""
    (tmp_path / "logs" / "mine" / "version_0").mkdir(parents=True)  # an older run: the claim must be version_1
    _torchrun(tmp_path, "static", "--master_port", str(_free_port()))
    plain = tmp_path / "logs" / "plain"
    assert _versions(plain) == ["version_0"]
    table = test_tube.read(plain / "version_0")
    assert table.column("rank").to_pylist() == [0] * 5
    assert table.column("total").to_pylist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert table.column("step").to_pylist() == [0, 1, 2, 3, 4]
    assert json.loads((plain / "version_0" / "meta.experiment").read_text())["status"] == "finished"
    mine = tmp_path / "logs" / "mine"
    assert _versions(mine) == ["version_0", "version_1"]
    assert sorted(p.name for p in (mine / "version_1").iterdir()) == ["rank_0", "rank_1"]
    assert not (mine / ".rank_claims").exists()  # agreed by broadcast, not through a file
    for rank in (0, 1):
        table = test_tube.read(mine / "version_1" / f"rank_{rank}")
        assert table.column("rank").to_pylist() == [rank] * 5
        assert table.column("total").to_pylist() == [1.0, 3.0, 5.0, 7.0, 9.0]


def test_torchrun_per_rank_before_init_agrees_through_the_launch_id(tmp_path: Path) -> None:
    """torchrun without --master_port (its own rendezvous id): per_rank Experiments opened before
    init_process_group agree on the version through rank 0's claim file."""
    (tmp_path / "logs" / "mine" / "version_0").mkdir(parents=True)
    _torchrun(tmp_path, "elastic")
    mine = tmp_path / "logs" / "mine"
    assert _versions(mine) == ["version_0", "version_1"]
    [claim] = (mine / ".rank_claims").iterdir()
    assert claim.name.startswith("torchelastic-") and claim.read_text() == "1"
    for rank in (0, 1):
        table = test_tube.read(mine / "version_1" / f"rank_{rank}")
        assert table.column("rank").to_pylist() == [rank] * 5
    assert not (tmp_path / "logs" / "plain").exists()


# -- Lightning strategy="ddp" ---------------------------------------------------------

LIGHTNING_DDP_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
import test_tube
from lightning_model import Tiny, data, trainer
from test_tube.lightning import TestTubeLogger

class WithPlainExperiment(Tiny):
    def on_train_start(self):
        # Every process opens a plain Experiment; the rank comes from the initialised process group.
        with test_tube.Experiment(save_dir=sys.argv[1], name="plain", record_git=False) as exp:
            exp.log({"global_rank": self.global_rank})
        print("detected", exp.rank, "lightning", self.global_rank, flush=True)

logger = TestTubeLogger(sys.argv[1], name="ddp")
trainer(logger, strategy="ddp", devices=2).fit(WithPlainExperiment(), data(), data())
"""


def test_lightning_ddp_on_two_cpu_processes_writes_once(tmp_path: Path) -> None:
    """Trainer(strategy="ddp", devices=2) on CPU: one version, rank 0's rows only (2 steps an epoch on half the
    data each), status finished; a plain Experiment in each process writes from rank 0 only."""
    pytest.importorskip("lightning")
    script = tmp_path / "train_ddp.py"
    script.write_text(LIGHTNING_DDP_SCRIPT)
    env = _env(PYTHONPATH=str(Path(__file__).parent), OMP_NUM_THREADS="1")
    result = _run([sys.executable, str(script), str(tmp_path / "logs")], env, tmp_path)
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("detected")) == [
        "detected 0 lightning 0", "detected 1 lightning 1"]
    ddp = tmp_path / "logs" / "ddp"
    assert _versions(ddp) == ["version_0"]
    table = test_tube.read(ddp / "version_0")
    steps = [s for s, v in zip(table.column("step").to_pylist(), table.column("train_loss").to_pylist())
             if v is not None]
    assert steps == [0, 1, 2, 3]
    assert json.loads((ddp / "version_0" / "meta.experiment").read_text())["status"] == "finished"
    assert list((ddp / "version_0" / "checkpoints").glob("*.ckpt"))
    plain = tmp_path / "logs" / "plain"
    assert _versions(plain) == ["version_0"]
    assert test_tube.read(plain / "version_0").column("global_rank").to_pylist() == [0]


def test_a_local_rank_above_0_is_never_global_rank_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM_PROCID=0 inherited from an `srun --pty` shell and LOCAL_RANK=1 from Lightning's launcher: rank 1."""
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("LOCAL_RANK", "1")
    exp = Experiment(save_dir=tmp_path, name="r", record_git=False)
    exp.close()
    assert exp.rank == 1
    assert list(tmp_path.iterdir()) == []


def test_debug_mode_ignores_a_malformed_rank_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """debug=True writes nothing whatever the rank, so a bad RANK cannot stop a debugging run."""
    monkeypatch.setenv("RANK", "zero")
    exp = Experiment(save_dir=tmp_path, name="r", debug=True)
    exp.log({"a": 1})
    exp.close()
    assert list(tmp_path.iterdir()) == []
