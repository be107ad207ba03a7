"""What does ``log()`` cost for the rows training loops really log?

Variants, 5 values a row each: automatic steps (the easiest row), an explicit
``step=i`` (the usual way, as in Lightning, W&B and TensorBoard), ``np.float32``
and ``np.float64`` values (what ``.mean()`` of an array gives), a nested dict
(``{"loss": {"train", "val"}, "acc", "opt": {"lr", "grad_norm"}}``) and 0-d CPU
torch tensors.  Each variant runs next to its floor, measured in the same run
with the same rows: ``deque.append((time_ns(), step, row.copy()))``, the least a
logger that snapshots the row for another thread can do in pure Python.

Every (variant, round) is a fresh process.  Rounds interleave the variants, so
a shared machine's drift hits each alike; figures are medians over rounds and
ratios are taken within a round.  Per call: every 16th ``log()`` is timed with
``perf_counter_ns`` (the clock's own cost, calibrated in the same process, is
taken off).  End to end: the loop plus ``close()`` (both files complete).

    .venv/bin/python benchmarks/bench_log_variants.py            # 10^6 steps, 3 rounds
    .venv/bin/python benchmarks/bench_log_variants.py --quick    # 2*10^5 steps, 3 rounds

Writes ``benchmarks/results/log_variants.json`` and ``log_variants.md``
(``--out DIR`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any

VARIANTS = ["auto", "step", "np.float32", "np.float64", "nested", "tensor"]
# The targets for log() on this 2-core machine (µs), and end to end of
# explicit steps against automatic ones.
TARGET_MEDIAN = {"tensor": 2.0}
TARGET_MEDIAN_DEFAULT = 0.6
TARGET_P99 = 3.0
TARGET_STEP_E2E_RATIO = 1.2
STRIDE = 16

pc = time.perf_counter_ns


def _rows(variant: str, n: int) -> Callable[[int], tuple[dict[str, Any], int | None]]:
    """The function that builds step i's row, as a training loop would (values made outside log())."""
    if variant in ("auto", "step"):
        explicit = variant == "step"

        def row(i: int) -> tuple[dict[str, Any], int | None]:
            v = i * 1e-3
            return {"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v}, (i if explicit else None)

        return row
    if variant.startswith("np."):
        import numpy as np

        values = np.arange(n, dtype=getattr(np, variant[3:])) * 1e-3

        def row(i: int) -> tuple[dict[str, Any], int | None]:
            v = values[i]  # a new numpy scalar, as from loss.mean()
            return {"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v}, i

        return row
    if variant == "nested":
        def row(i: int) -> tuple[dict[str, Any], int | None]:
            v = i * 1e-3
            return {"loss": {"train": v, "val": v}, "acc": v, "opt": {"lr": v, "grad_norm": v}}, i

        return row
    if variant == "tensor":
        import torch

        # Outputs of a step: 0-d tensors, made once (making one costs ~1 µs, not log()'s cost).
        tensors = [torch.tensor(0.5 + k) for k in range(5)]

        def row(i: int) -> tuple[dict[str, Any], int | None]:
            a, b, c, d, e = tensors
            return {"loss": a, "acc": b, "lr": c, "grad_norm": d, "throughput": e}, i

        return row
    raise SystemExit(f"unknown variant {variant}")


def _calibrate() -> float:
    """The median cost of two back-to-back clock reads, in ns."""
    samples = []
    for _ in range(20_000):
        t0 = pc()
        t1 = pc()
        samples.append(t1 - t0)
    samples.sort()
    return float(samples[len(samples) // 2])


def child(variant: str, logger: str, n: int) -> dict[str, Any]:
    make = _rows(variant, n)
    rows = [make(i) for i in range(min(n, 4096))]  # for the timed calls only
    clock = _calibrate()
    folder = tempfile.mkdtemp(prefix="tt-variants-")
    if logger == "test_tube":
        import test_tube

        exp = test_tube.Experiment(save_dir=folder, name="bench", record_git=False)
        log: Callable[..., None] = exp.log
        close = exp.close
    else:
        queue: deque[Any] = deque()
        time_ns = time.time_ns

        def log(row: dict[str, Any], step: int | None = None) -> None:
            queue.append((time_ns(), step, row.copy()))

        def close() -> None:
            queue.clear()

    lat: list[int] = []
    timed = lat.append
    start = pc()
    for i in range(n):
        if i % STRIDE:
            row, step = make(i)
            log(row, step)
        else:
            row, step = rows[(i // STRIDE) % len(rows)]
            if step is not None:
                step = i
            t0 = pc()
            log(row, step)
            t1 = pc()
            timed(t1 - t0)
    loop_ns = pc() - start
    t = pc()
    close()
    close_ns = pc() - t
    if logger == "test_tube":
        import test_tube

        table = test_tube.read(exp.log_dir)
        assert table.num_rows == n, (table.num_rows, n)
        assert table.column("step")[-1].as_py() == n - 1
    lat_us = sorted(max(0.0, x - clock) / 1e3 for x in lat)
    return {
        "variant": variant, "logger": logger, "n": n,
        "median_us": lat_us[len(lat_us) // 2],
        "p99_us": lat_us[min(len(lat_us) - 1, round(0.99 * (len(lat_us) - 1)))],
        "loop_us_per_step": loop_ns / 1e3 / n,
        "close_us_per_step": close_ns / 1e3 / n,
        "e2e_us_per_step": (loop_ns + close_ns) / 1e3 / n,
    }


def _run_child(variant: str, logger: str, n: int, baseline: str | None = None) -> dict[str, Any]:
    """One fresh process; ``logger="baseline"`` is test_tube imported from the ``baseline`` source tree."""
    env = dict(os.environ)
    if logger == "baseline":
        env["PYTHONPATH"] = str(baseline)
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--logger", "test_tube" if logger == "baseline" else logger,
         "--n", str(n)],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"{variant}/{logger} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    result["logger"] = logger
    return result


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2*10^5 steps instead of 10^6")
    ap.add_argument("--n", type=int, default=None, help="steps per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--baseline", metavar="SRC",
                    help="also time test_tube imported from SRC (another checkout's src/) in the same rounds")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--logger", default="test_tube", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.n or (200_000 if args.quick else 1_000_000)
    if args.child:
        print(json.dumps(child(args.child, args.logger, n)))
        return 0

    variants = args.variants.split(",")
    runs: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for variant in order:
            loggers = ["test_tube", "deque", *(["baseline"] if args.baseline else [])]
            for logger in loggers[::-1] if r % 2 else loggers:
                result = _run_child(variant, logger, n, args.baseline)
                result["round"] = r
                runs.append(result)
                print(f"round {r + 1}/{args.rounds} {variant:10s} {logger:9s} median {result['median_us']:.3f} µs"
                      f"  p99 {result['p99_us']:.3f} µs  e2e {result['e2e_us_per_step']:.3f} µs/step",
                      file=sys.stderr)

    def pick(variant: str, logger: str, key: str) -> list[float]:
        return [x[key] for x in runs if x["variant"] == variant and x["logger"] == logger]

    summary: dict[str, dict[str, float]] = {}
    for variant in variants:
        tt = {x["round"]: x for x in runs if x["variant"] == variant and x["logger"] == "test_tube"}
        floor = {x["round"]: x for x in runs if x["variant"] == variant and x["logger"] == "deque"}
        summary[variant] = {
            "median_us": _median(pick(variant, "test_tube", "median_us")),
            "p99_us": _median(pick(variant, "test_tube", "p99_us")),
            "floor_median_us": _median(pick(variant, "deque", "median_us")),
            "x_floor": _median([tt[r]["median_us"] / floor[r]["median_us"] for r in tt]),
            "e2e_us_per_step": _median(pick(variant, "test_tube", "e2e_us_per_step")),
            "floor_e2e_us_per_step": _median(pick(variant, "deque", "e2e_us_per_step")),
            "close_us_per_step": _median(pick(variant, "test_tube", "close_us_per_step")),
        }
        if args.baseline:
            base = {x["round"]: x for x in runs if x["variant"] == variant and x["logger"] == "baseline"}
            summary[variant]["baseline_median_us"] = _median(pick(variant, "baseline", "median_us"))
            summary[variant]["baseline_x_floor"] = _median([base[r]["median_us"] / floor[r]["median_us"] for r in base])
    if "auto" in summary:
        auto = {x["round"]: x for x in runs if x["variant"] == "auto" and x["logger"] == "test_tube"}
        for variant in variants:
            mine = {x["round"]: x for x in runs if x["variant"] == variant and x["logger"] == "test_tube"}
            summary[variant]["e2e_x_auto"] = _median(
                [mine[r]["e2e_us_per_step"] / auto[r]["e2e_us_per_step"] for r in mine])

    lines = [
        f"log() variants, {n:,} steps of 5 values, {args.rounds} rounds, {started}, "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores",
        "",
        "| variant | log() median µs | target | p99 µs | target | deque floor µs | × floor "
        "| end to end µs/step | × auto | floor end to end µs/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        s = summary[variant]
        target = TARGET_MEDIAN.get(variant, TARGET_MEDIAN_DEFAULT)
        ratio_target = f" (≤ {TARGET_STEP_E2E_RATIO})" if variant == "step" else ""
        lines.append(
            f"| {variant} | {s['median_us']:.2f} | ≤ {target} | {s['p99_us']:.2f} | ≤ {TARGET_P99} "
            f"| {s['floor_median_us']:.2f} | {s['x_floor']:.2f}× | {s['e2e_us_per_step']:.2f} "
            f"| {s.get('e2e_x_auto', float('nan')):.2f}×{ratio_target} | {s['floor_e2e_us_per_step']:.2f} |"
        )
    if args.baseline:
        lines += ["", f"Baseline (test_tube from {args.baseline}) in the same rounds:", "",
                  "| variant | log() median µs, now | × floor, now | before | × floor, before |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {v} | {summary[v]['median_us']:.3f} | {summary[v]['x_floor']:.2f}× "
                  f"| {summary[v]['baseline_median_us']:.3f} | {summary[v]['baseline_x_floor']:.2f}× |" for v in variants]
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "log_variants.json"), "w", encoding="utf-8") as f:
        json.dump({"started": started, "n": n, "rounds": args.rounds, "command": " ".join(sys.argv),
                   "summary": summary, "runs": runs}, f, indent=1)
    with open(os.path.join(args.out, "log_variants.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
