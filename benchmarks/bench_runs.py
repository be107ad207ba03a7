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
``metrics.csv`` is left out: ``runs()`` never reads it.  The page cache is warm
(the files were just written), as it is when one looks at runs just finished.

    .venv/bin/python benchmarks/bench_runs.py            # 1,000 x 10,000, 5 rounds
    .venv/bin/python benchmarks/bench_runs.py --runs 100 --rows 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from test_tube._store import _journal, _layout

from test_tube import read
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-rounds", type=int, default=1)
    parser.add_argument("--dir", help="build the runs here and keep them (default: a temporary folder)")
    args = parser.parse_args(argv)

    root = args.dir or tempfile.mkdtemp(prefix="bench_runs_")
    try:
        save_dir = os.path.join(root, "logs")
        if not os.path.isdir(save_dir):
            t0 = time.perf_counter()
            build(save_dir, args.runs, args.rows)
            print(f"built {args.runs} runs x {args.rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        runs(save_dir)  # the first call also pays one-time imports (pyarrow loads pandas when installed)
        first = time.perf_counter() - t0
        times, cpu = [], []
        for _ in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            table = runs(save_dir)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        assert table.num_rows == args.runs, table.num_rows
        assert table.column("rows").to_pylist() == [args.rows] * args.runs
        base = []
        for _ in range(args.baseline_rounds):
            t0 = time.perf_counter()
            rows = naive(save_dir)
            base.append(time.perf_counter() - t0)
        assert rows == args.runs * args.rows
        fast, slow = statistics.median(times), statistics.median(base)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"pyarrow {pa.__version__}")
        print(f"runs() over {args.runs} finished runs x {args.rows} rows: median {fast:.3f} s "
              f"of {args.rounds} (min {min(times):.3f}, max {max(times):.3f}); "
              f"{fast / args.runs * 1e6:.0f} us per run; CPU time median {statistics.median(cpu):.3f} s; "
              f"first call in the process {first:.3f} s")
        print(f"load average while measuring: {os.getloadavg()[0]:.2f} (other processes inflate wall times)")
        print(f"baseline, read() every row: median {slow:.3f} s of {args.baseline_rounds}; "
              f"runs() is {slow / fast:.1f}x faster")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
