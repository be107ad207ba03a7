"""Benchmark harness: test_tube against its peers and two floors.

    .venv/bin/python benchmarks/run.py --quick     # test_tube + floors, < 2 min
    .venv/bin/python benchmarks/run.py             # full comparison, all peers, < 30 min

Every (peer, workload) run is a fresh child process (``_child.py``) in the
peer's own virtual environment, writing to a fresh folder under /tmp that is
deleted afterwards.  A round runs each workload on every peer, in an order
rotated by one place each round, so machine drift hits all peers alike.
Figures are medians over rounds; ratios are taken within a round (peer and
reference measured minutes apart, not an hour apart), then the median is taken.

See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers as P  # noqa: E402

CHILD = HERE / "_child.py"
RESULTS = HERE / "results"

# Which keys count as "one row" for each workload (see peers.count).
ROW_KEYS = {
    "scalars": ["loss"], "train": ["loss"], "exit_end": ["loss"], "exit_os": ["loss"],
    "sparse": ["tng_loss", "val_loss"],
}
VALUE_KEYS = {
    "scalars": ["loss", "acc", "lr", "grad_norm", "throughput"],
    "sparse": ["tng_loss", "val_loss", "epoch"],
}
VALUE_KEYS["train"] = VALUE_KEYS["exit_end"] = VALUE_KEYS["exit_os"] = VALUE_KEYS["scalars"]

# Reported against, never asserted.
TARGETS = {
    "e2e_us_1e6": 1.5,          # issue 2: end to end per step at 10^6 steps
    "vs_deque_floor": 2.0,      # issue 7: <= 2x the deque floor
    "vs_fastest_peer": 5.0,     # issue 7: >= 5x faster than the fastest peer
    "vs_summarywriter": 100.0,  # issue 7: >= 100x faster than torch's SummaryWriter
    "train_slowdown_pct": 1.0,  # issue 7
    "image_call_ms": 0.3,       # issue 3: calling-thread time per image
    "imgstep_slowdown_pct": 2.0,  # issue 3: 1 ms step, one image every 50 steps
    "exit_rows_pct": 100.0,     # issue 7
}


# --------------------------------------------------------------------------- plans

def plan(mode: str) -> dict:
    """Workload parameters per mode.  Every loop is also capped in time."""
    if mode == "tiny":
        return dict(rounds=1, peers=["noop", "deque", "test_tube", "imageio_sync"],
                    scalars_n=[400], big_n=None, flat_n=[], sparse_n=400, images_n=4,
                    train_m=100, imgstep_m=150, imgstep_block=20, exit_n=100, cap_s=10, flush_interval=0.05)
    if mode == "quick":
        return dict(rounds=3, peers=["noop", "deque", "test_tube", "imageio_sync"],
                    scalars_n=[20_000], big_n=1_000_000, flat_n=[1_000, 10_000, 100_000],
                    sparse_n=20_000, images_n=200, train_m=1_500, imgstep_m=2_000, imgstep_block=200,
                    exit_n=2_000, cap_s=15, flush_interval=0.2)
    return dict(rounds=3, peers=list(P.PEERS), scalars_n=[20_000], big_n=1_000_000,
                flat_n=[1_000, 10_000, 100_000], sparse_n=20_000, images_n=200,
                train_m=2_000, imgstep_m=3_000, imgstep_block=200, exit_n=2_000, cap_s=10, flush_interval=0.2)


def stride_for(n: int) -> int:
    """One call in `stride` is timed on its own: about 10,000 samples, at most 1 call in 11.

    The stride is prime so the sample does not alias with a peer's own period
    (Lightning's CSVLogger writes every 100 steps: a stride of 100 would time
    only its writes)."""
    s = max(11, n // 10_000)
    while any(s % d == 0 for d in range(2, int(s ** 0.5) + 1)):
        s += 1
    return s


# --------------------------------------------------------------------------- processes

def _become_subreaper() -> bool:
    """Orphaned helpers (W&B's wandb-core, ...) are re-parented to us, so we can
    count their CPU time and make sure none outlives its run."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children() -> list[int]:
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == me and fields[0] != "Z":
            out.append(int(entry))
    return out


def _reap_helpers(linger_s: float, acc: dict) -> None:
    """Reap every leftover descendant; kill what is still alive after linger_s."""
    deadline = time.monotonic() + linger_s
    killed = False
    while True:
        while True:
            try:
                pid, _, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            acc["cpu"] += ru.ru_utime + ru.ru_stime
            acc["rss"] = max(acc["rss"], ru.ru_maxrss / 1024.0)
            acc["n"] += 1
        alive = _children()
        if not alive:
            return
        if time.monotonic() > deadline and not killed:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            acc["killed"] += len(alive)
            killed = True
            deadline = time.monotonic() + 5
        elif killed and time.monotonic() > deadline:
            return
        time.sleep(0.02)


def child_env(peer: P.Peer, d: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env.pop("PYTHONHOME", None)
    for k, v in P.CHILD_ENV.items():
        env[k] = v.replace("{dir}", str(d)).replace("{parent}", str(d.parent))
    env.update(peer.env)
    return env


def spawn(peer: P.Peer, argv: list[str], d: Path, timeout: float, log_path: Path) -> dict:
    """Run one child to completion; return rc, rusage and how long it took."""
    py = str(P.python_for(peer))
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([py, str(CHILD), *argv], cwd=str(d), env=child_env(peer, d),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    rc, ru, timed_out = None, None, False
    while True:
        pid, status, ru_ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            rc, ru = os.waitstatus_to_exitcode(status), ru_
            break
        if time.monotonic() - t0 > timeout:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status, ru = os.wait4(proc.pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.01)
    proc.returncode = rc  # we reaped it ourselves
    wall = time.monotonic() - t0
    helpers = {"cpu": 0.0, "rss": 0.0, "n": 0, "killed": 0}
    _reap_helpers(15.0, helpers)
    return {"rc": rc, "timed_out": timed_out, "wall_s": wall,
            "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mb": ru.ru_maxrss / 1024.0,
            "helpers": helpers}


def _log_tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(ln.strip()[:200] for ln in lines[-n:])


def run_one(peer_key: str, workload: str, params: dict, rnd: int, logs: Path,
            keep: bool) -> dict:
    peer = P.PEERS[peer_key]
    d = Path(tempfile.mkdtemp(prefix=f"ttbench-{peer_key}-{workload}-"))
    out = d.parent / (d.name + ".result.json")
    counts_out = d.parent / (d.name + ".counts.json")
    log_path = logs / f"{peer_key}.{workload}.r{rnd}.log"
    child_wl = "exit" if workload.startswith("exit") else workload
    timeout = params.get("cap_s", 60) * 3 + 240
    rec: dict = {"peer": peer_key, "workload": workload, "round": rnd, "n": params.get("n")}
    try:
        pr = spawn(peer, ["run", "--peer", peer_key, "--workload", child_wl, "--dir", str(d),
                          "--out", str(out), "--params", json.dumps(params)],
                   d, timeout, log_path)
        rec["process"] = pr
        if not out.exists():
            why = "timed out" if pr["timed_out"] else f"exit code {pr['rc']}"
            rec.update(ok=False, error=f"{why}: {_log_tail(log_path, 1)}")
            return rec
        child = json.loads(out.read_text())
        child["child_workload"] = child.pop("workload", None)
        rec.update(child)
        rec["workload"], rec["peer"] = workload, peer_key
        rec["ok"] = True
        stamps = rec.pop("step_end_s", None)  # 2,000 floats per run: summarised, not stored
        fi = rec.get("flush_interval_used")
        if stamps and fi:
            rec["rows_logged_before_last_interval"] = sum(1 for t in stamps if t <= stamps[-1] - fi)
        rec["cpu_total_s"] = pr["cpu_s"] + pr["helpers"]["cpu"]
        rec["peak_rss_mb"] = max(rec.get("peak_rss_mb") or 0.0, pr["maxrss_mb"])
        if peer.floor and peer_key != "imageio_sync":
            return rec
        cr = spawn(peer, ["count", "--peer", peer_key, "--dir", str(d), "--out", str(counts_out)],
                   d, 300, log_path)
        if not counts_out.exists():
            rec["count_error"] = f"reader failed (exit {cr['rc']}): {_log_tail(log_path)}"
            return rec
        counts = json.loads(counts_out.read_text())
        rec["counts"] = counts
        if workload == "images" or workload.startswith("imgstep"):
            rec["images_landed"] = counts.get("sample", 0)
        else:
            rec["rows_landed"] = sum(counts.get(k, 0) for k in ROW_KEYS[workload])
            rec["values_landed"] = sum(counts.get(k, 0) for k in VALUE_KEYS[workload])
            if workload.startswith("exit"):
                rec["values_logged"] = 5 * rec["rows_logged"]
        return rec
    except Exception as e:  # one broken run must never stop the comparison
        rec.update(ok=False, error=f"harness: {e!r}")
        return rec
    finally:
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
            for f in (out, counts_out):
                f.unlink(missing_ok=True)
        else:
            rec["dir"] = str(d)


# --------------------------------------------------------------------------- probing

def probe(keys: list[str], logs: Path) -> tuple[list[str], dict, dict]:
    ok, skipped, versions = [], {}, {}
    for k in keys:
        peer = P.PEERS[k]
        why = P.group_state(peer)
        if why:
            skipped[k] = why
            continue
        d = Path(tempfile.mkdtemp(prefix=f"ttbench-probe-{k}-"))
        try:
            r = subprocess.run([str(P.python_for(peer)), str(CHILD), "probe", "--peer", k],
                               cwd=str(d), env=child_env(peer, d), capture_output=True,
                               text=True, timeout=180)
        except subprocess.TimeoutExpired:
            skipped[k] = "import timed out after 180 s"
            continue
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if r.returncode != 0:
            last = [ln for ln in r.stderr.splitlines() if ln.strip()]
            skipped[k] = f"import failed: {last[-1][:200] if last else r.returncode}"
            continue
        info = json.loads(r.stdout.strip().splitlines()[-1])
        v = dict(P.group_versions(peer))
        v["module"] = info.get("version")
        v["python"] = info.get("python")
        versions[k] = v
        ok.append(k)
    return ok, skipped, versions


# --------------------------------------------------------------------------- summary

def _median(xs):
    xs = [x for x in xs if isinstance(x, (int, float)) and x == x]
    return statistics.median(xs) if xs else None


SUMMARY_FIELDS = [
    "lat_median_us", "lat_p99_us", "loop_s", "close_s", "e2e_us_per_step", "loop_us_per_step",
    "cpu_s", "cpu_total_s", "peak_rss_mb", "rss_before_mb", "rows_logged", "rows_landed",
    "values_logged", "values_landed", "steps", "import_s", "setup_s",
    "lat_median_ms", "lat_p99_ms", "to_disk_s", "e2e_ms_per_image", "images_logged",
    "images_landed", "slowdown_pct", "slowdown_incl_close_pct", "base_step_ms",
    "logged_step_ms", "baseline_drift_pct", "main_thread_cpu_us_per_step",
    "other_threads_cpu_us_per_step", "steady_slowdown_pct", "steady_pairs", "image_steps_slowdown_pct",
    "first_images_extra_ms",
]


def variant(rec: dict) -> str:
    if rec["workload"] == "scalars":
        return f"scalars@{rec['n']}"
    return rec["workload"]


def summarize(runs: list[dict]) -> dict:
    """Medians over rounds, plus within-round ratios against test_tube and the deque floor."""
    by: dict = {}
    for r in runs:
        by.setdefault(variant(r), {}).setdefault(r["peer"], []).append(r)
    out: dict = {}
    for var, per_peer in by.items():
        ref_metric = "e2e_ms_per_image" if var == "images" else "e2e_us_per_step"
        idx = {(p, r["round"]): r for p, rs in per_peer.items() for r in rs if r.get("ok")}
        out[var] = {}
        for peer, rs in per_peer.items():
            good = [r for r in rs if r.get("ok")]
            s: dict = {"rounds": len(rs), "ok_rounds": len(good)}
            if not good:
                s["error"] = rs[-1].get("error", "failed")
                out[var][peer] = s
                continue
            for f in SUMMARY_FIELDS:
                m = _median([r.get(f) for r in good])
                if m is not None:
                    s[f] = m
            s["capped"] = any(r.get("capped") for r in good)
            errs = [r.get("count_error") for r in good if r.get("count_error")]
            if errs:
                s["count_error"] = errs[-1]
            if "rows_landed" in s and s.get("rows_logged"):
                s["rows_landed_pct"] = _median(
                    [100.0 * r["rows_landed"] / r["rows_logged"] for r in good
                     if r.get("rows_logged") and "rows_landed" in r])
            if "images_landed" in s and s.get("images_logged"):
                s["images_landed_pct"] = _median(
                    [100.0 * r["images_landed"] / r["images_logged"] for r in good
                     if r.get("images_logged") and "images_landed" in r])
            for ref in ("test_tube", "deque", "imageio_sync"):
                ratios = []
                for r in good:
                    other = idx.get((ref, r["round"]))
                    if other and other.get(ref_metric) and r.get(ref_metric):
                        ratios.append(r[ref_metric] / other[ref_metric])
                if ratios:
                    s[f"x_{ref}"] = _median(ratios)
            kept = [r["rows_logged_before_last_interval"] for r in good
                    if "rows_logged_before_last_interval" in r]
            if var == "exit_os" and kept:
                s["rows_logged_before_last_interval"] = _median(kept)
            s["flush_interval_used"] = good[-1].get("flush_interval_used")
            out[var][peer] = s
    return out


# --------------------------------------------------------------------------- machine

def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal"):
                mem = round(int(ln.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="test_tube benchmark harness")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="test_tube and the floors only, < 2 min")
    g.add_argument("--tiny", action="store_true", help="smallest sizes (used by the test suite)")
    ap.add_argument("--peers", help="comma-separated subset of: " + ",".join(P.PEERS))
    ap.add_argument("--rounds", type=int, help="rounds (default: 3)")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="start no new round once the estimated end passes this "
                         "(full: 27, quick: 1.8)")
    ap.add_argument("--out", help="results folder (full default: benchmarks/results; "
                                  "quick/tiny default: benchmarks/results/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep each run's folder (debugging)")
    ap.add_argument("--no-report", action="store_true", help="write JSON only")
    args = ap.parse_args(argv)

    mode = "quick" if args.quick else "tiny" if args.tiny else "full"
    cfg = plan(mode)
    if args.rounds:
        cfg["rounds"] = args.rounds
    keys = cfg["peers"] if not args.peers else [k.strip() for k in args.peers.split(",")]
    unknown = [k for k in keys if k not in P.PEERS]
    if unknown:
        ap.error(f"unknown peer(s) {unknown}")
    budget = args.budget_min if args.budget_min is not None else \
        {"full": 27.0, "quick": 1.8}.get(mode)
    out_dir = Path(args.out) if args.out else (RESULTS if mode == "full" else RESULTS / "tmp")
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = out_dir / "logs" if mode != "full" else RESULTS / "tmp" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _become_subreaper()
    t_start = time.monotonic()
    exe = Path(sys.executable)
    exe_s = str(exe.relative_to(HERE.parent)) if HERE.parent in exe.parents else "python"
    command = " ".join([exe_s, "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])

    print(f"[bench] mode={mode} rounds={cfg['rounds']} peers={','.join(keys)}", flush=True)
    active, skipped, versions = probe(keys, logs)
    for k, why in skipped.items():
        print(f"[bench] skipped {k}: {why}", flush=True)
    fi = cfg["flush_interval"]
    cap = cfg["cap_s"]
    runs: list[dict] = []
    big_ok: set[str] = {k for k in active if k in ("noop", "deque", "test_tube")} \
        if cfg["big_n"] else set()

    def workloads_for(k: str, rnd: int) -> list[tuple[str, dict]]:
        peer = P.PEERS[k]
        if k == "imageio_sync":
            return [("images", {"n": cfg["images_n"], "cap_s": cap})]
        wl: list[tuple[str, dict]] = []
        ns = list(cfg["scalars_n"])
        if k in ("noop", "deque", "test_tube"):
            ns = sorted(set(ns) | set(cfg["flat_n"]))
        for n in ns:
            wl.append(("scalars", {"n": n, "stride": stride_for(n), "cap_s": cap}))
        if cfg["big_n"] and k in big_ok:
            n = cfg["big_n"]
            wl.append(("scalars", {"n": n, "stride": stride_for(n), "cap_s": max(cap, 20)}))
        if peer.floor:
            return wl
        n = cfg["sparse_n"]
        wl.append(("sparse", {"n": n, "stride": stride_for(n), "cap_s": cap}))
        if peer.images:
            wl.append(("images", {"n": cfg["images_n"], "cap_s": cap}))
        wl.append(("train", {"m": cfg["train_m"], "reps": 1, "cap_s": cap}))
        if peer.images:
            wl.append(("imgstep", {"m": cfg["imgstep_m"], "reps": 3, "every": 50, "cap_s": cap,
                                   "block": cfg["imgstep_block"]}))
        if k == "test_tube":
            # The same with numpy's BLAS on one thread: the step leaves a core to the encoders.
            wl.append(("imgstep_1core", {"m": cfg["imgstep_m"], "step_ms": 1.0, "every": 50, "cap_s": cap,
                                         "blas_threads": 1, "block": cfg["imgstep_block"]}))
        for mode_ in ("end", "os_exit"):
            wl.append((f"exit_{'end' if mode_ == 'end' else 'os'}",
                       {"n": cfg["exit_n"], "reps": 1, "mode": mode_, "cap_s": cap,
                        "flush_interval": fi}))
        return wl

    round_times: list[float] = []
    for rnd in range(cfg["rounds"]):
        if budget is not None and round_times:
            elapsed = (time.monotonic() - t_start) / 60
            if elapsed + max(round_times) / 60 > budget:
                print(f"[bench] stopping after {rnd} round(s): another would pass "
                      f"the {budget:.0f}-minute budget", flush=True)
                break
        t_round = time.monotonic()
        order = active[rnd % len(active):] + active[:rnd % len(active)] if active else []
        # Workload-major: every peer runs workload W (rotated order) before W+1.
        tasks: dict[str, list[tuple[str, dict]]] = {}
        seq: list[str] = []
        for k in order:
            for wl, params in workloads_for(k, rnd):
                name = wl if wl != "scalars" else f"scalars@{params['n']}"
                if name not in tasks:
                    tasks[name] = []
                    seq.append(name)
                tasks[name].append((k, params))
        # Decide 10^6 eligibility from this round's 20k run when it comes first.
        for name in seq:
            for k, params in tasks[name]:
                wl = name.split("@")[0]
                rec = run_one(k, wl, params, rnd, logs, args.keep)
                runs.append(rec)
                status = "ok" if rec.get("ok") else f"FAILED: {rec.get('error')}"
                fig = rec.get("e2e_us_per_step") or rec.get("e2e_ms_per_image") \
                    or rec.get("slowdown_pct")
                extra = ""
                if rec.get("rows_landed") is not None:
                    extra = f" rows {rec['rows_landed']}/{rec.get('rows_logged')}"
                if rec.get("images_landed") is not None:
                    extra = f" images {rec['images_landed']}/{rec.get('images_logged')}"
                print(f"[bench] r{rnd} {name:16s} {k:14s} {status} "
                      f"{'' if fig is None else f'{fig:.4g}'}{extra}", flush=True)
                if (mode == "full" and rnd == 0 and cfg["big_n"] and name == "scalars@20000"
                        and rec.get("ok") and rec.get("e2e_us_per_step", 1e9) <= 20.0):
                    big_ok.add(k)
            if mode == "full" and rnd == 0 and name == "scalars@20000" and cfg["big_n"]:
                # Peers newly found fast enough run 10^6 in this round too.
                n = cfg["big_n"]
                extra_tasks = [(k, {"n": n, "stride": stride_for(n), "cap_s": max(cap, 20)})
                               for k in active if k in big_ok
                               and all(t[0] != k for t in tasks.get(f"scalars@{n}", []))]
                if extra_tasks:
                    if f"scalars@{n}" not in tasks:
                        tasks[f"scalars@{n}"] = []
                        seq.insert(seq.index(name) + 1, f"scalars@{n}")
                    tasks[f"scalars@{n}"].extend(extra_tasks)
        round_times.append(time.monotonic() - t_round)
        print(f"[bench] round {rnd} took {round_times[-1]:.0f} s", flush=True)

    summary = summarize(runs)
    result = {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": mode, "command": command, "rounds_run": len(round_times),
            "rounds_planned": cfg["rounds"], "config": cfg, "machine": machine_info(),
            "versions": versions, "skipped": skipped, "targets": TARGETS,
            "wall_s": time.monotonic() - t_start,
            "labels": {k: P.PEERS[k].label for k in P.PEERS},
        },
        "summary": summary,
        "runs": runs,
    }
    json_path = out_dir / ("results.json" if mode == "full" else f"{mode}.json")
    json_path.write_text(json.dumps(result, indent=1, default=str))
    print(f"[bench] wrote {json_path} in {result['meta']['wall_s']:.0f} s", flush=True)
    if not args.no_report:
        import report
        print(report.console(result))
        if mode == "full":
            md = report.markdown(result)
            (out_dir / "RESULTS.md").write_text(md)
            try:
                report.chart(result, out_dir / "chart.png")
            except Exception as e:  # matplotlib missing must not lose the JSON
                print(f"[bench] chart failed: {e!r}")
            print(f"[bench] wrote {out_dir / 'RESULTS.md'} and {out_dir / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
