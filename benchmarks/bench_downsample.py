"""How long does `test-tube serve` take to draw a metric of 10^7 rows?  Target: under 1 s.

Two measurements, medians printed next to the target:

1. The min/max envelope alone (``test_tube._store._downsample.envelope``) on a
   synthetic 10^7-point line (a random walk with one spike) into 1,000
   buckets, against a floor measured in the same run: one ``min()`` and one
   ``max()`` over the same array, the least any exact envelope must do.
   Checks that the spike is in the output.
2. The ``/api/series`` endpoint end to end, over HTTP, on runs of 10^7 rows:
   the first request on a finished run (two columns of its complete
   ``metrics.parquet``) and on a run still writing (the whole journal, with
   ``test_tube.read``), and
   later ones (the run's points are cached until its files change: envelope,
   JSON and HTTP), and a zoomed request (``x_min``/``x_max``).

The runs are written directly in the engine's journal format (frames of
100,000 rows, by the engine's own encoder) plus ``meta.experiment`` and, for
the finished one, ``metrics.parquet`` as the Parquet sink writes it, because
logging 10^7 rows through ``Experiment`` would take minutes and also write a
CSV the server never reads.  The page cache is warm (the files were just
written), as when one looks at a run that is writing.

    .venv/bin/python benchmarks/bench_downsample.py               # 10^7 rows, 5 rounds
    .venv/bin/python benchmarks/bench_downsample.py --rows 1000000 --rounds 3
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
import threading
import time
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from test_tube._store import _journal, _layout
from test_tube._store._downsample import envelope
from test_tube._app._serve import Server

TARGET_S = 1.0
FRAME_ROWS = 100_000
BUCKETS = 1000


def line(n: int) -> tuple[np.ndarray, np.ndarray, int]:  # type: ignore[type-arg]
    """A random walk of ``n`` points with one spike; returns x, y and the spike's index."""
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=n))
    spike = n * 2 // 3 + 7
    y[spike] = y.max() + 1e4
    return np.arange(n, dtype=np.float64), y, spike


def build_run(save_dir: str, y: np.ndarray, version: int = 0, finished: bool = True) -> str:  # type: ignore[type-arg]
    """A run ``bench/version_<version>`` whose ``loss`` column is ``y``.

    A finished run also has its complete ``metrics.parquet`` (written as the
    Parquet sink writes it: zstd, row groups of 2^17 rows, no dictionary for
    numbers); a run still writing has only its journal.
    """
    log_dir = _layout.version_dir(save_dir, "bench", version)
    os.makedirs(log_dir)
    n = len(y)
    steps = np.arange(n, dtype=np.int64)
    start_us = 1_795_000_000_000_000
    with open(os.path.join(log_dir, _layout.JOURNAL), "wb") as f:
        for offset in range(0, n, FRAME_ROWS):
            s = steps[offset:offset + FRAME_ROWS]
            frame = pa.table({"step": s,
                              "created_at": pa.array(start_us + s * 1000, pa.timestamp("us", tz="UTC")),
                              "loss": y[offset:offset + FRAME_ROWS]})
            for piece in _journal.encode(frame):
                f.write(memoryview(piece))
    if finished:
        table = pa.table({"step": steps, "created_at": pa.array(start_us + steps * 1000, pa.timestamp("us", tz="UTC")),
                          "loss": y})
        pq.write_table(table, os.path.join(log_dir, _layout.PARQUET), compression="zstd", use_dictionary=False,
                       row_group_size=1 << 17)
    created = "2026-11-29 10:00:00.000000"
    meta = {"name": "bench", "version": version, "created_at": created, "format": _layout.FORMAT,
            "status": "finished" if finished else "running", "pid": 12345, "host": "bench-host", "updated_at": created, "ended_at": created}
    with open(os.path.join(log_dir, _layout.META), "w", encoding="utf-8") as f:
        json.dump(meta, f)
    return log_dir


def timed(fn: object, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return times


def fetch(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=600) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.rows

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, pyarrow {pa.__version__}; load average {os.getloadavg()[0]:.2f}")
    x, y, spike = line(n)

    # 1. the envelope alone
    xs, ys = envelope(x, y, BUCKETS)
    assert len(xs) <= 4 * BUCKETS and y[spike] in ys, "the spike must survive"
    env = timed(lambda: envelope(x, y, BUCKETS), args.rounds)
    floor = timed(lambda: (y.min(), y.max()), args.rounds)
    print(f"envelope of {n:,} points into {BUCKETS} buckets -> {len(xs)} points (spike kept): "
          f"median {statistics.median(env):.3f} s of {args.rounds} (min {min(env):.3f}, max {max(env):.3f}); "
          f"floor min()+max() {statistics.median(floor):.3f} s, ratio {statistics.median(env) / statistics.median(floor):.1f}x; "
          f"target < {TARGET_S:.0f} s")

    # 2. the endpoint, end to end over HTTP
    root = tempfile.mkdtemp(prefix="bench_downsample_")
    server = None
    try:
        save_dir = os.path.join(root, "logs")
        t0 = time.perf_counter()
        build_run(save_dir, y, 0, finished=True)
        build_run(save_dir, y, 1, finished=False)
        print(f"built two runs of {n:,} rows in {time.perf_counter() - t0:.1f} s")
        server = Server(save_dir, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running = server.url + f"api/series?name=bench&version=1&metric=loss&buckets={BUCKETS}"
        t0 = time.perf_counter()
        first = fetch(running)
        cold_running = time.perf_counter() - t0
        assert first["points"] == n and y[spike] in first["ys"]  # type: ignore[operator]
        url = server.url + f"api/series?name=bench&version=0&metric=loss&buckets={BUCKETS}"
        t0 = time.perf_counter()
        first = fetch(url)
        cold = time.perf_counter() - t0
        assert first["points"] == n and y[spike] in first["ys"]  # type: ignore[operator]
        warm = timed(lambda: fetch(url), args.rounds)
        lo, hi = n // 3, n // 3 + n // 100
        zoom = timed(lambda: fetch(url + f"&x_min={lo}&x_max={hi}"), args.rounds)
        print(f"/api/series, {n:,} rows, first request: finished run (2 columns of metrics.parquet) {cold:.3f} s, "
              f"run still writing (the whole journal) {cold_running:.3f} s; "
              f"next requests median {statistics.median(warm):.3f} s (min {min(warm):.3f}, max {max(warm):.3f}); "
              f"zoomed to 1% of x: median {statistics.median(zoom):.3f} s; target < {TARGET_S:.0f} s")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
