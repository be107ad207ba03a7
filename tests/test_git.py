"""Tests for the git snapshot (test_tube._git), on real temporary repositories."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import test_tube
from test_tube._errors import GitSnapshotWarning
from test_tube._git import checkout_snapshot, snapshot

REAL_GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(REAL_GIT is None, reason="needs the git executable")

TAG = "tt_dense_model_v0"
MESSAGE = "Test tube exp: dense_model - a test run"
ON_LINUX = sys.platform.startswith("linux")


# --------------------------------------------------------------------------- helpers


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run the git CLI in ``repo`` without letting it refresh the index, and return its stdout."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    proc = subprocess.run(
        [str(REAL_GIT), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def show(repo: Path, rev: str, path: str) -> str | None:
    """The content of ``path`` in ``rev``, or None when the snapshot does not contain it."""
    proc = subprocess.run(
        [str(REAL_GIT), "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, timeout=30, check=False
    )
    return proc.stdout if proc.returncode == 0 else None


def worktree_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` outside ``.git``, by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def user_state(repo: Path) -> dict[str, object]:
    """Everything the snapshot promises to leave untouched; the index bytes are read first."""
    index = repo / ".git" / "index"
    return {
        "index_bytes": index.read_bytes() if index.exists() else None,
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "head": git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False),
        "head_ref": (repo / ".git" / "HEAD").read_text(),
        "ls_files": git(repo, "ls-files", "-s"),
        "stash": git(repo, "stash", "list"),
        "files": worktree_files(repo),
        "config": (repo / ".git" / "config").read_bytes(),
    }


def git_children() -> list[str]:
    """Processes whose parent is this test process and whose name starts with git."""
    if not ON_LINUX:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and comm.startswith("git"):
            found.append(f"{entry.name} {comm}")
    return found


def processes_with(marker: str) -> list[str]:
    """Live processes whose command line contains ``marker``."""
    if not ON_LINUX:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name} {cmdline}")
    return found


def no_process_with(marker: str, grace: float = 2.0) -> bool:
    """Whether every process carrying ``marker`` is gone within ``grace`` seconds."""
    end = time.monotonic() + grace
    while processes_with(marker):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def snap(
    cwd: Path, tag: str | None = TAG, timeout: float = 10.0
) -> tuple[dict[str, object], list[warnings.WarningMessage]]:
    """Call snapshot() and return its record and the warnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = snapshot(str(cwd), tag_name=tag, message=MESSAGE, timeout=timeout)
    json.dumps(record)  # the record goes into meta.experiment as JSON
    assert git_children() == []
    return record, [w for w in caught if issubclass(w.category, GitSnapshotWarning)]


def fake_git(folder: Path, body: str) -> Path:
    """Write an executable ``git`` shell script into ``folder`` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "git"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body).replace("REAL_GIT", str(REAL_GIT)))
    script.chmod(0o755)
    return folder


def write_meta(log_dir: Path, record: dict[str, object]) -> Path:
    """Write a meta.experiment holding ``record`` under the git key, as the Experiment does."""
    log_dir.mkdir(parents=True, exist_ok=True)
    meta = {"name": "dense_model", "version": 0, "description": "a test run", "git": record}
    (log_dir / "meta.experiment").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return log_dir


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep the machine's git configuration and any enclosing repository out of every test."""
    for var in list(os.environ):
        if var.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_")) or var in (
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_PYTHON_GIT_EXECUTABLE",
        ):
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield
    assert list(scratch.iterdir()) == [], "snapshot() left temporary files behind"


def make_repo(path: Path, *, identity: bool = True) -> Path:
    """Create a repository with one commit: train.py, data/config.txt and a .gitignore for *.log."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    if identity:
        git(path, "config", "user.name", "Ada Lovelace")
        git(path, "config", "user.email", "ada@example.org")
    (path / "train.py").write_text("print('v1')\n")
    (path / "data").mkdir()
    (path / "data" / "config.txt").write_text("lr=0.1\n")
    (path / ".gitignore").write_text("*.log\n")
    git(path, "add", "-A")
    git(path, "-c", "user.name=Setup", "-c", "user.email=setup@example.org", "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit and a local identity."""
    return make_repo(tmp_path / "repo")


# --------------------------------------------------------------------------- snapshots of a working tree


def test_clean_tree_tags_head(repo: Path) -> None:
    """With a clean tree the tag points at HEAD itself and nothing else changes."""
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == []
    head = git(repo, "rev-parse", "HEAD")
    assert record == {
        "ok": True,
        "root": str(repo),
        "head": head,
        "branch": "main",
        "detached": False,
        "dirty": False,
        "tag": TAG,
        "tag_created": True,
        "snapshot": head,
    }
    assert git(repo, "rev-parse", f"{TAG}^{{commit}}") == head
    assert git(repo, "cat-file", "-t", TAG) == "tag"  # annotated
    assert git(repo, "tag", "-l", "--format=%(contents:subject)", TAG) == MESSAGE
    assert show(repo, TAG, "train.py") == "print('v1')\n"
    assert user_state(repo) == before


def test_modified_tracked_file_is_in_snapshot(repo: Path) -> None:
    """An uncommitted change is in the tagged commit, whose parent is HEAD."""
    (repo / "train.py").write_text("print('v2')\n")
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == []
    head = git(repo, "rev-parse", "HEAD")
    assert record["dirty"] is True and record["head"] == head
    assert record["snapshot"] != head
    assert git(repo, "rev-parse", f"{TAG}^{{commit}}") == record["snapshot"]
    assert git(repo, "rev-parse", f"{record['snapshot']}^") == head
    assert git(repo, "log", "-1", "--format=%s", str(record["snapshot"])) == MESSAGE
    assert show(repo, TAG, "train.py") == "print('v2')\n"
    assert show(repo, TAG, "data/config.txt") == "lr=0.1\n"
    assert user_state(repo) == before


def test_untracked_file_is_included(repo: Path) -> None:
    """An untracked file that is not ignored is part of the snapshot."""
    (repo / "models").mkdir()
    (repo / "models" / "dense.py").write_text("class Dense: ...\n")
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == [] and record["dirty"] is True
    assert show(repo, TAG, "models/dense.py") == "class Dense: ...\n"
    assert user_state(repo) == before


def test_ignored_file_is_left_out(repo: Path) -> None:
    """A file matched by .gitignore stays out of the snapshot, and alone does not make the tree dirty."""
    (repo / "train.log").write_text("epoch 1\n")
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == []
    assert record["dirty"] is False and record["snapshot"] == record["head"]
    assert show(repo, TAG, "train.log") is None
    assert user_state(repo) == before


def test_staged_and_deleted_files_follow_the_working_tree(repo: Path) -> None:
    """A staged change edited again and a deleted file are taken as they are on disk; the index keeps its staging."""
    (repo / "train.py").write_text("print('staged')\n")
    git(repo, "add", "train.py")
    (repo / "train.py").write_text("print('on disk')\n")
    (repo / "data" / "config.txt").unlink()
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == [] and record["dirty"] is True
    assert show(repo, TAG, "train.py") == "print('on disk')\n"
    assert show(repo, TAG, "data/config.txt") is None
    assert user_state(repo) == before
    assert show(repo, ":0", "train.py") == "print('staged')\n"


def test_detached_head(repo: Path) -> None:
    """A detached HEAD is recorded with no branch, and the snapshot's parent is that commit."""
    git(repo, "checkout", "-q", "--detach", "HEAD")
    (repo / "train.py").write_text("print('detached')\n")
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == []
    assert record["branch"] is None and record["detached"] is True
    assert git(repo, "rev-parse", f"{TAG}^{{commit}}^") == git(repo, "rev-parse", "HEAD")
    assert show(repo, TAG, "train.py") == "print('detached')\n"
    assert user_state(repo) == before


def test_existing_tag_is_kept(repo: Path) -> None:
    """Resuming a version whose tag exists keeps that tag, records it and does not warn."""
    (repo / "train.py").write_text("print('first run')\n")
    first, _ = snap(repo)
    tag_object = git(repo, "rev-parse", TAG)
    (repo / "train.py").write_text("print('resumed')\n")
    before = user_state(repo)
    second, caught = snap(repo)
    assert caught == []
    assert second["ok"] is True and second["tag"] == TAG
    assert second["tag_created"] is False
    assert second["snapshot"] == first["snapshot"]
    assert second["dirty"] is True
    assert git(repo, "rev-parse", TAG) == tag_object
    assert show(repo, TAG, "train.py") == "print('first run')\n"
    assert user_state(repo) == before


def test_unborn_branch(tmp_path: Path) -> None:
    """In a repository without commits the snapshot is a root commit of the files on disk."""
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('first')\n")
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == []
    assert record["head"] is None and record["branch"] == "main" and record["detached"] is False
    assert record["dirty"] is True
    assert git(repo, "rev-list", "--parents", "-n", "1", str(record["snapshot"])) == record["snapshot"]
    assert show(repo, TAG, "train.py") == "print('first')\n"
    assert user_state(repo) == before


def test_cwd_in_a_subfolder(repo: Path) -> None:
    """From a subfolder the whole repository is snapshotted and the root is the top of the working tree."""
    (repo / "train.py").write_text("print('v2')\n")
    record, caught = snap(repo / "data")
    assert caught == []
    assert record["root"] == str(repo)
    assert show(repo, TAG, "train.py") == "print('v2')\n"


def test_without_tag_records_head_and_dirty_only(repo: Path) -> None:
    """With no tag asked for, root, HEAD, branch and the dirty flag are recorded and no tag is made."""
    before = user_state(repo)
    clean, caught = snap(repo, tag=None)
    assert caught == []
    assert clean == {
        "ok": True,
        "root": str(repo),
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": "main",
        "detached": False,
        "dirty": False,
        "tag": None,
        "tag_created": False,
        "snapshot": None,
    }
    (repo / "notes.txt").write_text("untracked\n")
    dirty, _ = snap(repo, tag=None)
    assert dirty["dirty"] is True
    assert git(repo, "tag", "-l") == ""
    assert user_state(repo)["index_bytes"] == before["index_bytes"]


def test_identity_fallback_leaves_config_alone(tmp_path: Path) -> None:
    """Without a configured identity the snapshot is made as test_tube and the config is not edited."""
    repo = make_repo(tmp_path / "anon", identity=False)
    (repo / "train.py").write_text("print('anon')\n")
    before = user_state(repo)
    record, caught = snap(repo)
    assert caught == [] and record["ok"] is True
    assert git(repo, "log", "-1", "--format=%an <%ae>", str(record["snapshot"])) == "test_tube <test_tube@localhost>"
    assert git(repo, "tag", "-l", "--format=%(taggername)", TAG) == "test_tube"
    assert user_state(repo) == before


def test_configured_identity_and_signing_config(repo: Path) -> None:
    """The user's identity is used, and a signing setup that cannot work does not stop the snapshot."""
    git(repo, "config", "commit.gpgSign", "true")
    git(repo, "config", "tag.gpgSign", "true")
    git(repo, "config", "gpg.program", str(repo / "no-such-gpg"))
    (repo / "train.py").write_text("print('signed?')\n")
    record, caught = snap(repo)
    assert caught == [] and record["ok"] is True
    assert git(repo, "log", "-1", "--format=%an", str(record["snapshot"])) == "Ada Lovelace"
    assert git(repo, "tag", "-l", "--format=%(taggername)", TAG) == "Ada Lovelace"


# --------------------------------------------------------------------------- failures: warn, record, never raise


def test_not_a_repository_without_tag_is_silent(tmp_path: Path) -> None:
    """Outside a repository with no tag asked for, the failure is recorded without a warning."""
    folder = tmp_path / "plain"
    folder.mkdir()
    record, caught = snap(folder, tag=None)
    assert record == {"ok": False, "error": "not a git repository"}
    assert caught == []


def test_not_a_repository_with_tag_warns(tmp_path: Path) -> None:
    """Outside a repository a requested tag fails with a warning that points at the caller."""
    folder = tmp_path / "plain"
    folder.mkdir()
    record, caught = snap(folder)
    assert record == {"ok": False, "error": "not a git repository"}
    assert len(caught) == 1
    assert "not a git repository" in str(caught[0].message) and TAG in str(caught[0].message)
    assert caught[0].filename == __file__


def test_missing_folder_warns(tmp_path: Path) -> None:
    """A cwd that does not exist is a recorded failure, never a snapshot of another folder."""
    record, caught = snap(tmp_path / "gone")
    assert record["ok"] is False and "does not exist" in str(record["error"])
    assert len(caught) == 1


def test_git_missing_from_path(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a git executable a requested tag warns, the plain record stays silent, and nothing raises."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    before_tags = (repo / ".git" / "refs" / "tags").exists() and list((repo / ".git" / "refs" / "tags").iterdir())
    record, caught = snap(repo)
    assert record["ok"] is False and "git executable not found" in str(record["error"])
    assert len(caught) == 1
    quiet, caught = snap(repo, tag=None)
    assert quiet["ok"] is False and "git executable not found" in str(quiet["error"])
    assert caught == []
    assert (repo / ".git" / "refs" / "tags").exists() and list((repo / ".git" / "refs" / "tags").iterdir()) == (
        before_tags or []
    )


def test_bare_repository(tmp_path: Path) -> None:
    """A bare repository has no working tree: the tag request warns and no ref is created."""
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    record, caught = snap(bare)
    assert record["ok"] is False and "bare repository" in str(record["error"])
    assert record["root"] == str(bare)
    assert len(caught) == 1
    assert git(bare, "for-each-ref") == ""
    quiet, caught = snap(bare, tag=None)
    assert quiet["ok"] is False and caught == []


def permissions_enforced() -> bool:
    """Whether a folder without write permission refuses new files (not so for root with its usual capabilities)."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o500)
        try:
            Path(folder, "probe").write_text("")
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o700)
        return False


@pytest.mark.skipif(os.name != "posix" or not permissions_enforced(), reason="file permissions are not enforced")
def test_read_only_repository(repo: Path) -> None:
    """In a repository that cannot be written the failure is recorded and warned about."""
    (repo / "train.py").write_text("print('ro')\n")
    before = user_state(repo)
    git_dir = repo / ".git"
    modes = {p: p.stat().st_mode for p in [git_dir, *git_dir.rglob("*")]}
    for p in modes:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        record, caught = snap(repo)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert record["ok"] is False and record["head"] == before["head"]
    assert len(caught) == 1
    assert git(repo, "tag", "-l") == ""
    assert user_state(repo) == before


def test_tag_creation_fails_when_the_ref_is_locked(repo: Path) -> None:
    """When git cannot write the tag (its ref is locked), the failure is recorded and nothing else changes."""
    (repo / "train.py").write_text("print('locked')\n")
    lock = repo / ".git" / "refs" / "tags" / f"{TAG}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    before = user_state(repo)
    record, caught = snap(repo)
    assert record["ok"] is False and "`git tag` failed" in str(record["error"])
    assert record["dirty"] is True and record["tag_created"] is False
    assert len(caught) == 1
    assert git(repo, "tag", "-l") == ""
    assert user_state(repo) == before


def test_invalid_tag_name(repo: Path) -> None:
    """A tag name git refuses is a recorded failure with a warning."""
    record, caught = snap(repo, tag="dense model v0")
    assert record["ok"] is False and "not a valid git tag name" in str(record["error"])
    assert len(caught) == 1
    assert git(repo, "tag", "-l") == ""


# --------------------------------------------------------------------------- hung git: bounded, no process left


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as a fake git")
def test_hanging_git_is_killed_within_timeout(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A git that never answers is killed, with its children, once the time budget is spent."""
    marker = "sleep 41.4159"
    fake = fake_git(
        tmp_path / "fake-bin",
        f"""\
        case "$1" in version|--version) exec REAL_GIT "$@";; esac
        {marker}
        """,
    )
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    record, caught = snap(repo, timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0 + 2.0
    assert record["ok"] is False and "did not finish within the 1 s budget" in str(record["error"])
    assert len(caught) == 1
    assert no_process_with(marker)


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as a fake git")
def test_hanging_add_leaves_state_untouched(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When `git add` hangs mid-snapshot, start-up stays bounded and the user's repository is as before."""
    marker = "sleep 42.7182"
    fake = fake_git(
        tmp_path / "fake-bin",
        f"""\
        case "$1" in add) {marker};; *) exec REAL_GIT "$@";; esac
        """,
    )
    (repo / "train.py").write_text("print('slow')\n")
    before = user_state(repo)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    record, caught = snap(repo, timeout=1.5)
    assert time.monotonic() - start < 1.5 + 2.0
    assert record["ok"] is False and "`git add`" in str(record["error"])
    assert record["head"] == before["head"] and record["branch"] == "main"
    assert len(caught) == 1
    assert no_process_with(marker)
    monkeypatch.undo()
    assert git(repo, "tag", "-l") == ""
    assert user_state(repo) == before


def run_fresh_interpreter(cwd: Path, path: str, tag: str | None, timeout: float) -> dict[str, object]:
    """Call snapshot() in a new Python process (GitPython not yet imported) and return its result."""
    code = textwrap.dedent(
        f"""\
        import json, sys, time, warnings
        from test_tube._git import snapshot
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.monotonic()
            record = snapshot({str(cwd)!r}, tag_name={tag!r}, message="m", timeout={timeout!r})
            elapsed = time.monotonic() - start
        print(json.dumps({{"record": record, "elapsed": elapsed, "warnings": [str(w.message) for w in caught],
                          "gitpython_imported": "git" in sys.modules}}))
        """
    )
    env = {**os.environ, "PATH": path}
    env.pop("GIT_PYTHON_REFRESH", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_git_missing_at_first_import(repo: Path, tmp_path: Path) -> None:
    """In a fresh interpreter without git, GitPython's import-time check neither raises nor runs."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_fresh_interpreter(repo, str(empty), TAG, 5.0)
    record = result["record"]
    assert isinstance(record, dict)
    assert record["ok"] is False and "git executable not found" in record["error"]
    assert len(result["warnings"]) == 1  # type: ignore[arg-type]
    assert result["gitpython_imported"] is False
    quiet = run_fresh_interpreter(repo, str(empty), None, 5.0)
    assert quiet["warnings"] == []


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as a fake git")
def test_hanging_git_at_first_import(repo: Path, tmp_path: Path) -> None:
    """In a fresh interpreter a git that hangs even on `git version` cannot stall GitPython's import."""
    marker = "sleep 43.1415"
    fake = fake_git(tmp_path / "fake-bin", f"{marker}\n")
    result = run_fresh_interpreter(repo, f"{fake}{os.pathsep}{os.environ['PATH']}", TAG, 1.0)
    record = result["record"]
    assert isinstance(record, dict) and record["ok"] is False
    assert "`git version` did not finish" in record["error"]
    assert float(result["elapsed"]) < 1.0 + 2.0  # type: ignore[arg-type]
    assert len(result["warnings"]) == 1  # type: ignore[arg-type]
    assert no_process_with(marker)


# --------------------------------------------------------------------------- checkout_snapshot


def test_checkout_snapshot_round_trip(repo: Path, tmp_path: Path) -> None:
    """checkout_snapshot writes exactly the files of the working tree at start-up, ignored files excepted."""
    (repo / "train.py").write_text("print('round trip')\n")
    (repo / "models").mkdir()
    (repo / "models" / "dense.py").write_text("class Dense: ...\n")
    (repo / "run.log").write_text("ignored\n")
    expected = {k: v for k, v in worktree_files(repo).items() if k != "run.log"}
    record, _ = snap(repo)
    log_dir = write_meta(tmp_path / "logs" / "dense_model" / "version_0", record)
    before = user_state(repo)
    dest = tmp_path / "code-of-run"
    assert checkout_snapshot(log_dir, dest) == record["snapshot"]
    assert worktree_files(dest) == expected
    assert user_state(repo) == before


def test_checkout_snapshot_into_existing_empty_folder(repo: Path, tmp_path: Path) -> None:
    """An existing empty destination is accepted, and a clean run checks out HEAD's files."""
    record, _ = snap(repo)
    log_dir = write_meta(tmp_path / "run", record)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert checkout_snapshot(str(log_dir), str(dest)) == git(repo, "rev-parse", "HEAD")
    assert worktree_files(dest) == worktree_files(repo)


def test_checkout_snapshot_refuses_runs_without_snapshot(repo: Path, tmp_path: Path) -> None:
    """A run without a snapshot, or without meta.experiment, raises a clear error."""
    plain, _ = snap(repo, tag=None)
    with pytest.raises(ValueError, match="no git snapshot"):
        checkout_snapshot(write_meta(tmp_path / "plain", plain), tmp_path / "d1")
    failed = {"ok": False, "error": "not a git repository"}
    with pytest.raises(ValueError, match="not a git repository"):
        checkout_snapshot(write_meta(tmp_path / "failed", failed), tmp_path / "d2")
    with pytest.raises(FileNotFoundError, match="meta.experiment"):
        checkout_snapshot(tmp_path / "nowhere", tmp_path / "d3")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


def test_checkout_snapshot_without_git(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a git executable checkout_snapshot raises OSError and writes nothing."""
    record, _ = snap(repo)
    log_dir = write_meta(tmp_path / "run", record)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(OSError, match="git executable not found"):
        checkout_snapshot(log_dir, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_checkout_snapshot_of_a_collected_commit(repo: Path, tmp_path: Path) -> None:
    """A recorded commit that is no longer in the repository is a ValueError."""
    record, _ = snap(repo)
    log_dir = write_meta(tmp_path / "run", {**record, "snapshot": "0" * 40})
    with pytest.raises(ValueError, match="is not in the repository"):
        checkout_snapshot(log_dir, tmp_path / "dest")


def test_checkout_snapshot_refuses_a_non_empty_destination(repo: Path, tmp_path: Path) -> None:
    """checkout_snapshot never writes over files already in the destination."""
    record, _ = snap(repo)
    log_dir = write_meta(tmp_path / "run", record)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine\n")
    with pytest.raises(FileExistsError):
        checkout_snapshot(log_dir, dest)
    assert worktree_files(dest) == {"keep.txt": b"mine\n"}


# --------------------------------------------------------------------------- through the Experiment, once it exists


@pytest.mark.skipif(not hasattr(test_tube, "Experiment"), reason="test_tube.Experiment is not there yet")
def test_experiment_records_the_snapshot(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiment(create_git_tag=True) tags tt_<name>_v<version> and records the snapshot in meta.experiment."""
    (repo / "train.py").write_text("print('experiment')\n")
    monkeypatch.chdir(repo)
    exp = test_tube.Experiment(name="dense_model", save_dir=str(tmp_path / "logs"), create_git_tag=True)
    try:
        log_dir = Path(exp.log_dir)
    finally:
        exp.close()
    meta = json.loads((log_dir / "meta.experiment").read_text(encoding="utf-8"))
    record = meta["git"]
    assert record["ok"] is True and record["tag"] == f"tt_dense_model_v{meta['version']}"
    assert show(repo, record["tag"], "train.py") == "print('experiment')\n"
    assert checkout_snapshot(log_dir, tmp_path / "code") == record["snapshot"]


@pytest.mark.skipif(not hasattr(test_tube, "Experiment"), reason="test_tube.Experiment is not there yet")
def test_experiment_outside_a_repository_warns_at_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiment(create_git_tag=True) outside a repository starts, warns at the user's line and records why."""
    folder = tmp_path / "plain"
    folder.mkdir()
    monkeypatch.chdir(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp = test_tube.Experiment(name="dense_model", save_dir=str(tmp_path / "logs"), create_git_tag=True)
    try:
        log_dir = Path(exp.log_dir)
    finally:
        exp.close()
    ours = [w for w in caught if issubclass(w.category, GitSnapshotWarning)]
    assert len(ours) == 1 and ours[0].filename == __file__
    meta = json.loads((log_dir / "meta.experiment").read_text(encoding="utf-8"))
    assert meta["git"] == {"ok": False, "error": "not a git repository"}
