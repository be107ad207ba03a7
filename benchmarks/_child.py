"""One benchmark run in a fresh process (started by run.py; not meant to be run by hand).

    python _child.py run   --peer KEY --workload NAME --dir DIR --out FILE --params JSON
    python _child.py count --peer KEY --dir DIR --out FILE
    python _child.py probe --peer KEY

`run` imports the peer, opens it on DIR, runs one workload and writes its
figures as JSON to FILE.  `count` reads back what landed on disk.  `probe`
imports the peer's module and prints its version.

Timing: the loop is timed as a whole with perf_counter_ns.  Inside it one call
in every `stride` is timed on its own (t0 = pc(); log(row); t1 = pc()) to give
the latency sample; the row is built before t0, so the sample is the log() call
alone.  The cost a timed call adds to the loop (two clock reads and a list
append) is measured in this process beforehand and subtracted from the loop
time, and the cost of one clock read is subtracted from each sample.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402

pc = time.perf_counter_ns
_KEEP_ALIVE = None


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def calibrate_timer() -> tuple[float, float]:
    """(cost of one clock read, extra loop cost of one timed sample), in ns."""
    lat: list[int] = []
    ap = lat.append
    k = 20000
    for _ in range(3):  # warm
        lat.clear()
        start = pc()
        for _ in range(k):
            t0 = pc()
            t1 = pc()
            ap(t1 - t0)
        total = pc() - start
    plain_start = pc()
    for _ in range(k):
        pass
    plain = pc() - plain_start
    lat.sort()
    return float(lat[len(lat) // 2]), max(0.0, (total - plain) / k)


def _pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


# --------------------------------------------------------------------------- loops

def loop_scalars(log, n: int, stride: int, cap_ns: int, lat: list) -> tuple[int, int, int]:
    """Returns (steps done, loop ns, samples)."""
    ap = lat.append
    start = pc()
    deadline = start + cap_ns
    done = 0
    for c in range(n // stride):
        base = c * stride
        for i in range(base, base + stride - 1):
            v = i * 1e-3
            log({"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v})
        v = (base + stride - 1) * 1e-3
        row = {"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v}
        t0 = pc()
        log(row)
        t1 = pc()
        ap(t1 - t0)
        done = base + stride
        if t1 > deadline:
            break
    else:
        for i in range(done, n):  # the tail after the last full stride
            v = i * 1e-3
            log({"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v})
        done = n
    return done, pc() - start, len(lat)


def loop_sparse(log, n: int, stride: int, cap_ns: int, lat: list) -> tuple[int, int, int]:
    ap = lat.append
    start = pc()
    deadline = start + cap_ns
    done = 0
    for c in range(n // stride):
        base = c * stride
        for i in range(base, base + stride - 1):
            if i & 1:
                log({"val_loss": i * 1e-3, "epoch": i >> 1})
            else:
                log({"tng_loss": i * 1e-3})
        i = base + stride - 1
        row = {"val_loss": i * 1e-3, "epoch": i >> 1} if i & 1 else {"tng_loss": i * 1e-3}
        t0 = pc()
        log(row)
        t1 = pc()
        ap(t1 - t0)
        done = base + stride
        if t1 > deadline:
            break
    else:
        for i in range(done, n):
            if i & 1:
                log({"val_loss": i * 1e-3, "epoch": i >> 1})
            else:
                log({"tng_loss": i * 1e-3})
        done = n
    return done, pc() - start, len(lat)


def make_images(n: int):
    import numpy as np
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    base = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.int16)

    def image(i: int):
        noise = rng.integers(0, 24, size=(256, 256, 3), dtype=np.int16)
        return ((base + noise + i) % 256).astype(np.uint8)
    return [image(i) for i in range(n)]


def matmul_step(reps: int, step_ms: float | None = None):
    """A training step of ``reps`` 256x256 matmuls, or as many as take ``step_ms``."""
    import numpy as np
    rng = np.random.default_rng(1)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    b = rng.standard_normal((256, 256)).astype(np.float32)
    c = np.empty((256, 256), np.float32)
    mm = np.matmul
    if step_ms is not None:
        for _ in range(50):
            mm(a, b, out=c)
        t = pc()
        for _ in range(200):
            mm(a, b, out=c)
        reps = max(1, round(step_ms * 1e6 / ((pc() - t) / 200)))

    def step() -> None:
        for _ in range(reps):
            mm(a, b, out=c)
    return step


def timed_steps(step, m: int) -> int:
    start = pc()
    for _ in range(m):
        step()
    return pc() - start


# --------------------------------------------------------------------------- workloads

def run(args: argparse.Namespace) -> dict:
    p = json.loads(args.params)
    d = Path(args.dir)
    peer = peers.PEERS[args.peer]
    res: dict = {"peer": args.peer, "workload": args.workload, "params": p}
    timer_ns, sample_ns = calibrate_timer()
    res["timer_ns"], res["sample_overhead_ns"] = timer_ns, sample_ns

    # Workload inputs are made before the logger is imported or opened.
    wl = args.workload
    if p.get("blas_threads"):
        # Read by the BLAS library when numpy first loads it, which is below.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(p["blas_threads"])
    images = make_images(p["n"]) if wl == "images" else None
    if wl.startswith("imgstep"):
        images = make_images(max(1, p["m"] // p["every"] + 1))
    step = (matmul_step(p.get("reps", 1), p.get("step_ms"))
            if wl in ("train", "exit") or wl.startswith("imgstep") else None)
    if step is not None:
        timed_steps(step, 200)  # warm the BLAS kernels and caches

    t = pc()
    importlib.import_module(peer.module)
    res["import_s"] = (pc() - t) / 1e9
    t = pc()
    ad = peers.make_adapter(args.peer, d, p)
    res["setup_s"] = (pc() - t) / 1e9
    if getattr(ad, "log_dir", None):
        (d / "_bench_info.json").write_text(json.dumps({"log_dir": ad.log_dir}))
    res["flush_interval_used"] = getattr(ad, "flush_interval_used", None)
    res["rss_before_mb"] = _current_rss_mb()
    cpu0 = _cpu_s()
    cap_ns = int(p.get("cap_s", 1e9) * 1e9)

    if wl in ("scalars", "sparse"):
        lat: list[int] = []
        fn = loop_scalars if wl == "scalars" else loop_sparse
        th0, pr0 = time.thread_time(), _cpu_s()
        done, loop_ns, ns = fn(ad.log, p["n"], p["stride"], cap_ns, lat)
        th1, pr1 = time.thread_time(), _cpu_s()
        # Where the loop's time went: the calling thread's own CPU, and the CPU
        # every other thread (a writer) used meanwhile.
        res["main_thread_cpu_us_per_step"] = (th1 - th0) * 1e6 / max(done, 1)
        res["other_threads_cpu_us_per_step"] = ((pr1 - pr0) - (th1 - th0)) * 1e6 / max(done, 1)
        t = pc()
        ad.close()
        close_ns = pc() - t
        loop_ns_corr = loop_ns - ns * sample_ns
        lat_us = sorted(max(0.0, (x - timer_ns)) / 1e3 for x in lat)
        res.update(steps=done, capped=done < p["n"], loop_s=loop_ns_corr / 1e9,
                   loop_s_raw=loop_ns / 1e9, close_s=close_ns / 1e9,
                   samples=ns, lat_median_us=_pct(lat_us, 0.5), lat_p99_us=_pct(lat_us, 0.99),
                   lat_max_us=lat_us[-1] if lat_us else None,
                   e2e_us_per_step=(loop_ns_corr + close_ns) / 1e3 / max(done, 1),
                   loop_us_per_step=loop_ns_corr / 1e3 / max(done, 1))
        res["rows_logged"] = done
        res["values_logged"] = 5 * done if wl == "scalars" else done + done // 2

    elif wl == "images":
        lat = []
        log_image = ad.log_image
        start = pc()
        deadline = start + cap_ns
        done = 0
        for img in images:
            t0 = pc()
            log_image(img)
            t1 = pc()
            lat.append(t1 - t0)
            done += 1
            if t1 > deadline:
                break
        loop_ns = pc() - start
        t = pc()
        ad.close()
        close_ns = pc() - t
        lat_ms = sorted(max(0.0, x - timer_ns) / 1e6 for x in lat)
        res.update(steps=done, capped=done < p["n"], loop_s=loop_ns / 1e9, close_s=close_ns / 1e9,
                   samples=len(lat), lat_median_ms=_pct(lat_ms, 0.5), lat_p99_ms=_pct(lat_ms, 0.99),
                   to_disk_s=(loop_ns + close_ns) / 1e9,
                   e2e_ms_per_image=(loop_ns + close_ns) / 1e6 / max(done, 1),
                   images_logged=done)

    elif wl == "train" or wl.startswith("imgstep"):
        m = p["m"]
        every = p.get("every", 1)
        log = ad.log
        log_image = ad.log_image
        a1 = timed_steps(step, m)
        if wl == "train":
            start = pc()
            deadline = start + cap_ns
            done = 0
            for i in range(m):
                step()
                v = i * 1e-3
                log({"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v})
                done += 1
                if not i & 63 and pc() > deadline:
                    break
            b = pc() - start
            res["rows_logged"] = done
            res["values_logged"] = 5 * done
        else:
            # The first image imports the encoder library (imageio, Pillow's
            # plugins): a one-time cost, paid with the GIL held, that the loop
            # shares.  After a window of two images, blocks that log an image
            # every `every` steps alternate with quiet blocks that log nothing,
            # in the same loop with the logger open: each pair is compared on
            # its own, so the machine's drift (the baseline segments before and
            # after the loop differ by up to a few %) cancels out.  A quiet block
            # is timed from its `settle`-th step: the image before it may still
            # be encoding.
            block = p.get("block", 200)
            settle = block // 10
            warm_at = 2 * every
            it = iter(images)

            def steps(n: int, log_every: int) -> int:
                t0 = pc()
                for j in range(n):
                    step()
                    if log_every and j % log_every == 0:
                        log_image(next(it))
                return pc() - t0

            start = pc()
            deadline = start + cap_ns
            warm_ns = steps(warm_at, every)
            logged, done = len(range(0, warm_at, every)), warm_at
            busy: list[int] = []
            quiet: list[int] = []
            while done + block <= m and pc() < deadline:
                if len(busy) == len(quiet):
                    busy.append(steps(block, every))
                    logged += len(range(0, block, every))
                else:
                    steps(settle, 0)
                    quiet.append(steps(block - settle, 0))
                done += block
            b = pc() - start
            res["images_logged"] = logged
            pairs = sorted((x / block) / (q / (block - settle)) for x, q in zip(busy, quiet))
            if pairs:
                busy_step = sum(busy) / (len(busy) * block)
                quiet_step = sum(quiet) / (len(quiet) * (block - settle))
                res.update(steady_slowdown_pct=100.0 * (statistics.median(pairs) - 1.0),
                           steady_pairs=len(pairs),
                           image_steps_slowdown_pct=100.0 * (
                               (warm_ns + sum(busy)) / (warm_at + len(busy) * block) / quiet_step - 1.0),
                           first_images_extra_ms=(warm_ns - warm_at * busy_step) / 1e6)
        t = pc()
        ad.close()
        close_ns = pc() - t
        a2 = timed_steps(step, m)
        base = (a1 + a2) / (2 * m)
        per = b / max(done, 1)
        res.update(steps=done, capped=done < m, base_step_ms=base / 1e6, logged_step_ms=per / 1e6,
                   loop_s=b / 1e9, close_s=close_ns / 1e9,
                   baseline_drift_pct=100.0 * (a2 - a1) / a1,
                   slowdown_pct=100.0 * (per / base - 1.0),
                   slowdown_incl_close_pct=100.0 * ((b + close_ns) / max(done, 1) / base - 1.0))

    elif wl == "exit":
        n = p["n"]
        log = ad.log
        stamps = []
        ap = stamps.append
        start = pc()
        deadline = start + cap_ns
        done = 0
        for i in range(n):
            step()
            v = i * 1e-3
            log({"loss": v, "acc": v, "lr": v, "grad_norm": v, "throughput": v})
            ap(pc())
            done += 1
            if pc() > deadline:
                break
        end = pc()
        res.update(steps=done, capped=done < n, loop_s=(end - start) / 1e9, mode=p["mode"],
                   rows_logged=done,
                   step_end_s=[(s - start) / 1e9 for s in stamps])
        res["cpu_s"] = _cpu_s() - cpu0
        res["peak_rss_mb"] = _rss_mb()
        # Hand the figures over before the exit under test, with one write.
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, json.dumps(res).encode())
        os.close(fd)
        if p["mode"] == "os_exit":
            os._exit(0)
        global _KEEP_ALIVE  # like a script's module-level logger: alive until exit
        _KEEP_ALIVE = ad
        return {}  # end of script without close(): the peer's exit hooks run now
    else:
        raise SystemExit(f"unknown workload {wl}")

    res["cpu_s"] = _cpu_s() - cpu0
    res["peak_rss_mb"] = _rss_mb()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["run", "count", "probe"])
    ap.add_argument("--peer", required=True)
    ap.add_argument("--workload")
    ap.add_argument("--dir")
    ap.add_argument("--out")
    ap.add_argument("--params", default="{}")
    args = ap.parse_args()
    if args.cmd == "probe":
        peer = peers.PEERS[args.peer]
        mod = importlib.import_module(peer.module)
        ver = getattr(mod, "__version__", None)
        if not isinstance(ver, str):  # aim.__version__ is a module
            ver = getattr(ver, "__version__", None)
        if peer.key == "test_tube":
            getattr(mod, "Experiment")  # AttributeError -> skipped
            import importlib.metadata as md
            ver = md.version("test-tube")
        print(json.dumps({"version": ver, "python": sys.version.split()[0]}))
        return 0
    if args.cmd == "count":
        counts = peers.count(args.peer, Path(args.dir))
        Path(args.out).write_text(json.dumps(counts))
        return 0
    res = run(args)
    if res:
        Path(args.out).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
