"""The README's fenced blocks, run as written in fresh folders, so the README cannot drift from the code.

How each kind of block is treated (the README's *Development* section says the same):

* A block no test here knows fails :func:`test_every_block_in_the_readme_is_run_by_a_test`.
* Shell lines run with ``bash`` in a fresh folder laid out like a clone (``examples/``, ``docs/``) whose
  ``.venv`` is the venv running these tests, with its ``bin/`` first on PATH (so ``python``,
  ``test-tube`` and ``.venv/bin/...`` are that venv's).
* Install commands (``python3 -m venv .venv``, ``.venv/bin/pip install ...``) are not run again: the
  extras they name must exist in ``pyproject.toml`` and be installed in this venv.
* ``test-tube serve`` runs until stopped: it is started with ``--port 0`` added (6007 may be taken),
  its first line checked against the README's, and stopped with Ctrl-C.
* The test-suite command is ``.ci/run``'s own last line (checked equal), not run from inside the suite.
* Python examples run as scripts; those the README says to "Save as X and run Y" are run with Y.
* The Slurm search is run on a private cluster by ``tests/test_hpc_slurm.py``; the resubmission
  fragment (it needs a job near its wall time) is compiled, not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import pytest

import test_tube
from s3lib import S3Server

from storelib import upload_save_dir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT = 300
VENV = Path(sys.prefix)


class Block(NamedTuple):
    section: str  # the heading above it ("# test_tube" for the top)
    first: str    # its first line
    text: str
    before: str   # the paragraph just above it


def blocks() -> list[Block]:
    found = []
    section = ""
    paragraph: list[str] = []  # the paragraph being read, or the last one before a blank line
    fresh = True  # the next text line starts a new paragraph
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = lines.index("```", i + 1)
            body = lines[i + 1:end]
            found.append(Block(section, body[0], "\n".join(body) + "\n", " ".join(paragraph)))
            paragraph, fresh = [], True
            i = end + 1
            continue
        if re.match(r"#{1,2} ", line):
            section = line
            paragraph, fresh = [], True
        elif not line.strip():
            fresh = True
        else:
            if fresh:
                paragraph, fresh = [], False
            paragraph.append(line)
        i += 1
    return found


def block(section: str, first: str) -> Block:
    matching = [b for b in blocks() if b.section == section and b.first == first]
    assert len(matching) == 1, f"README: {len(matching)} blocks under {section!r} starting {first!r}"
    return matching[0]


# Every block of the README, by its section and first line, and the test that runs it.
COVERED = {
    ("# test_tube", "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python examples/demo.py"):
        "test_quick_start",
    ("# test_tube", "from test_tube import Experiment"): "test_first_example_writes_the_files_its_comment_names",
    ("## What it writes", "<save_dir>/<name>/version_<N>/"): "test_first_example_writes_the_files_its_comment_names",
    ("## Looking at results", "import test_tube"): "test_looking_at_results",
    ("## Looking at results", "$ test-tube ls"): "test_ls_and_plot_after_the_demo",
    ("## Looking at runs in a browser", "$ test-tube serve test_tube_logs"): "test_serve_prints_its_address",
    ("## Common tasks", "import test_tube"): "test_common_tasks_dataframes",
    ("## Object storage (S3 and compatible)", "import pyarrow.fs"): "test_reading_from_object_storage",
    ("## Common tasks", "$ test-tube ls test_tube_logs --name demo --sort train_loss.min"):
        "test_common_tasks_comparing_in_the_terminal",
    ("## Common tasks", "from test_tube import Experiment"): "test_common_tasks_resuming",
    ("## TensorBoard", ".venv/bin/pip install -e '.[tensorboard]'"): "test_tensorboard_shows_the_demo_runs",
    ("## Object storage (S3 and compatible)", "import os"): "test_object_storage_example",
    ("## Lightning", "import lightning as L"): "test_lightning_example",
    ("## Distributed training (DDP)",
     "<save_dir>/<name>/version_<N>/rank_<r>/    meta.experiment, metrics.csv, metrics.parquet, ... as above"):
        "test_ddp_example",
    ("## Distributed training (DDP)", "import torch"): "test_ddp_example",
    ("## Hyperparameter search", "from test_tube import Experiment, HyperOptArgumentParser"): "test_search_example",
    ("## SLURM cluster search", "import sys"): "tests/test_hpc_slurm.py::test_readme_example_runs_on_the_cluster",
    ("## SLURM cluster search",
     "slurm_logs/slurm_demo/slurm_scripts/trial_0.sh ... trial_3.sh   the sbatch scripts, readable"):
        "tests/test_hpc_slurm.py::test_readme_example_runs_on_the_cluster",
    ("## SLURM cluster search", "import json"): "test_slurm_blocks",
    ("## Getting back to the code of any run", "import test_tube"): "test_checkout_snapshot",
    ("# test_tube",
     "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest -q"):
        "test_the_test_command_is_what_ci_runs",
}


def test_every_block_in_the_readme_is_run_by_a_test() -> None:
    """Each fenced block of the README is one COVERED names, and each COVERED entry is in the README."""
    seen = [(b.section, b.first) for b in blocks()]
    assert len(seen) == len(set(seen)), "two README blocks share a section and a first line"
    assert sorted(set(seen) - set(COVERED)) == [], "README blocks no test runs: add them to COVERED and a test"
    assert sorted(set(COVERED) - set(seen)) == [], "COVERED names blocks the README no longer has"
    here = Path(__file__).read_text(encoding="utf-8")
    slurm = (ROOT / "tests" / "test_hpc_slurm.py").read_text(encoding="utf-8")
    for name in set(COVERED.values()):
        source = slurm if name.startswith("tests/test_hpc_slurm.py::") else here
        assert f"def {name.rsplit('::', 1)[-1]}(" in source, name


# -- running commands -------------------------------------------------------------------------------


def workspace(tmp_path: Path) -> Path:
    """A folder laid out like a clone: examples/, docs/, and .venv (the venv running the tests)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "docs").mkdir()
    (tmp_path / ".venv").symlink_to(VENV, target_is_directory=True)
    return tmp_path


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def shell(command: str, cwd: Path, **extra: str) -> str:
    """Run one shell command as written; its stdout.  Fails the test on a non-zero exit."""
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=environment(**extra), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def check_install(command: str, cwd: Path) -> None:
    """An install step, checked against this venv instead of run: the extras exist and are installed."""
    if command == "python3 -m venv .venv":
        assert (cwd / ".venv" / "bin" / "python").exists()
        return
    match = re.fullmatch(r"\.venv/bin/pip install (?:-q )?-e (\.|'\.\[(?P<extras>[a-z,]+)\]')", command)
    assert match, f"an install command the README test does not know: {command}"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in (match["extras"] or "").split(",") if match["extras"] else []:
        assert extra in project["optional-dependencies"], f"{command}: no extra {extra!r} in pyproject.toml"
        requirements += project["optional-dependencies"][extra]
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement)
        assert name is not None
        metadata.version(name[0])  # raises PackageNotFoundError when it is not installed
    assert metadata.version("test-tube")


def run_line(command: str, cwd: Path) -> str:
    """One command of a block: install steps checked, `test-tube serve` started and stopped, others run."""
    if command.startswith(("python3 -m venv", ".venv/bin/pip install", "pip install")):
        check_install(command, cwd)
        return ""
    if re.match(r"(\.venv/bin/)?test-tube serve\b", command):
        return serve_first_line(command, cwd)
    return shell(command, cwd)


def run_shell_block(text: str, cwd: Path) -> None:
    for line in text.strip().splitlines():
        for command in line.split(" && "):
            run_line(command.strip(), cwd)


def serve_first_line(command: str, cwd: Path) -> str:
    """Start `test-tube serve` (on a free port), check the page answers, stop it with Ctrl-C: its first line."""
    # SIGINT back to its default in the child: a suite started in the background (`pytest &`) ignores it, and
    # Python then installs no Ctrl-C handler
    proc = subprocess.Popen(["bash", "-c", "exec " + command + " --port 0"], cwd=cwd, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        assert result and result[0], "test-tube serve printed nothing"
        url = result[0].split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "api/runs", timeout=60) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        return result[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)


def save_and_run(b: Block, cwd: Path, **extra: str) -> str:
    """A block the README says to "Save as `X` and run `Y`": saved as X, run with Y; Y's stdout."""
    match = re.search(r"Save as `([^`]+)` and run `([^`]+)`", b.before)
    assert match, f"no 'Save as ... and run ...' above the block under {b.section}"
    (cwd / match[1]).write_text(b.text, encoding="utf-8")
    return shell(match[2], cwd, **extra)


def run_python(code: str, cwd: Path, name: str = "example.py") -> str:
    (cwd / name).write_text(code, encoding="utf-8")
    return shell(f"python {name}", cwd)


# -- the quick start and the demo ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone-like folder where the README's first block ran: the demo's two runs in test_tube_logs."""
    cwd = workspace(tmp_path_factory.mktemp("demo"))
    b = [b for b in blocks() if b.section == "# test_tube" and b.first.startswith("python3 -m venv")][0]
    run_shell_block(b.text, cwd)
    return cwd


def test_quick_start(demo: Path) -> None:
    """The install line is satisfied by this venv, the demo writes two finished runs, serve serves them."""
    table = test_tube.runs(demo / "test_tube_logs").to_pylist()
    assert [(r["name"], r["version"], r["status"]) for r in table] == [("demo", 0, "finished"), ("demo", 1, "finished")]


def test_ls_and_plot_after_the_demo(demo: Path) -> None:
    """`test-tube ls` prints the README's lines (its columns first; the rest cut only on a terminal); plot writes."""
    b = block("## Looking at results", "$ test-tube ls")
    commands: list[tuple[str, list[str]]] = []
    for line in b.text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    assert [c for c, _ in commands][0] == "test-tube ls"
    for command, expected in commands:
        out = shell(command, demo).splitlines()
        if not expected:
            continue
        shown = [e for e in expected if not e.startswith("(")]
        assert len(out) == len(shown)
        for got, want in zip(out, shown):
            assert got.startswith(want.rstrip()), (got, want)
        for note in (e for e in expected if e.startswith("(")):  # "(16 more columns: ...)"
            more = int(re.match(r"\((\d+) more columns", note)[1])  # type: ignore[index]
            assert len(out[0].split()) - len(shown[0].split()) == more
        target = re.search(r"-o (\S+)", command)
        if target:
            assert (demo / target[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_prints_its_address(demo: Path) -> None:
    """`test-tube serve test_tube_logs` prints the README's line, with this folder and the port it got."""
    b = block("## Looking at runs in a browser", "$ test-tube serve test_tube_logs")
    command, expected = b.text.splitlines()
    line = run_line(command[2:], demo).strip()
    pattern = re.escape(expected).replace(re.escape("/home/me/project"), re.escape(str(demo)))
    pattern = pattern.replace("6007", r"\d+")
    assert re.fullmatch(pattern, line), (line, expected)


def test_tensorboard_shows_the_demo_runs(demo: Path) -> None:
    """The extra is installed, and `tensorboard --logdir test_tube_logs` lists the demo's two runs."""
    install, command = block("## TensorBoard", ".venv/bin/pip install -e '.[tensorboard]'").text.splitlines()
    run_line(install, demo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["bash", "-c", f"exec {command} --host 127.0.0.1 --port {port}"], cwd=demo,
                            env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        want = {"demo/version_0/tf", "demo/version_1/tf"}
        runs: set[str] = set()
        deadline = time.monotonic() + 120
        while runs != want and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=10) as response:
                    runs = set(json.loads(response.read()))
            except OSError:
                pass
            if runs != want:
                time.sleep(0.5)  # TensorBoard's own start-up and first load; the runs were closed before it
        assert runs == want
    finally:
        proc.terminate()
        proc.wait(60)


def test_common_tasks_dataframes(demo: Path) -> None:
    """One run's DataFrame and all runs' DataFrame, printed as the block says."""
    out = run_python(block("## Common tasks", "import test_tube").text, demo)
    assert "train_loss" in out and "learning_rate" in out and "train_loss.min" in out
    assert "2004" in out  # the last step of version_0, in the tail


def test_common_tasks_comparing_in_the_terminal(demo: Path) -> None:
    """`ls --name demo --sort train_loss.min` puts the better run first; `plot` of the two writes a PNG."""
    b = block("## Common tasks", "$ test-tube ls test_tube_logs --name demo --sort train_loss.min")
    ls, plot = [line[2:] for line in b.text.splitlines()]
    rows = shell(ls, demo).splitlines()
    best = min(test_tube.runs(demo / "test_tube_logs").to_pylist(), key=lambda r: r["train_loss.min"])
    assert rows[0].split()[:2] == ["name", "version"] and rows[1].split()[:2] == ["demo", str(best["version"])]
    shell(plot, demo)
    assert (demo / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_common_tasks_resuming(demo: Path, tmp_path: Path) -> None:
    """Opening version 1 again appends a row at the next step and keeps the 2,005 rows it had."""
    cwd = tmp_path / "copy"
    shutil.copytree(demo / "test_tube_logs", cwd / "test_tube_logs")
    out = run_python(block("## Common tasks", "from test_tube import Experiment").text, cwd)
    assert out.strip() == str(cwd / "test_tube_logs" / "demo" / "version_1")
    table = test_tube.read(cwd / "test_tube_logs" / "demo" / "version_1")
    assert table.num_rows == 2006 and table.column("step").to_pylist()[-2:] == [2004, 2005]
    assert table.column("train_loss").to_pylist()[-1] == 0.005


# -- the other examples --------------------------------------------------------------------------------


def test_object_storage_example(s3: S3Server, tmp_path: Path) -> None:
    """The S3 example, run against a real S3 server: the run is in the bucket, complete, and the spool is gone."""
    import pyarrow.parquet as pq

    code = block("## Object storage (S3 and compatible)", "import os").text
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    spool = tmp_path / "spool"
    out = shell("python example.py", tmp_path, TT_SAVE_DIR=s3.uri(s3.bucket_name, "logs"), TEST_TUBE_SPOOL=str(spool),
                **s3.env())
    assert out.strip() == f"{s3.bucket_name}/logs/cloud/version_0"
    table = pq.read_table(f"{s3.bucket_name}/logs/cloud/version_0/metrics.parquet", filesystem=s3.filesystem())
    assert table.column("train_loss").to_pylist() == [1.0 / (step + 1) for step in range(100)]
    with s3.filesystem().open_input_stream(f"{s3.bucket_name}/logs/cloud/version_0/meta_tags.csv") as f:
        assert f.read() == b"key,value\nlearning_rate,0.01\n"
    assert not any(spool.rglob("*.arrows"))



# Stand-ins for the first example's "your code": a falling loss, a score, an 8x8 image.
FIRST_EXAMPLE_PRELUDE = """\
import numpy as np
_step = iter(range(10**9))
def train_step(): return 1.0 / (next(_step) + 1)
def evaluate(): return 0.5
def render(): return np.zeros((8, 8), np.uint8)
"""


@pytest.fixture(scope="module")
def first_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = workspace(tmp_path_factory.mktemp("first"))
    run_python(FIRST_EXAMPLE_PRELUDE + block("# test_tube", "from test_tube import Experiment").text, cwd)
    return cwd


def test_first_example_writes_the_files_its_comment_names(first_example: Path) -> None:
    """The files the example's last comment names, and every file *What it writes* lists, are there."""
    b = block("# test_tube", "from test_tube import Experiment")
    comment = b.text.strip().splitlines()[-1]
    assert comment.startswith("# ")
    # "a/b/version_0/metrics.csv, metrics.parquet, media/sample_0.png, sample_1000.png, ...": each name is in
    # the folder of the first, or in the sub-folder the last name with a "/" gave
    names = [n.strip() for n in comment[2:].split(",") if n.strip() != "..."]
    base, first = names[0].rsplit("/", 1)
    folder = first_example / base
    assert (folder / first).exists(), folder / first
    for name in names[1:]:
        if "/" in name:
            sub, name = name.rsplit("/", 1)
            folder = first_example / base / sub
        assert (folder / name).exists(), folder / name
    log_dir = first_example / "test_tube_logs" / "dense_model" / "version_0"
    assert len(list((log_dir / "media").glob("sample_*.png"))) == 10
    layout = block("## What it writes", "<save_dir>/<name>/version_<N>/").text.splitlines()[1:]
    for line in layout:
        if line.startswith("    ") and not line.startswith("     "):
            name = line.split()[0].rstrip("/")
            assert (log_dir / name).exists(), name
    table = test_tube.read(log_dir)
    assert table.num_rows == 10_010 and table.column("step").to_pylist()[-1] == 9_999


def test_looking_at_results(first_example: Path) -> None:
    """read() and runs() as the block calls them, on the first example's run."""
    code = block("## Looking at results", "import test_tube").text
    out = run_python(code + "print(table.num_rows, runs.num_rows, runs.column('status').to_pylist())\n", first_example,
                     "results.py")
    assert out.split() == ["10010", "1", "['finished']"]


def test_reading_from_object_storage(first_example: Path, s3: S3Server, tmp_path: Path) -> None:
    """The block against moto's S3 server: its endpoint and bucket for the README's, credentials from the env."""
    upload_save_dir(first_example / "test_tube_logs", s3.filesystem(), f"{s3.bucket_name}/logs")
    code = block("## Object storage (S3 and compatible)", "import pyarrow.fs").text
    code = code.replace("127.0.0.1:9000", s3.endpoint).replace("my-bucket", s3.bucket_name)
    cwd = workspace(tmp_path)
    (cwd / "remote.py").write_text(code + "print(table.num_rows, runs.num_rows, same.num_rows, log_dir)\n",
                                   encoding="utf-8")
    out = shell("python remote.py", cwd, **s3.env())
    rows, found, same, log_dir = out.split()
    assert (rows, found, same) == ("10010", "1", "1")
    assert log_dir == f"s3://{s3.bucket_name}/logs/dense_model/version_0?endpoint_override={s3.endpoint}&scheme=http"


def test_search_example(tmp_path: Path) -> None:
    """`python search.py`: six trials, six versions, and the best one printed."""
    cwd = workspace(tmp_path)
    out = save_and_run(block("## Hyperparameter search", "from test_tube import Experiment, HyperOptArgumentParser"),
                       cwd)
    assert out.startswith("best of 6: layers=")
    assert test_tube.runs(cwd / "test_tube_logs").num_rows == 6


def test_lightning_example(tmp_path: Path) -> None:
    """`python train_lightning.py` trains 3 epochs with only the lightning extra's packages and prints its rows."""
    pytest.importorskip("lightning")
    b = block("## Lightning", "import lightning as L")
    code = "\n".join(line.split("#", 1)[0] for line in b.text.splitlines())
    assert "pandas" not in code  # pandas is in no extra: a venv with only .[lightning] and torch lacks it
    cwd = workspace(tmp_path)
    out = save_and_run(b, cwd)
    assert "rows: ['step', 'created_at'" in out and "train_loss" in out
    table = test_tube.runs(cwd / "test_tube_logs").to_pylist()
    assert [(r["name"], r["status"]) for r in table] == [("regression", "finished")]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_example(tmp_path: Path) -> None:
    """`.venv/bin/torchrun --nproc_per_node 2 train_ddp.py`: rank 0's run, and one folder per rank as drawn."""
    pytest.importorskip("torch")
    cwd = workspace(tmp_path)
    # torchrun's own rendezvous port (29500 by default) may be taken by another test run: PET_MASTER_PORT moves it
    save_and_run(block("## Distributed training (DDP)", "import torch"), cwd, PET_MASTER_PORT=str(free_port()))
    logs = cwd / "test_tube_logs"
    assert sorted(p.name for p in (logs / "ddp_demo").iterdir() if p.name.startswith("version")) == ["version_0"]
    assert test_tube.read(logs / "ddp_demo" / "version_0").num_rows == 100
    layout = block("## Distributed training (DDP)",
                   "<save_dir>/<name>/version_<N>/rank_<r>/    meta.experiment, metrics.csv, metrics.parquet, ... as above")
    files = [f.strip() for f in layout.first.split("/    ", 1)[1].split(",") if "..." not in f]
    for rank in (0, 1):
        folder = logs / "ddp_demo_per_rank" / "version_0" / f"rank_{rank}"
        for file in files:
            assert (folder / file).exists(), folder / file
        assert test_tube.read(folder).column("local_loss").to_pylist()[0] == 1.0 / (1 + rank)


def test_slurm_blocks() -> None:
    """The resubmission fragment compiles and uses the API it names; the search itself runs in test_hpc_slurm."""
    fragment = block("## SLURM cluster search", "import json").text
    compile(fragment, "README fragment", "exec")
    from test_tube.hpc import SlurmCluster

    for method in ("set_checkpoint_load_function", "set_checkpoint_save_function", "optimize_parallel_cluster_cpu"):
        assert f"cluster.{method}(" in fragment and callable(getattr(SlurmCluster, method))


def test_checkout_snapshot(tmp_path: Path) -> None:
    """In a git repository with four tagged runs, the block brings version 3's code back into ../dense_model_v3."""
    repo = tmp_path / "project"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True, timeout=60)
    (repo / "train.py").write_text("print('v0')\n")
    subprocess.run([*git, "add", "."], cwd=repo, check=True, timeout=60)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=repo, check=True, timeout=60)
    code = ("import sys\nfrom pathlib import Path\nfrom test_tube import Experiment\n"
            "for i in range(4):\n"
            "    Path('train.py').write_text(f'print({i})\\n')\n"
            "    Experiment(name='dense_model', save_dir='test_tube_logs', create_git_tag=True).close()\n")
    run_python(code, repo, "make_runs.py")
    run_python(block("## Getting back to the code of any run", "import test_tube").text, repo, "checkout.py")
    assert (tmp_path / "dense_model_v3" / "train.py").read_text() == "print(3)\n"


def test_the_test_command_is_what_ci_runs() -> None:
    """The README's test command is .ci/run's last line, so CI runs exactly it."""
    command = block("# test_tube", "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "
                                      ".venv/bin/python -m pytest -q").first
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == command
    for part in command.split(" && ")[:2]:
        check_install(part, ROOT)
