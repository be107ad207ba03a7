"""How many requests, and how long, does ``test_tube.runs()`` take over S3?

Starts moto's S3 server on 127.0.0.1 (installed by ``tests/s3lib.py`` into
``.venv-s3`` on first use) with its request log kept, builds finished runs
locally as ``bench_runs.py`` does (1,000 rows in 2 journal frames each),
copies them into a bucket in the layout of a writer on object storage (the
journal as ``_journal/<offset>.arrows`` segments, one per frame) and times,
in one process run:

* ``runs(URI)`` with every run read (the summaries of earlier calls cleared):
  a finished run answered from the summary ``close()`` recorded in its
  ``meta.experiment`` (``bench_runs.build`` records it as ``close()`` does);
* the same without those records (``_runs._from_record`` turned off), as the
  code before them read every run: footer and journal tail;
* ``runs(URI)`` again (finished runs answered from the earlier call's
  summaries: only the listing);
* the baseline: ``read(URI)`` of every row of every run.

Prints wall times (medians) and the requests each made per run, by method,
from the server's log (a listing is a GET too).  moto is a Python server: a real store answers each
request faster, and the request counts are what carries over.

    .venv/bin/python benchmarks/bench_runs_s3.py --runs 1000
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import s3lib  # noqa: E402
import storelib  # noqa: E402
from bench_runs import build  # noqa: E402

import pyarrow as pa  # noqa: E402
import test_tube  # noqa: E402
from test_tube._store import _runs  # noqa: E402

# One line per request; werkzeug colours some of them (ANSI escapes before the method).
_REQUEST = re.compile(rb'"(?:\x1b\[[0-9;]*m)*(GET|HEAD|PUT|POST|DELETE) ([^ ]*) HTTP')


class Counted:
    """Requests the server logged since the last :meth:`take`, by method."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0

    def take(self) -> collections.Counter[str]:
        data = self.log.read_bytes()
        new, self.offset = data[self.offset:], len(data)
        return collections.Counter(m.group(1).decode() for m in _REQUEST.finditer(new))


def per_run(counts: collections.Counter[str], n: int) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{method} {count / n:.2f}" for method, count in sorted(counts.items()))
    return f"{total / n:.2f} requests a run ({parts})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench_runs_s3_"))
    server = s3lib.S3Server()
    log = root / "moto.log"
    server._log = open(log, "wb")  # noqa: SIM115 - the request log this benchmark counts
    server.start()
    try:
        os.environ.update(server.env())
        save_dir = root / "logs"
        build(str(save_dir), args.runs, args.rows)
        bucket = server.bucket("bench")
        fs = server.filesystem()
        t0 = time.perf_counter()
        storelib.upload_save_dir(save_dir, fs, f"{bucket}/logs")
        print(f"built and uploaded {args.runs} runs x {args.rows} rows in {time.perf_counter() - t0:.1f} s",
              flush=True)
        uri = server.uri(bucket, "logs")
        counted = Counted(log)
        counted.take()

        def timed(repeat: bool) -> tuple[pa.Table, list[float], collections.Counter[str], list[float],
                                          collections.Counter[str]]:
            """runs() in every round: the first call (nothing kept) and, if ``repeat``, a second one."""
            first, again = [], []
            first_counts = again_counts = collections.Counter[str]()
            for _ in range(args.rounds):
                _runs._SUMMARIES.items.clear()
                t0 = time.perf_counter()
                table = test_tube.runs(uri)
                first.append(time.perf_counter() - t0)
                first_counts = counted.take()
                if repeat:
                    t0 = time.perf_counter()
                    repeated = test_tube.runs(uri)
                    again.append(time.perf_counter() - t0)
                    again_counts = counted.take()
                    assert repeated.drop_columns(["log_dir"]).equals(table.drop_columns(["log_dir"]))
            return table, first, first_counts, again, again_counts

        table, cold, cold_counts, warm, warm_counts = timed(repeat=True)
        assert table.num_rows == args.runs and table.column("rows").to_pylist() == [args.rows] * args.runs
        recorded = _runs._from_record
        _runs._from_record = lambda summary, run: False  # type: ignore[assignment]
        try:
            from_files, files, files_counts, _, _ = timed(repeat=False)
        finally:
            _runs._from_record = recorded  # type: ignore[assignment]
        assert from_files.equals(table)
        local = test_tube.runs(save_dir)
        assert local.drop_columns(["log_dir"]).equals(table.drop_columns(["log_dir"]))

        t0 = time.perf_counter()
        total = sum(test_tube.read(log_dir).num_rows for log_dir in table.column("log_dir").to_pylist())
        base = time.perf_counter() - t0
        base_counts = counted.take()
        assert total == args.runs * args.rows

        print(f"runs() over S3 (moto on 127.0.0.1), {args.runs} finished runs x {args.rows} rows:")
        print(f"  every run read: median {statistics.median(cold):.2f} s of {args.rounds} "
              f"({statistics.median(cold) / args.runs * 1e3:.2f} ms a run); {per_run(cold_counts, args.runs)}")
        print(f"  without the recorded summaries (footer and journal tail): median {statistics.median(files):.2f} s "
              f"({statistics.median(files) / args.runs * 1e3:.2f} ms a run); {per_run(files_counts, args.runs)}")
        print(f"  again (kept summaries): median {statistics.median(warm):.2f} s; "
              f"{per_run(warm_counts, args.runs)}")
        print(f"  baseline, read() of every row: {base:.2f} s; {per_run(base_counts, args.runs)}")
        print(f"  runs() is {statistics.median(files) / statistics.median(cold):.1f}x faster than without the records,"
              f" {base / statistics.median(cold):.1f}x faster than the baseline, "
              f"{base / statistics.median(warm):.1f}x when repeated")
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
