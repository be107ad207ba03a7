"""Process lifecycle: the final flush at exit, SIGTERM, and fork.

Facts this module is built on (see the project's runtime notes):

* the writer is a daemon thread, so it is still running while ``atexit``
  handlers run; a non-daemon writer waiting for an ``atexit`` handler would
  deadlock the exit;
* the default SIGTERM action skips ``atexit``; our handler only raises
  ``SystemExit`` (no I/O, no locks), so the flush runs in ``atexit``;
* a forked child inherits every open Experiment but none of the writer
  threads; it must never flush the parent's rows a second time.

Fork is handled here and nowhere else: :func:`forked` is the one test of
whether an object belongs to another process (every "a forked child cannot
write" check asks it), and the at-fork hook detaches every inherited
Experiment (which detaches each of its stages) and gives back the switch
interval the writers had lowered.

Nothing here runs at import: the hooks are installed by the first Experiment.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import warnings
from types import FrameType
from typing import Any, Protocol

from .._errors import FinalFlushWarning
from ._priority import forget_switch_users


class _Closable(Protocol):
    def _final_close(self, timeout: float | None) -> tuple[int, str]: ...
    def _after_fork_in_child(self) -> None: ...


_open: dict[int, _Closable] = {}
_lock = threading.Lock()
_hooks_installed = False
_previous_sigterm: Any = None
_sigterm_installed = False
#: The signal that ended the process through our handler, if any (recorded in meta.experiment).
received_signal: int | None = None


def register(exp: _Closable) -> None:
    """Track an open Experiment so exit, SIGTERM and fork handle it."""
    global _hooks_installed
    with _lock:
        if not _hooks_installed:
            atexit.register(flush_all)
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _hooks_installed = True
        _open[id(exp)] = exp
    _install_sigterm()


def unregister(exp: _Closable) -> None:
    with _lock:
        _open.pop(id(exp), None)
        last = not _open
    if last:
        _restore_sigterm()


def _install_sigterm() -> None:
    global _previous_sigterm, _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main interpreter
        return
    _sigterm_installed = True


def _restore_sigterm() -> None:
    global _sigterm_installed
    if not _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    # Leave a handler the application installed after ours in place.
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous_sigterm if _previous_sigterm is not None else signal.SIG_DFL)
    _sigterm_installed = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous_sigterm
    if callable(previous):
        # The application's handler decides what SIGTERM means; if it exits,
        # the final flush runs at exit as usual.
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    global received_signal
    received_signal = signum
    # Exit like the default action would (status 128 + 15), but through
    # SystemExit so that atexit handlers, and with them the final flush, run.
    raise SystemExit(128 + signum)


def forked(pid: int) -> bool:
    """Whether this process is a forked child of process ``pid`` (which opened the object asking)."""
    return pid != os.getpid()


def flush_all() -> None:
    """The final flush: close every Experiment this process opened, each within its exit timeout.

    Registered with ``atexit``.  The workers of ``optimize_parallel_cpu``/``_gpu``
    call it too, since a pool worker ends with ``os._exit()``, which skips
    ``atexit``; workers of other pools must ``close()`` their Experiments.
    """
    # A raw os.fork() child that returns normally runs the parent's atexit
    # handlers: only Experiments opened by this very process are flushed.
    with _lock:
        exps = [exp for exp in _open.values() if not forked(getattr(exp, "_pid", os.getpid()))]
    if not exps:
        return
    # A Ctrl-C or SIGTERM arriving during the final flush would abort it and
    # lose rows; hold them until the flush is over (it is bounded by a timeout).
    deferred: list[int] = []
    restore = _defer_signals(deferred)
    try:
        for exp in exps:
            try:
                lost, why = exp._final_close(None)
            except BaseException as exc:  # report, never change the exit status
                print(f"test_tube: final flush failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            if why:
                warnings.warn(f"test_tube: {lost} rows were not written at exit: {why}; they stay in the "
                              f"run's ring file, where read() finds them and the next open of the version "
                              f"recovers them", FinalFlushWarning, stacklevel=1)
    finally:
        restore()


def _defer_signals(deferred: list[int]) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            saved[sig] = signal.signal(sig, lambda s, f: deferred.append(s))
        except (ValueError, OSError):
            pass

    def restore() -> None:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    return restore


def _after_fork_in_child() -> None:
    """In a forked child: detach every inherited Experiment without taking any lock.

    The parent may have held ``_lock`` at the moment of the fork; the child
    gets a fresh one.  The child's copies raise on use, and the child's exit
    never writes the parent's rows.
    """
    global _lock, _sigterm_installed
    _lock = threading.Lock()
    exps = list(_open.values())
    _open.clear()
    for exp in exps:
        exp._after_fork_in_child()
    forget_switch_users()  # no writer runs in the child
    # A pool terminates its workers with SIGTERM; they must die the default way.
    if _sigterm_installed and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous_sigterm if _previous_sigterm is not None else signal.SIG_DFL)
    _sigterm_installed = False

