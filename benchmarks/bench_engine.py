"""The engine's figures next to issue 18's targets, each against a floor measured in the same run.

    .venv/bin/python benchmarks/bench_engine.py              # 10^6 steps, 3 rounds (~10 min)
    .venv/bin/python benchmarks/bench_engine.py --quick      # 2*10^5 steps, 1 round, no variants

Every measurement is a fresh process; rounds interleave them so a shared
machine's drift hits each alike; figures are medians over rounds, ratios are
taken within a round.

* *end to end*: ``log(row, step=i)`` of 5 floats, 10^6 times, then ``close()``
  (both files complete), against the floor ``deque.append((seq, step,
  time_ns(), dict(row)))`` cleared every 4,096 rows; with the loop thread's CPU
  per step and the CPU of every other thread, ``close()``'s time and the peak RSS;
* *log() max*: every call timed with ``perf_counter_ns`` in a run of its own;
* *log() median per variant*: ``bench_log_variants.py``'s children, each
  variant against its floor;
* *kill -9*: a child logs at full speed and, after each ``log()`` returns,
  stores the count in a shared page; it is killed at a random moment and
  ``read()`` must hold at least that many rows (at most one more).

Writes ``benchmarks/results/engine.json`` and ``engine.md``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import random
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {
    "e2e_x_floor": 1.8,  # end to end, explicit step=, both formats, against the deque floor
    "log_max_ms": 20.0,  # the slowest log() call over 10^6 steps
    "median_x_floor": 3.0,  # log() median of every variant against its floor
    "close_s": 0.3,  # close() of a 10^6-row run
}
ROW_KEYS = ("loss", "acc", "lr", "grad_norm", "throughput")


def _rows() -> list[dict[str, float]]:
    return [{k: i * 1e-3 for k in ROW_KEYS} for i in range(4096)]


def child_floor(n: int) -> dict[str, Any]:
    rows = _rows()
    queue: deque[Any] = deque()
    time_ns = time.time_ns
    start = time.perf_counter()
    for i in range(n):
        queue.append((i, i, time_ns(), dict(rows[i & 4095])))
        if len(queue) >= 4096:
            queue.clear()
    return {"e2e_us": (time.perf_counter() - start) / n * 1e6}


def child_e2e(n: int) -> dict[str, Any]:
    import test_tube

    rows = _rows()
    folder = tempfile.mkdtemp(prefix="tt-engine-")
    exp = test_tube.Experiment(save_dir=folder, name="bench", record_git=False, formats=("csv", "parquet"))
    rss_before = _rss_mib()
    log = exp.log
    t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    for i in range(n):
        log(rows[i & 4095], step=i)
    t1, c1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
    exp.close()
    t2, p2 = time.perf_counter(), time.process_time()
    import pyarrow.parquet as pq

    assert pq.read_metadata(os.path.join(exp.log_dir, "metrics.parquet")).num_rows == n
    return {
        "e2e_us": (t2 - t0) / n * 1e6, "loop_us": (t1 - t0) / n * 1e6, "close_s": t2 - t1,
        "loop_thread_cpu_us": (c1 - c0) / n * 1e6, "other_cpu_us": ((p1 - p0) - (c1 - c0)) / n * 1e6,
        "close_cpu_s": p2 - p1, "rss_before_mib": rss_before,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_max(n: int) -> dict[str, Any]:
    import test_tube

    rows = _rows()
    folder = tempfile.mkdtemp(prefix="tt-engine-")
    exp = test_tube.Experiment(save_dir=folder, name="bench", record_git=False, formats=("csv", "parquet"))
    log = exp.log
    pc = time.perf_counter_ns
    worst = 0
    over_1ms = 0
    for i in range(n):
        t0 = pc()
        log(rows[i & 4095], step=i)
        d = pc() - t0
        if d > 1_000_000:
            over_1ms += 1
        if d > worst:
            worst = d
    exp.close()
    return {"log_max_ms": worst / 1e6, "calls_over_1ms": over_1ms}


def child_kill(folder: str, progress: str) -> None:
    import test_tube

    fd = os.open(progress, os.O_RDWR)
    shared = mmap.mmap(fd, 8)
    rows = _rows()
    exp = test_tube.Experiment(save_dir=folder, name="kill", record_git=False, formats=("csv", "parquet"))
    log = exp.log
    put = struct.Struct("<q").pack_into
    print("ready", flush=True)
    i = 0
    while True:
        log(rows[i & 4095], step=i)
        i += 1
        put(shared, 0, i)  # reported only once log() returned


def kill_once(seed: int) -> dict[str, Any]:
    import test_tube

    folder = tempfile.mkdtemp(prefix="tt-engine-kill-")
    progress = os.path.join(folder, "progress")
    with open(progress, "wb") as f:
        f.write(b"\0" * 8)
    proc = subprocess.Popen([sys.executable, __file__, "--child", "kill", folder, progress],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(random.Random(seed).uniform(0.2, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    with open(progress, "rb") as f:
        reported = struct.unpack("<q", f.read(8))[0]
    kept = test_tube.read(os.path.join(folder, "kill", "version_0")).num_rows
    return {"reported": reported, "kept": kept}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run(*args: str, src: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src  # another version of test_tube, for the baseline
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, check=False,
                         env=env)
    if out.returncode != 0:
        raise SystemExit(f"{args} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2*10^5 steps, 1 round, no variants")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--kills", type=int, default=3, help="kill -9 runs per round")
    ap.add_argument("--no-variants", action="store_true")
    ap.add_argument("--baseline", metavar="SRC",
                    help="also run end to end with the test_tube package under SRC (e.g. the src/ of "
                         "`git archive <commit> src | tar -x -C /tmp/old`), in the same rounds")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.n or (200_000 if args.quick else 1_000_000)
    if args.child:
        what = args.child[0]
        if what == "kill":
            child_kill(args.child[1], args.child[2])
            return 0
        print(json.dumps({"floor": child_floor, "e2e": child_e2e, "max": child_max}[what](n)))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    variants = not (args.no_variants or args.quick)
    sys.path.insert(0, HERE)
    import bench_log_variants as V

    runs: list[dict[str, Any]] = []
    kills: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    me = os.path.abspath(__file__)
    for r in range(rounds):
        pair = ["floor", "e2e"] if r % 2 == 0 else ["e2e", "floor"]
        rec: dict[str, Any] = {"round": r}
        for what in pair:
            rec[what] = _run(me, "--n", str(n), "--child", what)
        if args.baseline:
            rec["baseline"] = _run(me, "--n", str(n), "--child", "e2e", src=args.baseline)
        rec["max"] = _run(me, "--n", str(n), "--child", "max")
        if variants:
            rec["variants"] = {}
            for variant in V.VARIANTS:
                pair_v = {}
                for logger in ("test_tube", "deque") if r % 2 == 0 else ("deque", "test_tube"):
                    pair_v[logger] = _run(os.path.join(HERE, "bench_log_variants.py"), "--child", variant,
                                          "--logger", logger, "--n", str(n))
                rec["variants"][variant] = pair_v
        for k in range(args.kills):
            kills.append(kill_once(1000 * r + k))
        runs.append(rec)
        print(f"round {r + 1}/{rounds}: e2e {rec['e2e']['e2e_us']:.3f} µs/step, floor {rec['floor']['e2e_us']:.3f}, "
              f"log() max {rec['max']['log_max_ms']:.1f} ms", file=sys.stderr)

    med = statistics.median
    e2e = {k: med([x["e2e"][k] for x in runs]) for k in runs[0]["e2e"]}
    floor = med([x["floor"]["e2e_us"] for x in runs])
    ratio = med([x["e2e"]["e2e_us"] / x["floor"]["e2e_us"] for x in runs])
    log_max = max(x["max"]["log_max_ms"] for x in runs)
    lines = [
        f"Engine figures, {n:,} steps of 5 floats with step=i, {rounds} rounds, {started}, "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores",
        "",
        "| figure | measured | target | met |",
        "|---|---:|---:|:-:|",
        f"| end to end, both formats (µs/step) | {e2e['e2e_us']:.3f} | | |",
        f"| deque floor, same rounds (µs/step) | {floor:.3f} | | |",
        f"| end to end × floor | {ratio:.2f}× | ≤ {TARGETS['e2e_x_floor']}× | {_met(ratio <= TARGETS['e2e_x_floor'])} |",
        f"| log() max over {n:,} calls (ms) | {log_max:.1f} | ≤ {TARGETS['log_max_ms']} "
        f"| {_met(log_max <= TARGETS['log_max_ms'])} |",
        f"| close() (s) | {e2e['close_s']:.3f} | ≤ {TARGETS['close_s']} | {_met(e2e['close_s'] <= TARGETS['close_s'])} |",
        *([f"| baseline ({args.baseline}) end to end (µs/step) | "
           f"{med([x['baseline']['e2e_us'] for x in runs]):.3f} | | |",
           f"| baseline end to end × floor | "
           f"{med([x['baseline']['e2e_us'] / x['floor']['e2e_us'] for x in runs]):.2f}× | | |",
           f"| baseline close() (s) | {med([x['baseline']['close_s'] for x in runs]):.3f} | | |"]
          if args.baseline else []),
        f"| loop thread CPU per step (µs) | {e2e['loop_thread_cpu_us']:.3f} | | |",
        f"| other threads' CPU per step during the loop (µs) | {e2e['other_cpu_us']:.3f} | | |",
        f"| loop wall per step (µs) | {e2e['loop_us']:.3f} | | |",
        f"| RSS before the loop / peak (MiB) | {e2e['rss_before_mib']:.0f} / {e2e['rss_peak_mib']:.0f} | bounded | |",
    ]
    if variants:
        lines.append("")
        lines.append("| variant | log() median µs | floor µs | × floor | target | met |")
        lines.append("|---|---:|---:|---:|---:|:-:|")
        for variant in V.VARIANTS:
            tt = med([x["variants"][variant]["test_tube"]["median_us"] for x in runs])
            fl = med([x["variants"][variant]["deque"]["median_us"] for x in runs])
            x_floor = med([x["variants"][variant]["test_tube"]["median_us"]
                           / x["variants"][variant]["deque"]["median_us"] for x in runs])
            lines.append(f"| {variant} | {tt:.3f} | {fl:.3f} | {x_floor:.2f}× | ≤ {TARGETS['median_x_floor']}× "
                         f"| {_met(x_floor <= TARGETS['median_x_floor'])} |")
    lost = sum(max(0, k["reported"] - k["kept"]) for k in kills)
    lines += ["", f"kill -9 at random moments: {len(kills)} runs, rows reported after log() returned "
              f"{sum(k['reported'] for k in kills):,}, rows kept {sum(k['kept'] for k in kills):,}, "
              f"reported rows lost {lost} (target 0: {_met(lost == 0)})"]
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "engine.json"), "w", encoding="utf-8") as f:
        json.dump({"started": started, "n": n, "rounds": rounds, "command": " ".join(sys.argv), "runs": runs,
                   "kills": kills, "targets": TARGETS}, f, indent=1)
    with open(os.path.join(args.out, "engine.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return 0


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


if __name__ == "__main__":
    sys.exit(main())
