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
