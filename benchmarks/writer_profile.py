"""Where does the writer thread's time go at 10^6 steps?

Logs N rows of 5 floats in a tight loop (the end-to-end workload of
``run.py``), with the writer's stages wrapped to add up, per stage, the CPU
time of the thread that ran it and the wall time it took. The difference is
time spent waiting: for the GIL, and in the journal stage also for ``fsync``,
and in the sinks at ``close()`` also for the background Parquet rewrite they
join. Prints both per row, and the loop's
and ``close()``'s time per step. ``--formats parquet`` (or ``csv``) runs the
same with one published file, to see what each costs end to end.

The wrappers add a few microseconds per call (a few dozen calls per run), and
the figures come from one run: read them as a breakdown, not as a benchmark;
``run.py`` gives the medians.

    .venv/bin/python benchmarks/writer_profile.py
    .venv/bin/python benchmarks/writer_profile.py --formats parquet --rows 1000000
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import test_tube
from test_tube._store import _journal
from test_tube._engine import _ring, _sinks, _writer

STAGES: list[tuple[Any, str, str]] = [
    (_ring.Ring, "whole_run", "take: find the run of whole slots"),
    (_writer.Writer, "_take_packed", "take: packed runs (one gather, one check)"),
    (_writer.Writer, "_convert", "take: other runs to Arrow, logging order, steps"),
    (_journal, "encode", "journal: encode a frame (IPC + crc32)"),
    (_writer.Writer, "_journal", "journal: encode, write, record in the ring"),
    (_writer.Writer, "_sync", "journal: fsync at flushes"),
    (_journal, "read_frames", "publish: read frames back (autosave=False)"),
    (_sinks, "format_rows", "publish: CSV text"),
    (_sinks, "_write_all", "publish: CSV append"),
    (_sinks.ParquetSink, "_write_held", "publish: Parquet row groups (streamed)"),
    (_sinks.ParquetSink, "_rewrite", "publish: Parquet rewrite (doubling snapshots)"),
    (_writer.Writer, "_publish", "publish: all sinks"),
]


def wrap(owner: Any, name: str, label: str, totals: dict[str, list[float]]) -> None:
    inner: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(inner)
    def timed(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            entry = totals[label]
            entry[0] += time.thread_time() - cpu
            entry[1] += time.perf_counter() - wall
            entry[2] += 1

    setattr(owner, name, timed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--formats", default="csv,parquet", help="comma-separated: csv, parquet")
    args = ap.parse_args()
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for owner, name, label in STAGES:
        wrap(owner, name, label, totals)
    n = args.rows
    with tempfile.TemporaryDirectory() as save_dir:
        exp = test_tube.Experiment(name="profile", save_dir=save_dir, formats=args.formats.split(","))
        log = exp.log
        start = time.perf_counter()
        for i in range(n):
            v = i * 1e-3
            log({"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v})
        loop = time.perf_counter() - start
        exp.close()
        close = time.perf_counter() - start - loop
    print(f"{n:,} rows, formats {args.formats}: loop {loop / n * 1e6:.2f} µs/step, "
          f"close {close / n * 1e6:.2f} µs/step, end to end {(loop + close) / n * 1e6:.2f} µs/step")
    print(f"  {'stage':46s} {'calls':>6s} {'CPU µs/row':>11s} {'wall µs/row':>12s}")
    for _, _, label in STAGES:
        if label in totals:
            cpu, wall, calls = totals[label]
            print(f"  {label:46s} {int(calls):6d} {cpu / n * 1e6:11.3f} {wall / n * 1e6:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
