"""Background threads yield the CPU to the training loop.

The writer and the image encoders do real CPU work (CSV text, Parquet
compression, PNG/JPEG encoding) with the GIL released, so on a machine whose
cores are all busy training they compete with the loop and its BLAS threads.
Linux lets one thread lower its own scheduling priority; a thread started by
such a thread (the Parquet rewrite) inherits it.
"""

from __future__ import annotations

import os
import sys
import threading

#: The niceness background threads ask for (the lowest priority).
BACKGROUND_NICENESS = 19


def lower_this_thread() -> None:
    """Lower the calling thread's priority, where the platform supports it per thread."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere setpriority(PRIO_PROCESS, tid) would renice the whole process
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except OSError:
        pass  # a sandbox may forbid it; the thread then runs at normal priority, which is only slower


#: The interpreter's switch interval while an Experiment is open (seconds; the default is 5 ms).
#: The writer's threads make a few dozen numpy/pyarrow calls per batch, each of which lets go
#: of the GIL; getting it back next to a training loop that runs Python takes up to the switch
#: interval, so at 5 ms they spend most of their time waiting, and the loop then waits for room.
SWITCH_INTERVAL = 2e-4

_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved: float | None = None
_switch_ours: float | None = None  # the interval as the interpreter reports it after we set it


def shorten_switch_interval() -> None:
    """Lower the switch interval to :data:`SWITCH_INTERVAL` (never raise it) while a writer runs."""
    global _switch_users, _switch_saved, _switch_ours
    with _switch_lock:
        _switch_users += 1
        if _switch_users == 1:
            current = sys.getswitchinterval()
            if current > SWITCH_INTERVAL:
                _switch_saved = current
                sys.setswitchinterval(SWITCH_INTERVAL)
                _switch_ours = sys.getswitchinterval()


def restore_switch_interval() -> None:
    """Undo :func:`shorten_switch_interval` once the last writer stopped (unless changed meanwhile)."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            return
        _switch_users -= 1
        if _switch_users == 0 and _switch_saved is not None:
            if sys.getswitchinterval() == _switch_ours:  # nobody changed it meanwhile
                sys.setswitchinterval(_switch_saved)
            _switch_saved = None


def forget_switch_users() -> None:
    """In a forked child: no writer runs there; give the interval back as it was."""
    global _switch_users, _switch_lock
    _switch_lock = threading.Lock()
    _switch_users = 1
    restore_switch_interval()
