"""SlurmCluster against a real Slurm: a private one-node cluster on localhost (see slurmlib)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import test_tube

from slurmlib import Cluster, ClusterUnavailable, start_cluster

# Bounds on waiting for the scheduler: generous against a loaded machine; the
# jobs themselves take a few seconds.
SEARCH_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as exc:
        pytest.skip(f"no Slurm scheduler: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


SEARCH_SCRIPT = """\
import os
import sys

from test_tube import Experiment, HyperOptArgumentParser
from test_tube.hpc import SlurmCluster


def train(hparams, cluster):
    with Experiment(name="slurm_search", save_dir=hparams.save_dir) as exp:
        exp.argparse(hparams)
        exp.tag({"mark": os.environ.get("TT_MARK"), "job_id": os.environ["SLURM_JOB_ID"]})
        for step in range(5):
            exp.log({"loss": hparams.learning_rate * (5 - step), "layers": hparams.layers})


if __name__ == "__main__":
    parser = HyperOptArgumentParser(strategy="grid_search")
    parser.add_argument("--save_dir", required=True)
    parser.opt_list("--layers", options=[1, 2], type=int, tunable=True)
    parser.opt_list("--learning_rate", options=[0.1, 0.01], type=float, tunable=True)
    hparams = parser.parse_args()
    cluster = SlurmCluster(hyperparam_optimizer=hparams, log_path=hparams.save_dir + "/slurm",
                           python_cmd=sys.executable)
    cluster.job_time = "5:00"
    cluster.memory_mb_per_node = 256
    cluster.add_slurm_cmd(cmd="partition", value="debug", comment="the test cluster's partition")
    cluster.add_command("export TT_MARK=from_add_command")
    jobs = cluster.optimize_parallel_cluster_cpu(train, nb_trials=4, job_name="search")
    if not cluster.is_from_slurm_object:
        print("JOBS", " ".join(job.job_id for job in jobs))
"""


def _launch(cluster: Cluster, script: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=script.parent, env=cluster.env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("JOBS ")]
    assert len(lines) == 1, done.stdout
    return lines[0].split()[1:]


def _job_output(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(folder.glob("*")))


def test_four_trial_search_lands_in_four_versions(slurm: Cluster, tmp_path: Path) -> None:
    """A 4-trial grid search submitted with sbatch runs every trial to its own finished version."""
    script = tmp_path / "search.py"
    script.write_text(SEARCH_SCRIPT)
    save_dir = tmp_path / "logs"
    job_ids = _launch(slurm, script, "--save_dir", str(save_dir))
    assert len(job_ids) == 4

    states = slurm.wait_jobs(job_ids, SEARCH_TIMEOUT_S)
    out_dir = save_dir / "slurm" / "search" / "slurm_out"
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{_job_output(out_dir)}\n{slurm.logs()}"

    scripts = sorted((save_dir / "slurm" / "search" / "slurm_scripts").glob("*.sh"))
    assert [p.name for p in scripts] == [f"trial_{i}.sh" for i in range(4)]

    versions = sorted((save_dir / "slurm_search").glob("version_*"))
    assert len(versions) == 4
    seen = set()
    for version in versions:
        tags = dict(
            line.split(",", 1) for line in (version / "meta_tags.csv").read_text().splitlines()[1:]
        )
        assert tags["mark"] == "from_add_command"
        seen.add((int(tags["hpc_exp_number"]), int(tags["layers"]), float(tags["learning_rate"])))
        table = test_tube.read(version)
        assert table.column("loss").to_pylist() == [
            float(tags["learning_rate"]) * (5 - step) for step in range(5)
        ]
    # grid order: the last tunable varies fastest
    assert seen == {(0, 1, 0.1), (1, 1, 0.01), (2, 2, 0.1), (3, 2, 0.01)}

    runs = test_tube.runs(save_dir, name="slurm_search")
    assert runs.num_rows == 4
    assert runs.column("status").to_pylist() == ["finished"] * 4
    assert runs.column("rows").to_pylist() == [5] * 4


RESUBMIT_SCRIPT = """\
import json
import os
import sys
import time
from pathlib import Path

from test_tube import Experiment, HyperOptArgumentParser
from test_tube.hpc import SlurmCluster


def train(hparams, cluster):
    folder = Path(hparams.save_dir)
    checkpoint = folder / f"checkpoint_{hparams.hpc_exp_number}.json"
    state = {"version": None, "step": 0}

    def load():
        state.update(json.loads(checkpoint.read_text()))

    # Called at once when Slurm runs the requeued job.
    cluster.set_checkpoint_load_function(load)
    exp = Experiment(name="resubmit", save_dir=folder, version=state["version"])
    state["version"] = exp.version

    def save(note):
        exp.save()
        checkpoint.write_text(json.dumps(state))
        (folder / "saved").write_text(note)

    cluster.set_checkpoint_save_function(save, {"note": "saved on SIGUSR1"})
    exp.tag({"lr": hparams.lr, "restarts": cluster.restart_count})
    for _ in range(3):
        exp.log({"x": state["step"], "run": cluster.restart_count})
        state["step"] += 1
    if cluster.restart_count == 0:
        exp.save()
        (folder / "ready").write_text(os.environ["SLURM_JOB_ID"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the test sends SIGUSR1 now
            time.sleep(0.05)
        raise RuntimeError("no SIGUSR1 arrived")
    exp.close()


if __name__ == "__main__":
    parser = HyperOptArgumentParser(strategy="grid_search")
    parser.add_argument("--save_dir", required=True)
    parser.opt_list("--lr", options=[0.5], type=float, tunable=True)
    hparams = parser.parse_args()
    cluster = SlurmCluster(hyperparam_optimizer=hparams, log_path=hparams.save_dir, python_cmd=sys.executable)
    cluster.job_time = "10:00"
    cluster.memory_mb_per_node = 256
    cluster.minutes_to_checkpoint_before_walltime = 2
    jobs = cluster.optimize_parallel_cluster_cpu(train, nb_trials=1, job_name="resub",
                                                 enable_auto_resubmit=True)
    if not cluster.is_from_slurm_object:
        print("JOBS", " ".join(job.job_id for job in jobs))
"""


def test_sigusr1_checkpoints_requeues_and_the_trial_continues(slurm: Cluster, tmp_path: Path) -> None:
    """On SIGUSR1 the job saves its checkpoint and requeues itself; the rerun resumes the same version."""
    script = tmp_path / "resubmit.py"
    script.write_text(RESUBMIT_SCRIPT)
    save_dir = tmp_path / "logs"
    save_dir.mkdir()
    (job_id,) = _launch(slurm, script, "--save_dir", str(save_dir))
    text = (save_dir / "resub" / "slurm_scripts" / "trial_0.sh").read_text()
    assert "#SBATCH --signal=USR1@120\n" in text and "#SBATCH --requeue\n" in text

    ready = save_dir / "ready"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():  # the job's own marker: it has logged and waits for the signal
        assert time.monotonic() < deadline, f"job never got ready: {slurm.job_states([job_id])}\n{slurm.logs()}"
        assert slurm.job_states([job_id]).get(job_id) not in {"FAILED", "CANCELLED", "COMPLETED"}
        time.sleep(0.2)
    assert ready.read_text() == job_id
    # What Slurm does at walltime minus --signal's seconds, now: signal the job's steps.
    sent = slurm.run("scancel", "--signal=USR1", job_id)
    assert sent.returncode == 0, sent.stderr

    out_dir = save_dir / "resub" / "slurm_out"
    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    while True:
        info = slurm.show_job(job_id)
        if info.get("Restarts") == "1" and info.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED"}:
            break
        assert time.monotonic() < deadline, f"{info}\n{_job_output(out_dir)}\n{slurm.logs()}"
        time.sleep(0.5)
    assert info["JobState"] == "COMPLETED", f"{info}\n{_job_output(out_dir)}"

    assert (save_dir / "saved").read_text() == "saved on SIGUSR1"
    assert json.loads((save_dir / "checkpoint_0.json").read_text()) == {"version": 0, "step": 3}
    output = _job_output(out_dir)
    # srun stops forwarding the task's output once the requeue cancels the step,
    # so the line printed before `scontrol requeue` is the last one that shows.
    assert f"test_tube: SIGUSR1 in job {job_id}: checkpointing, then requeueing" in output
    assert "DUE TO JOB REQUEUE" in output

    versions = sorted((save_dir / "resubmit").glob("version_*"))
    assert [v.name for v in versions] == ["version_0"]
    table = test_tube.read(versions[0])
    assert table.column("x").to_pylist() == list(range(6))
    assert table.column("run").to_pylist() == [0, 0, 0, 1, 1, 1]
    runs = test_tube.runs(save_dir, name="resubmit")
    assert runs.column("status").to_pylist() == ["finished"]
    assert runs.column("restarts").to_pylist() == [1]


def _readme_example() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## SLURM cluster search", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example_runs_on_the_cluster(slurm: Cluster, tmp_path: Path) -> None:
    """The README's SLURM example, run as written, leaves four finished runs and four scripts."""
    script = tmp_path / "slurm_search.py"
    script.write_text(_readme_example())
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=slurm.env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    job_ids = [line.split("Slurm job ")[1].split(",")[0] for line in done.stdout.splitlines()]
    assert len(job_ids) == 4, done.stdout
    states = slurm.wait_jobs(job_ids, SEARCH_TIMEOUT_S)
    out_dir = tmp_path / "slurm_logs" / "slurm_demo" / "slurm_out"
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{_job_output(out_dir)}"
    assert len(list((tmp_path / "slurm_logs" / "slurm_demo" / "slurm_scripts").glob("trial_*.sh"))) == 4
    runs = test_tube.runs(tmp_path / "test_tube_logs")
    assert runs.column("status").to_pylist() == ["finished"] * 4
    assert sorted(runs.column("hpc_exp_number").to_pylist()) == [0, 1, 2, 3]
    assert runs.column("rows").to_pylist() == [10] * 4
