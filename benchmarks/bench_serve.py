"""How fast does `test-tube serve` open a big save_dir, and draw many long runs?

Targets (issue 21): a save_dir of 1,000 runs with 20 metrics each opens in under 2 s; 50 ticked runs
of 10^6 rows each draw in under 3 s.  Each is measured the first time (a fresh server, nothing
cached; the files were just written, so the OS page cache is warm) and again (the server's caches
warm), medians of ``--rounds``:

1. **1,000 runs x 20 metrics** (100 rows each, 3 tags).  ``/api/runs`` over HTTP, next to
   ``test_tube.runs()`` on the same folder in the same process (the baseline: the library's own
   listing, which reads the same footers).  Then, when Debian's headless chromium is installed, the
   page itself: from ``driver.get()`` until the runs table holds 1,000 rows and the grid has drawn
   its 20 charts of the first 10 runs (what the page ticks when it opens).
2. **50 runs x 10^6 rows** (``--metrics`` metrics each, 1 by default).  ``/api/series_many``
   (every series in one request, the page's way) next to the baseline of one ``/api/series``
   request per run, as the page did before it; both at 330 buckets (a grid chart's width).  Then,
   with chromium, the page: from ticking all 50 runs until the grid has drawn them.

Runs are written directly in the engine's formats (journal frames by the engine's own encoder,
``metrics.parquet`` as the Parquet sink writes it, ``meta.experiment``, ``meta_tags.csv``): logging
5 * 10^7 rows through ``Experiment`` would take many minutes.

    .venv/bin/python benchmarks/bench_serve.py                 # both parts, 5 rounds
    .venv/bin/python benchmarks/bench_serve.py --part many --rounds 3
    .venv/bin/python benchmarks/bench_serve.py --part long --long-rows 100000
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
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import test_tube
from test_tube._store import _journal, _layout
from test_tube._app._serve import Server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FRAME_ROWS = 100_000
BUCKETS = 330
OPEN_TARGET_S = 2.0
DRAW_TARGET_S = 3.0


def build_run(save_dir: str, name: str, version: int, rows: int, metrics: list[str], tags: dict[str, Any],
              seed: int) -> None:
    """A finished run ``name/version_<version>``: journal, metrics.parquet, meta.experiment, meta_tags.csv."""
    log_dir = _layout.version_dir(save_dir, name, version)
    os.makedirs(log_dir)
    rng = np.random.default_rng(seed)
    steps = np.arange(rows, dtype=np.int64)
    start_us = 1_795_000_000_000_000
    columns: dict[str, Any] = {"step": steps,
                               "created_at": pa.array(start_us + steps * 1000, pa.timestamp("us", tz="UTC"))}
    for i, metric in enumerate(metrics):
        columns[metric] = np.exp(-steps / (rows / (2 + i))) * 10 + rng.random(rows) * 0.1
    table = pa.table(columns)
    with open(os.path.join(log_dir, _layout.JOURNAL), "wb") as f:
        for offset in range(0, rows, FRAME_ROWS):
            for piece in _journal.encode(table.slice(offset, FRAME_ROWS)):
                f.write(memoryview(piece))
    pq.write_table(table, os.path.join(log_dir, _layout.PARQUET), compression="zstd", use_dictionary=False,
                   row_group_size=1 << 17)
    created = "2026-12-06 10:00:00.000000"
    meta = {"name": name, "version": version, "created_at": created, "format": _layout.FORMAT,
            "status": "finished", "pid": 12345, "host": "bench-host", "updated_at": created, "ended_at": created}
    with open(os.path.join(log_dir, _layout.META), "w", encoding="utf-8") as f:
        json.dump(meta, f)
    with open(os.path.join(log_dir, _layout.TAGS), "w", encoding="utf-8") as f:
        f.write("key,value\n" + "".join(f"{k},{v}\n" for k, v in tags.items()))


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=600) as response:
        return json.loads(response.read())


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"


class Serving:
    """A fresh Server (empty caches) on a free port, in a thread."""

    def __init__(self, save_dir: str) -> None:
        self.server = Server(save_dir, "127.0.0.1", 0)
        self.url = self.server.url
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def browser() -> Any:
    """Headless chromium through selenium, or None when Debian's chromium is not installed."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        print(f"(no {CHROMIUM} / {CHROMEDRIVER}: the in-browser timings are skipped)")
        return None
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(120)
    return driver


def wait_js(driver: Any, script: str, timeout: float = 120) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.01).until(lambda d: d.execute_script(script))


def part_many(root: str, rounds: int) -> None:
    save_dir = os.path.join(root, "many")
    metrics = [f"{group}/m{i}" for group in ("train", "val") for i in range(10)]
    t0 = time.perf_counter()
    for v in range(1000):
        build_run(save_dir, f"exp{v // 100}", v % 100, 100, metrics,
                  {"lr": 10 ** -(1 + v % 4), "layers": 1 + v % 5, "optimizer": "adam"}, v)
    print(f"built 1,000 runs x 20 metrics x 100 rows in {time.perf_counter() - t0:.1f} s")

    firsts, lib = [], []
    for _ in range(rounds):  # each round: a fresh server, then the library's listing, interleaved
        serving = Serving(save_dir)
        t0 = time.perf_counter()
        data = fetch(serving.url + "api/runs")
        firsts.append(time.perf_counter() - t0)
        assert len(data["runs"]) == 1000 and len(data["runs"][0]["metrics"]) == 20
        serving.stop()
        t0 = time.perf_counter()
        assert test_tube.runs(save_dir).num_rows == 1000
        lib.append(time.perf_counter() - t0)
    serving = Serving(save_dir)
    fetch(serving.url + "api/runs")
    cached = timed(lambda: fetch(serving.url + "api/runs"), rounds)
    serving.stop()
    print(f"/api/runs, 1,000 runs: first request {summary(firsts)}; cached {summary(cached)}; "
          f"baseline test_tube.runs() {summary(lib)}; first / baseline "
          f"{statistics.median(firsts) / statistics.median(lib):.2f}x")

    driver = browser()
    if driver is None:
        return
    drawn = ("return state.runs.length === 1000 && document.querySelectorAll('#runs tbody tr').length === 201"
             " && state.cards.size === 20 && [...state.cards.values()].every(c => c.plot &&"
             " c.plot.series.length === 21)")
    try:
        opened_first, opened_again = [], []
        for _ in range(rounds):
            serving = Serving(save_dir)
            t0 = time.perf_counter()
            driver.get(serving.url)
            wait_js(driver, drawn)
            opened_first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            driver.get(serving.url)
            wait_js(driver, drawn)
            opened_again.append(time.perf_counter() - t0)
            serving.stop()
        print(f"the page on 1,000 runs, until the table and 20 charts of 10 runs are drawn: fresh server "
              f"{summary(opened_first)}; reloaded (server cached) {summary(opened_again)}; target < {OPEN_TARGET_S:.0f} s")
    finally:
        driver.quit()


def part_long(root: str, rounds: int, rows: int, n_metrics: int) -> None:
    save_dir = os.path.join(root, "long")
    metrics = ["loss", "acc", "grad_norm", "lr"][:n_metrics]
    t0 = time.perf_counter()
    for v in range(50):
        build_run(save_dir, "long", v, rows, metrics, {"lr": 10 ** -(1 + v % 4), "seed": v}, v)
    print(f"built 50 runs x {rows:,} rows x {n_metrics} metrics in {time.perf_counter() - t0:.1f} s")
    ids = [f"long/version_{v}" for v in range(50)]
    many = "api/series_many?" + urllib.parse.urlencode(
        [("run", i) for i in ids] + [("metric", m) for m in metrics] + [("buckets", BUCKETS)])

    def one_by_one(serving: Serving) -> None:
        for v in range(50):
            for m in metrics:
                fetch(serving.url + f"api/series?name=long&version={v}&metric={m}&buckets={BUCKETS}")

    batched_first, single_first = [], []
    for _ in range(rounds):  # a fresh server for each first request, the two ways interleaved
        serving = Serving(save_dir)
        t0 = time.perf_counter()
        data = fetch(serving.url + many)
        batched_first.append(time.perf_counter() - t0)
        assert len(data["series"]) == 50 * n_metrics and data["series"][0]["points"] == rows
        serving.stop()
        serving = Serving(save_dir)
        t0 = time.perf_counter()
        one_by_one(serving)
        single_first.append(time.perf_counter() - t0)
        serving.stop()
    serving = Serving(save_dir)
    fetch(serving.url + many)
    batched_cached = timed(lambda: fetch(serving.url + many), rounds)
    one_by_one(serving)
    single_cached = timed(lambda: one_by_one(serving), rounds)
    serving.stop()
    print(f"50 runs x {rows:,} rows x {n_metrics} metrics at {BUCKETS} buckets: /api/series_many first "
          f"{summary(batched_first)}, cached {summary(batched_cached)}; baseline {50 * n_metrics} /api/series "
          f"requests first {summary(single_first)}, cached {summary(single_cached)}; ratio first "
          f"{statistics.median(single_first) / statistics.median(batched_first):.2f}x, cached "
          f"{statistics.median(single_cached) / statistics.median(batched_cached):.2f}x")

    driver = browser()
    if driver is None:
        return
    lines = 1 + 2 * 50  # the step axis, then a raw and a smoothed line per run
    drawn = (f"return [...state.cards.values()].length === {n_metrics} && [...state.cards.values()].every("
             f"c => c.plot && c.plot.series.length === {lines})")
    tick_all = "state.selected.clear(); document.getElementById('select-all').click()"
    try:
        first, again = [], []
        for _ in range(rounds):
            serving = Serving(save_dir)
            driver.get(serving.url)
            wait_js(driver, "return state.runs.length === 50 && state.cards.size > 0")
            driver.execute_script("document.getElementById('select-none').click()")
            t0 = time.perf_counter()
            driver.execute_script(tick_all)
            wait_js(driver, drawn)
            first.append(time.perf_counter() - t0)
            driver.execute_script("document.getElementById('select-none').click()")
            t0 = time.perf_counter()
            driver.execute_script(tick_all)
            wait_js(driver, drawn)
            again.append(time.perf_counter() - t0)
            serving.stop()
        print(f"the page, from ticking all 50 runs until their {n_metrics} chart(s) are drawn: fresh server "
              f"{summary(first)}; again (server cached) {summary(again)}; target < {DRAW_TARGET_S:.0f} s")
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("many", "long", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--long-rows", type=int, default=1_000_000)
    parser.add_argument("--metrics", type=int, default=1, choices=range(1, 5), help="metrics of each long run")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, pyarrow {pa.__version__}; load average {os.getloadavg()[0]:.2f}")
    root = tempfile.mkdtemp(prefix="bench_serve_")
    try:
        if args.part in ("many", "both"):
            part_many(root, args.rounds)
        if args.part in ("long", "both"):
            part_long(root, args.rounds, args.long_rows, args.metrics)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
