"""How often can a background thread call into numpy and pyarrow while the main thread runs Python?

The writer thread's work is a few dozen numpy/pyarrow calls per batch. Most of
them release the GIL, and a thread that wants it back while another thread runs
pure Python waits for the interpreter's switch interval (5 ms by default). This
script measures that directly: each operation (the kind the writer does on a
65,536-row batch) is called in a loop on a background thread, once while the
main thread waits and once while it spins in Python like a loop that only logs. It
prints calls per second in both cases and their ratio; an operation that keeps
the GIL keeps a good part of its rate, one that releases it drops to about
1 / switch interval.

    .venv/bin/python benchmarks/gil_probe.py
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

ROWS = 65_536


def operations() -> dict[str, Callable[[], object]]:
    packed = np.dtype([("seq", "<i8"), ("time", "<i8"), *((f"v{i}", "<f8") for i in range(5))])
    records = np.zeros(ROWS, packed)
    records["seq"] = np.arange(ROWS)
    seq = np.ascontiguousarray(records["seq"])
    times = pa.array(records["time"], pa.timestamp("ns", tz="UTC"))
    table = pa.table({"a": pa.array(seq)})
    rows = [b"x" * 56] * ROWS
    return {
        "pa.array(strided numpy field)": lambda: pa.array(records["v0"]),
        "pa.array(contiguous, zero-copy)": lambda: pa.array(seq),
        "numpy: seq + 1": lambda: seq + 1,
        "numpy: np.concatenate": lambda: np.concatenate([seq, seq]),
        "pyarrow: cast ns -> us": lambda: times.cast(pa.timestamp("us", tz="UTC"), safe=False),
        "pyarrow: concat_tables": lambda: pa.concat_tables([table, table]),
        "b''.join of 65,536 packed rows": lambda: b"".join(rows),
        "pa.array(list of 1,000 ints)": lambda: pa.array(list(range(1000))),
    }


def rate_alone(op: Callable[[], object], seconds: float) -> float:
    calls = [0]

    def background() -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            op()
            calls[0] += 1

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()  # the main thread waits, holding nothing
    return calls[0] / seconds


def rate_next_to_spinning_python(op: Callable[[], object], seconds: float) -> float:
    stop = threading.Event()
    calls = [0]

    def background() -> None:
        while not stop.is_set():
            op()
            calls[0] += 1

    thread = threading.Thread(target=background)
    thread.start()
    start = time.perf_counter()
    spins = 0
    while time.perf_counter() - start < seconds:  # a loop that only runs Python
        spins += 1
    stop.set()
    thread.join()
    return calls[0] / seconds


def main() -> int:
    seconds = 1.0
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, pyarrow {pa.__version__}, "
          f"switch interval {sys.getswitchinterval() * 1e3:.0f} ms; calls per second on a background thread")
    print(f"  {'operation':34s} {'main waits':>10s} {'main spins':>11s} {'ratio':>6s}")
    for name, op in operations().items():
        alone = rate_alone(op, seconds / 2)
        contended = rate_next_to_spinning_python(op, seconds)
        print(f"  {name:34s} {alone:10,.0f} {contended:11,.0f} {contended / alone:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
