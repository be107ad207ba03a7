"""Run trials in worker processes and collect one outcome per trial.

A small pool of our own instead of :class:`multiprocessing.pool.Pool`: a Pool
hangs forever when a worker dies mid-task (its result never arrives), and its
workers are daemonic, so a trial could not start its own processes (a data
loader with workers). Here each worker runs one trial at a time over its own
pipe, so the parent always knows which trial a dead worker was running; that
trial gets an error and a fresh worker takes its place.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .._errors import TestTubeError

__all__ = ["TrialError", "default_start_method", "run_trials"]

# How long a worker told to stop may take to exit before it is terminated:
# long enough for the final flush of Experiments its trials left open.
_GRACEFUL_EXIT_S = 60.0
# How long a terminated (or already dead) worker may take to be reaped.
_REAP_S = 10.0


class TrialError(TestTubeError, RuntimeError):
    """One trial of a parallel search failed; it stands in place of the trial's result.

    ``trial`` is the trial's namespace and ``index`` its position in the
    results. The exception the trial raised is chained as ``__cause__`` (a
    ``RuntimeError`` when the worker process died instead). ``remote_traceback``
    is the traceback text from the worker process, or ``None``.
    """

    def __init__(
        self, message: str, *, trial: Any, index: int, remote_traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.trial = trial
        self.index = index
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default exception pickling.
        return (
            _rebuild_trial_error,
            (str(self), self.trial, self.index, self.remote_traceback, self.__cause__),
        )


def _rebuild_trial_error(
    message: str, trial: Any, index: int, remote_traceback: str | None, cause: Any
) -> TrialError:
    error = TrialError(message, trial=trial, index=index, remote_traceback=remote_traceback)
    error.__cause__ = cause
    return error


class _RemoteTraceback(Exception):
    """Carries a worker's traceback text so printing the chain shows where it failed."""

    def __str__(self) -> str:
        return str(self.args[0])


def default_start_method() -> str | None:
    """Return the start method the parallel runners use when none is given.

    ``'fork'`` on Linux: the trial function is inherited rather than pickled, so
    functions from notebooks, test modules and scripts without a
    ``__main__`` guard work, as with the original test-tube. Elsewhere ``None``
    (the platform default; fork is unsafe on macOS).
    """
    return "fork" if sys.platform.startswith("linux") else None


def _context(start_method: str | None) -> BaseContext:
    if start_method is None:
        start_method = default_start_method()
    if start_method is None:
        return multiprocessing.get_context()
    methods = multiprocessing.get_all_start_methods()
    if start_method not in methods:
        raise ValueError(f"start_method must be one of {methods} or None, got {start_method!r}")
    return multiprocessing.get_context(start_method)


def _portable(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives a pickle round trip, else a stand-in that does."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure means it cannot cross the pipe as is
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return exc


def _send_failure(conn: Connection, index: int, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    conn.send((index, False, _portable(exc), text))


def _worker_main(
    conn: Connection,
    fn: Callable[..., Any],
    trials: Sequence[Any],
    worker_id: str | None,
    pass_worker_id: bool,
) -> None:
    """Run the trials the parent sends (by index) until told to stop."""
    if worker_id is not None:
        # Set before fn runs, so a CUDA runtime initialised inside fn sees it.
        os.environ["CUDA_VISIBLE_DEVICES"] = worker_id
    try:
        while True:
            try:
                index = conn.recv()
            except EOFError:  # the parent is gone: nothing more will come
                return
            if index is None:
                return
            # Only Exception: a trial calling sys.exit() ends its worker, and
            # the parent reports that trial and starts a new worker.
            try:
                result = fn(trials[index], worker_id) if pass_worker_id else fn(trials[index])
            except Exception as exc:  # a failed trial must not end the search
                _send_failure(conn, index, exc)
                continue
            try:
                conn.send((index, True, result, None))
            except Exception as exc:  # the result could not be pickled
                failure = TypeError(
                    f"the trial's result could not be sent to the parent process: {exc}"
                )
                _send_failure(conn, index, failure)
    finally:
        _final_flush()


def _final_flush() -> None:
    """Close the Experiments the trials left open, as the end of a script would.

    multiprocessing ends a worker with ``os._exit()``, which skips ``atexit``
    and with it test_tube's final flush: rows logged by a trial that forgot
    ``close()`` would be lost. Only test_tube's own hook runs here; running
    every inherited ``atexit`` handler in a forked child would, for one, delete
    the parent's temporary directories.
    """
    from .._engine import _exit

    _exit.flush_all()


@dataclass
class _Worker:
    worker_id: str | None
    process: BaseProcess
    conn: Connection
    index: int | None = None
    started_at: float = 0.0


def _start_worker(
    ctx: BaseContext,
    fn: Callable[..., Any],
    trials: Sequence[Any],
    worker_id: str | None,
    pass_worker_id: bool,
) -> _Worker:
    parent_conn, child_conn = ctx.Pipe()
    # Not daemonic: a trial may start processes of its own.
    process = ctx.Process(  # type: ignore[attr-defined]
        target=_worker_main,
        args=(child_conn, fn, trials, worker_id, pass_worker_id),
        name=f"test_tube-trial-worker-{worker_id}" if worker_id is not None else None,
    )
    try:
        process.start()
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        # Only spawn and forkserver pickle fn and the trials; say so plainly.
        parent_conn.close()
        child_conn.close()
        raise TypeError(
            f"fn and the trials must be picklable with start method {ctx.get_start_method()!r} "
            f"(use a module-level function, or start_method='fork' where available): {exc}"
        ) from exc
    child_conn.close()  # so recv() in the parent sees EOF when the child dies
    return _Worker(worker_id=worker_id, process=process, conn=parent_conn)


def _ask_to_stop(worker: _Worker) -> None:
    try:
        worker.conn.send(None)
    except OSError:  # already gone
        pass


def _stop(worker: _Worker, *, graceful: bool) -> None:
    """Reap ``worker``: wait for it to exit if ``graceful`` (asked to stop), else terminate it."""
    if graceful:
        worker.process.join(_GRACEFUL_EXIT_S)
    if worker.process.is_alive():
        worker.process.terminate()
        worker.process.join(_REAP_S)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join()
    worker.conn.close()


def run_trials(
    fn: Callable[..., Any],
    trials: Sequence[Any],
    *,
    worker_ids: Sequence[str | None],
    pass_worker_id: bool,
    progress: bool,
    start_method: str | None,
    describe: Callable[[Any], str],
) -> list[list[Any]]:
    """Run ``fn`` on every trial in one worker process per entry of ``worker_ids``.

    Returns ``[[trial, result], ...]`` in trial order; a trial that raised (or
    whose worker died) has a :class:`TrialError` as its result. Blocks until
    every trial has finished. With ``progress``, writes a line per finished
    trial to stderr. ``describe(trial)`` names a trial in error messages.
    """
    total = len(trials)
    outcomes: list[list[Any] | None] = [None] * total
    if total == 0:
        return []
    ctx = _context(start_method)
    pending = collections.deque(range(total))
    workers: list[_Worker] = []
    finished = failed = 0
    ok = False

    def start(worker_id: str | None) -> None:
        # Hand the next trial to a fresh worker; if it dies before taking it,
        # put the trial back and try another fresh worker.
        while pending:
            worker = _start_worker(ctx, fn, trials, worker_id, pass_worker_id)
            workers.append(worker)
            if assign(worker):
                return
            workers.remove(worker)
            _stop(worker, graceful=False)

    def assign(worker: _Worker) -> bool:
        index = pending.popleft()
        try:
            worker.conn.send(index)
        except OSError:  # the worker is dead, and never saw this trial
            pending.appendleft(index)
            return False
        worker.index, worker.started_at = index, time.monotonic()
        return True

    def record(worker: _Worker, success: bool, payload: Any, remote_tb: str | None) -> None:
        nonlocal finished, failed
        index = worker.index
        assert index is not None
        worker.index = None
        elapsed = time.monotonic() - worker.started_at
        trial = trials[index]
        if success:
            outcomes[index] = [trial, payload]
            status = "ok"
        else:
            failed += 1
            cause: BaseException = payload
            if remote_tb is not None and cause.__cause__ is None:
                cause.__cause__ = _RemoteTraceback(remote_tb)
            error = TrialError(
                f"trial {index} failed with {type(cause).__name__}: {cause} ({describe(trial)})",
                trial=trial,
                index=index,
                remote_traceback=remote_tb,
            )
            error.__cause__ = cause
            outcomes[index] = [trial, error]
            status = f"failed: {type(cause).__name__}: {cause}"
        finished += 1
        if progress:
            print(
                f"test_tube: trial {index} finished in {elapsed:.1f} s"
                f" ({finished}/{total} done, {failed} failed): {status}",
                file=sys.stderr,
                flush=True,
            )

    try:
        for worker_id in list(worker_ids)[:total]:
            start(worker_id)
        while finished < total:
            busy = [w for w in workers if w.index is not None]
            ready = set(
                multiprocessing.connection.wait(
                    [w.conn for w in busy] + [w.process.sentinel for w in busy]
                )
            )
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                alive = True
                try:
                    # poll() first: a worker may send its result and exit at once.
                    if worker.conn.poll():
                        _, success, payload, remote_tb = worker.conn.recv()
                        record(worker, success, payload, remote_tb)
                    else:
                        alive = False
                except (EOFError, OSError):
                    alive = False
                except Exception as exc:  # the reply could not be unpickled here
                    record(worker, False, exc, None)
                if not alive:
                    worker.process.join(_REAP_S)
                    death = RuntimeError(
                        f"the worker process exited with code {worker.process.exitcode}"
                        " while running this trial"
                    )
                    record(worker, False, death, None)
                    workers.remove(worker)
                    _stop(worker, graceful=False)
                    start(worker.worker_id)
                elif pending and not assign(worker):
                    workers.remove(worker)
                    _stop(worker, graceful=False)
                    start(worker.worker_id)
        ok = True
    finally:
        # On success, let workers exit on their own; on an error (or Ctrl-C)
        # in the parent, stop them now rather than leave them running.
        if ok:
            # Ask all first, so the workers' final flushes run in parallel.
            for worker in workers:
                _ask_to_stop(worker)
        for worker in workers:
            _stop(worker, graceful=ok)
    return [outcome for outcome in outcomes if outcome is not None]
