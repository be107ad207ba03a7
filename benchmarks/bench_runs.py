"""How long does ``test_tube.runs()`` take to summarise many finished runs?

Builds a save_dir of finished runs (default: 1,000 runs of 10,000 rows each),
then times ``runs(save_dir)`` against a baseline measured in the same run: the
naive summary that loads every row of every run with ``test_tube.read()``.
Prints medians and the ratio.

The runs are written directly with pyarrow, byte for byte in the engine's
format, because logging ten million rows through ``Experiment`` would take
minutes: ``meta.experiment`` with every key, ``meta_tags.csv``,
``metrics.parquet`` with the Parquet sink's options, ``_journal.arrows`` framed
by the engine's own encoder (20 flushes of 500 rows), and an empty ``media/``.
``metrics.csv`` is left out: ``runs()`` never reads it.  ``meta.experiment``
holds the summary ``close()`` records, computed by the same function
(``_runs.closing_summary``) once the other files are written, as ``close()``
does.  The page cache is warm (the files were just written), as it is when
one looks at runs just finished.

With ``--old-src``, ``runs()`` of that source tree and of this one are each
timed in a child process of their own: the first call there is the first
call in a process (after ``import test_tube``, its lazy imports included); then, medians, every run read anew (the
summaries of earlier calls cleared) and the call repeated.

    .venv/bin/python benchmarks/bench_runs.py            # 1,000 x 10,000, 5 rounds
    .venv/bin/python benchmarks/bench_runs.py --runs 100 --rows 1000 --rounds 3
    .venv/bin/python benchmarks/bench_runs.py --sizes 100,1000,10000 --rows 1000 --old-src /tmp/main-src
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from test_tube._store import _journal, _layout

from test_tube import read
from test_tube._store import _runs
from test_tube._store._runs import runs

FRAME_ROWS = 500


def build(save_dir: str, n_runs: int, n_rows: int, *, experiments: int = 4) -> None:
    """Write ``n_runs`` finished runs of ``n_rows`` rows under ``save_dir``."""
    rng = np.random.default_rng(0)
    steps = np.arange(n_rows, dtype=np.int64)
    start_us = 1_795_000_000_000_000
    for r in range(n_runs):
        name, version = f"exp{r % experiments}", r // experiments
        log_dir = _layout.version_dir(save_dir, name, version)
        os.makedirs(os.path.join(log_dir, _layout.MEDIA))
        lr = [1e-3, 3e-3, 1e-2][r % 3]
        loss = np.exp(-steps / (3000 * (1 + r % 5))) + rng.random(n_rows) * 0.05
        table = pa.table({
            "step": steps,
            "created_at": pa.array(start_us + r * 10**9 + steps * 1000, pa.timestamp("us", tz="UTC")),
            "loss": loss,
            "acc": 1.0 - loss / 2,
            "lr": np.full(n_rows, lr),
            "epoch": steps // 100,
            # a sparse metric: logged once per epoch
            "val_loss": pa.array(loss * 1.1, mask=(steps % 100) != 99),
        })
        with open(os.path.join(log_dir, _layout.JOURNAL), "wb") as f:
            for offset in range(0, n_rows, FRAME_ROWS):
                for piece in _journal.encode(table.slice(offset, FRAME_ROWS)):
                    f.write(memoryview(piece))
        pq.write_table(table, os.path.join(log_dir, _layout.PARQUET), compression="zstd", use_dictionary=False)
        created = "2026-11-29 10:00:00.000000"
        meta = {
            "name": name, "version": version,
            "tags_path": os.path.join(log_dir, _layout.TAGS), "metrics_path": os.path.join(log_dir, _layout.CSV),
            "autosave": True, "description": f"lr sweep {r}", "created_at": created, "exp_hash": f"{name}_v{version}",
            "format": _layout.FORMAT, "status": "finished", "pid": 12345, "host": "bench-host",
            "updated_at": created, "ended_at": created, "flush_interval": 2.0,
            "git": {"ok": False, "error": "not recorded (record_git=False)"},
            _layout.SUMMARY: _runs.closing_summary(log_dir),
        }
        with open(os.path.join(log_dir, _layout.META), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False)
        with open(os.path.join(log_dir, _layout.TAGS), "w", encoding="utf-8") as f:
            f.write(f'key,value\nlr,{lr}\nbatch_size,{32 << (r % 3)}\noptimizer,adam\nlayers,"[64, 64]"\n')


def naive(save_dir: str) -> int:
    """The baseline: load every row of every run and reduce it."""
    total = 0
    for exp in sorted(os.listdir(save_dir)):
        for version in _layout.existing_versions(os.path.join(save_dir, exp)):
            table = read(_layout.version_dir(save_dir, exp, version))
            for name in ("loss", "acc", "lr", "epoch", "val_loss"):
                column = table.column(name)
                column.drop_null()[-1].as_py()
                pa.compute.min_max(column)
            total += table.num_rows
    return total


_CHILD = """
import json, statistics, sys, time
from test_tube import runs
save_dir, rounds = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter(); table = runs(save_dir); first = time.perf_counter() - t0
from test_tube._store import _runs
kept = getattr(_runs, "_SUMMARIES", None)  # a tree without kept summaries reads every run anyway
cold, warm = [], []
for _ in range(rounds):
    if kept is not None:
        kept.items.clear()
    t0 = time.perf_counter(); runs(save_dir); cold.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); runs(save_dir); warm.append(time.perf_counter() - t0)
print(json.dumps({"first": first, "cold": statistics.median(cold), "median": statistics.median(warm),
                  "rows": table.num_rows}))
"""


def other_source(src: str, save_dir: str, rounds: int) -> dict[str, float]:
    """``runs()`` of another source tree (``src``, e.g. a copy of main's ``src``), timed in a child process."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    out = subprocess.run([sys.executable, "-c", _CHILD, save_dir, str(rounds)], env=env, capture_output=True,
                         text=True, check=True, timeout=3600)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def measure(save_dir: str, n_runs: int, n_rows: int, rounds: int, baseline_rounds: int) -> dict[str, float]:
    """Medians of runs() without and with the summaries of earlier calls, and of the baseline."""
    t0 = time.perf_counter()
    runs(save_dir)  # the first call also pays one-time imports (pyarrow loads pandas when installed)
    first = time.perf_counter() - t0
    cold, warm, cpu = [], [], []
    for _ in range(rounds):
        _runs._SUMMARIES.items.clear()  # as a new process finds it: every run read
        t0, c0 = time.perf_counter(), time.process_time()
        table = runs(save_dir)
        cold.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        again = runs(save_dir)  # the runs were summarised by the call before: their files are only stat'ed
        warm.append(time.perf_counter() - t0)
        assert again.equals(table)
    assert table.num_rows == n_runs, table.num_rows
    assert table.column("rows").to_pylist() == [n_rows] * n_runs
    base = []
    for _ in range(baseline_rounds):
        t0 = time.perf_counter()
        rows = naive(save_dir)
        base.append(time.perf_counter() - t0)
    assert rows == n_runs * n_rows
    return {"first": first, "cold": statistics.median(cold), "cold_min": min(cold), "cold_max": max(cold),
            "cpu": statistics.median(cpu), "warm": statistics.median(warm), "base": statistics.median(base)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sizes", help="comma-separated run counts to measure in one process run, e.g. "
                                        "100,1000,10000 (default: --runs only)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-rounds", type=int, default=1)
    parser.add_argument("--old-src", metavar="SRC", help="also time runs() of this source tree (a copy of another "
                                                         "checkout's src/) in a child process, for before/after")
    parser.add_argument("--dir", help="build the runs here and keep them (default: a temporary folder)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [args.runs]

    root = args.dir or tempfile.mkdtemp(prefix="bench_runs_")
    try:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"pyarrow {pa.__version__}; {args.rows} rows a run; medians of {args.rounds} rounds "
              f"(baseline: {args.baseline_rounds})", flush=True)
        results = []
        for n in sizes:
            save_dir = os.path.join(root, f"logs_{n}x{args.rows}")
            if not os.path.isdir(save_dir):
                t0 = time.perf_counter()
                build(save_dir, n, args.rows)
                print(f"built {n} runs x {args.rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)
            result = measure(save_dir, n, args.rows, args.rounds, args.baseline_rounds)
            if args.old_src:
                old = other_source(args.old_src, save_dir, args.rounds)
                new = other_source(os.path.join(os.path.dirname(_runs.__file__), "..", ".."), save_dir, args.rounds)
                assert old["rows"] == n == new["rows"]
                result |= {"old_first": old["first"], "old_cold": old["cold"], "old": old["median"],
                           "new_first": new["first"], "new_cold": new["cold"]}
            results.append((n, result))
            print(f"  {n} runs: runs() {result['cold']:.3f} s (min {result['cold_min']:.3f}, max "
                  f"{result['cold_max']:.3f}, CPU {result['cpu']:.3f}), again {result['warm']:.3f} s; "
                  f"first call in the process {result['first']:.3f} s", flush=True)
        print(f"load average while measuring: {os.getloadavg()[0]:.2f} (other processes inflate wall times)")
        head = ["runs", "runs() s", "us/run", "again s", "baseline s", "baseline/runs()"]
        if args.old_src:
            head[4:4] = ["old runs() s", "old/runs()"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for n, r in results:
            cells = [f"{n}", f"{r['cold']:.3f}", f"{r['cold'] / n * 1e6:.0f}", f"{r['warm']:.3f}",
                     f"{r['base']:.3f}", f"{r['base'] / r['cold']:.2f}x"]
            if args.old_src:
                cells[4:4] = [f"{r['old_cold']:.3f}", f"{r['old_cold'] / r['cold']:.2f}x"]
            print("| " + " | ".join(cells) + " |")
        if args.old_src:
            print("\nEach in a process of its own (first: its first call, after import test_tube):")
            head = ["runs", "old first s", "first s", "old/first", "old runs() s", "runs() s", "old/runs()"]
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            for n, r in results:
                print(f"| {n} | {r['old_first']:.3f} | {r['new_first']:.3f} | {r['old_first'] / r['new_first']:.2f}x"
                      f" | {r['old_cold']:.3f} | {r['new_cold']:.3f} | {r['old_cold'] / r['new_cold']:.2f}x |")
        print("runs(): every run read (summaries of earlier calls cleared, as in a new process); again: the "
              "same call repeated, finished runs answered from the earlier call's summaries after a stat of "
              "their files; baseline: read() of every row of every run")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
