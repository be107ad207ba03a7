"""Git: record the state of the code at start-up and snapshot it under a tag.

:func:`snapshot` runs once, from ``Experiment.__init__`` on the calling thread,
before training starts. It only runs plain ``git`` commands through GitPython
(never the object database, which keeps ``git cat-file`` processes alive), each
one killed when the shared time budget runs out, so no git process outlives
the call and nothing git-related runs after a fork. It never raises for a
failure of this optional feature: it warns with
:class:`~test_tube._errors.GitSnapshotWarning` and records what failed.

The snapshot commit is built with a temporary index file, so HEAD, the branch,
the index, the working tree and the stash list of the user's repository stay
exactly as they were; the only additions are git objects and the tag.

:func:`checkout_snapshot` writes the code of a past run into a new folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from ._errors import GitSnapshotWarning, warn_from_caller

if TYPE_CHECKING:
    from git.cmd import Git

__all__ = ["checkout_snapshot", "snapshot"]

# Identity used for the snapshot commit and tag only when the repository has none
# configured; passed through the environment so the user's config is never edited.
_FALLBACK_NAME = "test_tube"
_FALLBACK_EMAIL = "test_tube@localhost"

# Every command runs with these: GIT_OPTIONAL_LOCKS=0 stops `git status` from
# rewriting the user's index to refresh its stat cache, and no command may stop
# to ask for credentials on a terminal.
_BASE_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}



class _GitFailure(Exception):
    """Internal: one step of the snapshot failed; the message is one line for the record.

    ``quiet`` marks failures that are not worth a warning when no tag was asked
    for (the folder is simply not a repository, or git is not installed).
    """

    def __init__(self, message: str, *, quiet: bool = False) -> None:
        super().__init__(message)
        self.quiet = quiet


def snapshot(cwd: str, *, tag_name: str | None, message: str, timeout: float = 5.0) -> dict[str, object]:
    """Record the git state of ``cwd`` and, if ``tag_name`` is given, tag a snapshot of its code.

    Returns the JSON-serialisable record stored under the ``git`` key of
    ``meta.experiment``. On success: ``ok`` (True), ``root`` (top of the working
    tree), ``head`` (commit id, None on an unborn branch), ``branch`` (None when
    detached), ``detached``, ``dirty`` (the working tree, untracked files that are
    not ignored included, differs from HEAD), ``tag`` (``tag_name`` or None),
    ``tag_created`` (False when the tag already existed and was kept) and
    ``snapshot`` (the commit whose tree is the working tree at start-up: HEAD
    itself when clean, otherwise a new commit whose parent is HEAD; None when no
    tag was asked for). On failure: ``ok`` (False), ``error`` (one line) and the
    keys learnt before the failure.

    With ``tag_name=None`` only cheap read-only commands run. A failure issues a
    :class:`GitSnapshotWarning`, except when no tag was asked for and ``cwd`` is
    not in a working tree or git is not installed. The whole call takes at most
    about ``timeout`` seconds: a git command still running then is killed with its
    children. Blocks the calling thread; never raises for a git failure.
    """
    info: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    tmpdir: str | None = None
    try:
        runner = _open(cwd, deadline, timeout)
        _describe(runner, info)
        if tag_name is None:
            info["dirty"] = _status_dirty(runner)
            return {"ok": True, **_ordered(info, tag=None, tag_created=False, snapshot=None)}
        tmpdir = tempfile.mkdtemp(prefix="test_tube-git-")
        _tag_snapshot(runner, info, tag_name, message, tmpdir)
        return {"ok": True, **_ordered(info)}
    except _GitFailure as exc:
        failure = exc
    except Exception as exc:  # noqa: BLE001 - an optional feature must never stop the experiment
        failure = _GitFailure(f"unexpected {type(exc).__name__}: {_first_line(str(exc))}")
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    # A snapshot commit that did not get its tag is unreferenced: do not point at it.
    info.pop("snapshot", None)
    record: dict[str, object] = {"ok": False, "error": str(failure), **info}
    if tag_name is not None or not failure.quiet:
        what = f"create the git tag {tag_name!r}" if tag_name is not None else "record the git state"
        _warn(
            f"test_tube could not {what}: {failure}. The experiment runs without it; "
            "meta.experiment records the failure under 'git'."
        )
    return record


def checkout_snapshot(log_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> str:
    """Write the code of the run in ``log_dir`` into ``dest`` and return the snapshot commit id.

    Reads the ``git`` record of ``<log_dir>/meta.experiment`` and checks the
    snapshot commit out of the recorded repository into ``dest``, which must be a
    new or empty folder. The repository's HEAD, index, working tree and stash are
    left alone. Raises FileNotFoundError when there is no ``meta.experiment`` or
    the recorded repository is gone, ValueError when the run has no snapshot
    (``create_git_tag`` was off or failed) or its commit is no longer in the
    repository, FileExistsError when ``dest`` holds files, and OSError when git
    is missing or fails. Blocks until the files are written; no timeout.
    """
    meta_path = os.path.join(os.fspath(log_dir), "meta.experiment")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"no meta.experiment in {os.fspath(log_dir)!r}: expected the version folder of a test_tube run"
        ) from exc
    record = meta.get("git") if isinstance(meta, dict) else None
    commit = record.get("snapshot") if isinstance(record, dict) else None
    root = record.get("root") if isinstance(record, dict) else None
    if not isinstance(commit, str) or not isinstance(root, str):
        reason = record.get("error") if isinstance(record, dict) else None
        raise ValueError(
            f"the run in {os.fspath(log_dir)!r} has no git snapshot"
            + (f" (it failed: {reason})" if reason else " (create_git_tag was off)")
            + "; nothing to check out"
        )
    if not os.path.isdir(root):
        raise FileNotFoundError(f"the repository recorded for this run, {root!r}, no longer exists")
    dest_path = os.path.abspath(os.fspath(dest))
    if os.path.exists(dest_path) and (not os.path.isdir(dest_path) or os.listdir(dest_path)):
        raise FileExistsError(f"{dest_path!r} is not empty: checkout_snapshot needs a new or empty folder")

    try:
        g = _import_gitpython(None)(root)
        env = dict(_BASE_ENV)
        status, _, err = _execute(g, ["rev-parse", "-q", "--verify", f"{commit}^{{commit}}"], env, None)
        if status != 0:
            raise ValueError(
                f"commit {commit} of the run in {os.fspath(log_dir)!r} is not in the repository {root!r}"
                " (was its tag deleted and the commit garbage-collected?)"
            )
        os.makedirs(dest_path, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="test_tube-git-") as tmpdir:
            # A private index: the repository's own index and working tree are never used.
            env["GIT_INDEX_FILE"] = os.path.join(tmpdir, "index")
            for args in (["read-tree", commit], ["checkout-index", "-a", "-f", f"--prefix={dest_path}{os.sep}"]):
                status, _, err = _execute(g, args, env, None)
                if status != 0:
                    raise OSError(f"`git {args[0]}` failed while checking out {commit}: {_first_line(err)}")
    except _GitFailure as exc:
        raise OSError(f"cannot check out the snapshot of {os.fspath(log_dir)!r}: {exc}") from exc
    return commit


class _Runner:
    """Runs plain git commands in one folder, all within one deadline."""

    def __init__(self, git: Git, deadline: float, timeout: float) -> None:
        self.git = git
        self.deadline = deadline
        self.timeout = timeout

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, ok: tuple[int, ...] = (0,)
    ) -> tuple[int, str, str]:
        """Run ``git <args>`` and return (status, stdout, stderr).

        Raises _GitFailure on a timeout or when the status is not in ``ok``.
        """
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.01:
            raise _GitFailure(f"git did not finish within the {self.timeout:g} s budget (before `git {args[0]}`)")
        status, out, err = _execute(self.git, list(args), {**_BASE_ENV, **(env or {})}, remaining)
        if status in ok:
            return status, out, err
        if status < 0 or time.monotonic() >= self.deadline:
            raise _GitFailure(f"`git {args[0]}` did not finish within the {self.timeout:g} s budget and was killed")
        raise _GitFailure(f"`git {args[0]}` failed: {_first_line(err) or f'exit status {status}'}")


def _execute(g: Git, args: list[str], env: Mapping[str, str], timeout: float | None) -> tuple[int, str, str]:
    """Run one git command through GitPython; return (status, stdout, stderr) without raising on a status."""
    from git.exc import GitCommandNotFound

    exe = g.GIT_PYTHON_GIT_EXECUTABLE or "git"
    if sys.platform == "win32" and timeout is not None:
        return _execute_windows([exe, *args], g.working_dir, env, timeout)
    try:
        status, out, err = g.execute(
            [exe, *args],
            with_extended_output=True,
            with_exceptions=False,
            kill_after_timeout=timeout,
            env=env,
        )
    except GitCommandNotFound as exc:
        raise _GitFailure("git executable not found", quiet=True) from exc
    return status, out, err


def _execute_windows(argv: list[str], cwd: str | None, env: Mapping[str, str], timeout: float) -> tuple[int, str, str]:
    """Run one git command with a timeout on Windows, where GitPython refuses ``kill_after_timeout``."""
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, "LC_ALL": "C", "LANGUAGE": "C", **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, "", "timed out"  # subprocess.run has killed it
    except FileNotFoundError as exc:
        raise _GitFailure("git executable not found", quiet=True) from exc
    out = proc.stdout.decode("utf-8", "replace")
    return proc.returncode, out[:-1] if out.endswith("\n") else out, proc.stderr.decode("utf-8", "replace")


def _open(cwd: str, deadline: float, timeout: float) -> _Runner:
    """Check that git can run in ``cwd`` and return a runner for it."""
    folder = os.path.abspath(cwd)
    # GitPython silently falls back to the process's own folder when the one it was
    # given cannot be entered; refuse that instead of describing the wrong repository.
    if not os.path.isdir(folder) or not os.access(folder, os.X_OK):
        raise _GitFailure(f"folder {folder!r} does not exist or cannot be entered")
    git_cmd = _import_gitpython(deadline)
    return _Runner(git_cmd(folder), deadline, timeout)


def _import_gitpython(deadline: float | None) -> type[Git]:
    """Import GitPython on first use without letting its import-time probe raise or hang.

    GitPython runs ``git version`` when imported, with no timeout, and raises
    ImportError when git is missing unless GIT_PYTHON_REFRESH says otherwise. So
    look git up first, and before the first import run the probe ourselves, bounded.
    """
    configured = os.environ.get("GIT_PYTHON_GIT_EXECUTABLE") or "git"
    if "git" in sys.modules:
        from git.cmd import Git

        configured = Git.GIT_PYTHON_GIT_EXECUTABLE or configured
    exe = shutil.which(configured)
    if exe is None:
        raise _GitFailure(f"git executable not found ({configured!r} is not on PATH)", quiet=True)
    if "git" not in sys.modules:
        _probe(exe, deadline)
        added = "GIT_PYTHON_REFRESH" not in os.environ
        if added:
            os.environ["GIT_PYTHON_REFRESH"] = "quiet"
        try:
            import git  # noqa: F401 - imported for its side effect of locating git
        except ImportError as exc:
            raise _GitFailure(f"GitPython could not be imported: {_first_line(str(exc))}") from exc
        finally:
            if added:
                os.environ.pop("GIT_PYTHON_REFRESH", None)
    from git.cmd import Git

    return Git


def _probe(exe: str, deadline: float | None) -> None:
    """Run ``git version`` within the deadline, killing it and its children if it hangs."""
    remaining = None if deadline is None else max(deadline - time.monotonic(), 0.01)
    posix = os.name == "posix"
    try:
        proc = subprocess.Popen(
            [exe, "version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=posix,  # its own process group, so a hung child can be killed with it
        )
    except OSError as exc:
        raise _GitFailure(f"git executable {exe!r} cannot be run: {exc.strerror or exc}") from exc
    try:
        status = proc.wait(timeout=remaining)
    except subprocess.TimeoutExpired:
        try:
            if posix:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:  # it finished in the meantime
            pass
        proc.wait()
        raise _GitFailure(f"`git version` did not finish within {remaining:g} s and was killed") from None
    if status != 0:
        raise _GitFailure(f"`{exe} version` failed with exit status {status}")


def _describe(runner: _Runner, info: dict[str, object]) -> None:
    """Fill ``info`` with root, head, branch and detached; move the runner to the root."""
    status, out, err = runner.run(
        "rev-parse", "--is-bare-repository", "--is-inside-work-tree", "--absolute-git-dir", ok=(0, 128)
    )
    if status != 0:
        if "not a git repository" in err:
            raise _GitFailure("not a git repository", quiet=True)
        raise _GitFailure(f"`git rev-parse` failed: {_first_line(err) or f'exit status {status}'}")
    lines = out.splitlines()
    if len(lines) < 3:
        raise _GitFailure(f"unexpected output from `git rev-parse`: {out!r}")
    bare, inside, git_dir = lines[0], lines[1], lines[2]
    if bare == "true":
        info["root"] = git_dir
        raise _GitFailure("bare repository: there is no working tree to snapshot", quiet=True)
    if inside != "true":
        info["root"] = git_dir
        raise _GitFailure("the folder is inside a .git directory, not a working tree", quiet=True)
    _, root, _ = runner.run("rev-parse", "--show-toplevel")
    info["root"] = root
    runner.git = type(runner.git)(root)
    status, head, _ = runner.run("rev-parse", "-q", "--verify", "HEAD^{commit}", ok=(0, 1))
    info["head"] = head if status == 0 else None
    status, branch, _ = runner.run("symbolic-ref", "-q", "--short", "HEAD", ok=(0, 1))
    info["branch"] = branch if status == 0 else None
    info["detached"] = status != 0


def _status_dirty(runner: _Runner) -> bool:
    """Whether the working tree differs from HEAD, untracked files that are not ignored included."""
    _, out, _ = runner.run("status", "--porcelain", "-z", "--untracked-files=normal")
    return out != ""


def _tag_snapshot(runner: _Runner, info: dict[str, object], tag: str, message: str, tmpdir: str) -> None:
    """Create (or keep) the annotated tag ``tag`` on a commit of the working tree; fill ``info``."""
    info["tag"] = tag
    info["tag_created"] = False
    status, _, _ = runner.run("check-ref-format", f"refs/tags/{tag}", ok=(0, 1))
    if status != 0 or tag.startswith("-"):
        raise _GitFailure(f"{tag!r} is not a valid git tag name")
    existing = _existing_tag(runner, tag)
    if existing is not None:
        # Resuming a version: its tag already names the code of its first run.
        info["dirty"] = _status_dirty(runner)
        info["snapshot"] = existing
        return

    head = cast("str | None", info["head"])
    index = os.path.join(tmpdir, "index")
    _seed_index(runner, index, head)
    temp_env = {"GIT_INDEX_FILE": index}
    # Same rules as a commit of everything: .gitignore respected, untracked files taken.
    runner.run("add", "-A", env=temp_env)
    _, tree, _ = runner.run("write-tree", env=temp_env)
    head_tree = runner.run("rev-parse", f"{head}^{{tree}}")[1] if head is not None else None
    info["dirty"] = tree != head_tree
    identity = _identity_env(runner)
    if head is not None and tree == head_tree:
        commit = head
    else:
        parents = ["-p", head] if head is not None else []
        # --no-gpg-sign: a signing prompt would stall start-up until the timeout.
        _, commit, _ = runner.run("commit-tree", *parents, "--no-gpg-sign", "-m", message, tree, env=identity)
    info["snapshot"] = commit
    status, _, err = runner.run("tag", "-a", "--no-sign", "-m", message, tag, commit, env=identity, ok=(0, 128))
    if status != 0:
        # Another process may have created it meanwhile; keeping that tag is the resume rule.
        existing = _existing_tag(runner, tag)
        if existing is None:
            raise _GitFailure(f"`git tag` failed: {_first_line(err) or f'exit status {status}'}")
        info["snapshot"] = existing
        return
    info["tag_created"] = True


def _existing_tag(runner: _Runner, tag: str) -> str | None:
    """The commit the tag ``tag`` points at, or None when there is no such tag."""
    status, commit, _ = runner.run("rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", ok=(0, 1))
    return commit if status == 0 else None


def _seed_index(runner: _Runner, index: str, head: str | None) -> None:
    """Start the temporary index as a copy of the user's index, else from HEAD.

    A copy keeps the stat cache, so ``git add -A`` only re-reads changed files
    instead of hashing the whole tree, and keeps sparse-checkout bits. The user's
    index is only read.
    """
    _, real, _ = runner.run("rev-parse", "--git-path", "index")
    real = os.path.join(cast(str, runner.git.working_dir), real)
    if os.path.isfile(real):
        # copy2 keeps the mtime, which git's racy-entry check compares with.
        shutil.copy2(real, index)
    elif head is not None:
        runner.run("read-tree", head, env={"GIT_INDEX_FILE": index})


def _identity_env(runner: _Runner) -> dict[str, str]:
    """Environment for commit-tree and tag: the user's identity if configured, else a fallback."""
    for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        status, _, _ = runner.run("var", var, ok=(0, 128))
        if status != 0:
            fallback = {
                "GIT_AUTHOR_NAME": _FALLBACK_NAME,
                "GIT_AUTHOR_EMAIL": _FALLBACK_EMAIL,
                "GIT_COMMITTER_NAME": _FALLBACK_NAME,
                "GIT_COMMITTER_EMAIL": _FALLBACK_EMAIL,
            }
            return {k: os.environ.get(k) or v for k, v in fallback.items()}
    return {}


def _ordered(info: Mapping[str, object], **defaults: object) -> dict[str, object]:
    """The record's keys in a fixed order, with ``defaults`` for those not set."""
    keys = ("root", "head", "branch", "detached", "dirty", "tag", "tag_created", "snapshot")
    merged = {**defaults, **info}
    return {k: merged[k] for k in keys if k in merged}


def _first_line(text: str) -> str:
    """The line of git's stderr that says what failed, without its ``fatal:``/``error:`` prefix.

    git often prints ``hint:`` or ``warning:`` lines before the one that matters.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return line[len(prefix) :]
    return lines[0] if lines else ""


def _warn(message: str) -> None:
    """Issue a GitSnapshotWarning attributed to the first caller outside test_tube."""
    warn_from_caller(message, GitSnapshotWarning)
