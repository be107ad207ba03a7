"""Turn a results JSON into the console table, RESULTS.md and chart.png.

    .venv/bin/python benchmarks/report.py benchmarks/results/results.json

re-renders RESULTS.md and chart.png next to the JSON without re-running anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["noop", "deque", "test_tube", "csvlogger", "tb_torch", "test_tube_075", "tensorboardx",
         "wandb", "aim", "mlflow_sync", "mlflow_async", "dvclive", "imageio_sync"]


def f(x, digits: int = 3, unit: str = "") -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    a = abs(x)
    if a >= 1 and float(x).is_integer():
        s = f"{int(x):,d}"
    elif a == 0:
        s = "0"
    elif a >= 1000:
        s = f"{x:,.0f}"
    elif a >= 100:
        s = f"{x:.0f}"
    elif a >= 10:
        s = f"{x:.1f}"
    elif a >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.{digits}f}".rstrip("0").rstrip(".") if a >= 0.001 else f"{x:.1e}"
    return s + unit


def main_variant(summary: dict) -> str:
    """The scalar size every peer ran: 20,000 steps, else the smallest there is."""
    scal = sorted((v for v in summary if v.startswith("scalars@")), key=lambda v: int(v.split("@")[1]))
    return "scalars@20000" if "scalars@20000" in scal else scal[0]


def _capped_note(result: dict, var: str, peer: str) -> str:
    """' (capped: N steps)' when the median run hit its time cap, else how many rounds did."""
    runs = [r for r in result.get("runs", []) if r.get("ok") and r["peer"] == peer
            and (f"scalars@{r.get('n')}" if r["workload"] == "scalars" else r["workload"]) == var]
    capped = [r for r in runs if r.get("capped")]
    if not capped:
        return ""
    steps = result["summary"][var][peer].get("steps")
    if len(capped) * 2 > len(runs):
        return f" (capped: {f(steps)} steps)"
    return f" (capped in {len(capped)} of {len(runs)} rounds)"


def _get(summary: dict, var: str, peer: str, key: str):
    return summary.get(var, {}).get(peer, {}).get(key)


def _steady(summary: dict, peer: str) -> str:
    """The steady image-step slowdown, with that of all image steps (one-time import included) in brackets."""
    steady = _get(summary, "imgstep", peer, "steady_slowdown_pct")
    if steady is None:
        return "—"
    return f"{f(steady)} ({f(_get(summary, 'imgstep', peer, 'image_steps_slowdown_pct'))})"


def _label(result: dict, k: str) -> str:
    return result["meta"]["labels"].get(k, k)


def _peers(result: dict) -> list[str]:
    seen = {p for v in result["summary"].values() for p in v}
    return [k for k in ORDER if k in seen] + sorted(seen - set(ORDER))


def _pct_landed(summary, var, peer, kind="rows", show_cap=True) -> str:
    s = summary.get(var, {}).get(peer)
    if not s:
        return "—"
    if s.get("count_error"):
        return "read failed"
    pct = s.get(f"{kind}_landed_pct")
    landed, logged = s.get(f"{kind}_landed"), s.get(f"{kind}_logged")
    if pct is None:
        return "—"
    cap = ", capped" if show_cap and s.get("capped") else ""
    return (f"{pct:.1f} % ({f(landed)}/{f(logged)}{cap})" if pct < 99.95
            else f"100 % ({f(logged)}{cap})")


def _error(summary, var, peer) -> str | None:
    s = summary.get(var, {}).get(peer)
    if s and s.get("ok_rounds", 0) == 0:
        return "failed: " + str(s.get("error", ""))[:80]
    return None


def _versions_line(result: dict) -> str:
    v = result["meta"]["versions"]
    parts = []
    pick = {"test_tube": ("test_tube", "module"), "test_tube_075": ("test-tube", "test-tube"),
            "tb_torch": ("torch", "torch"), "tensorboardx": ("tensorboardX", "tensorboardX"),
            "csvlogger": ("lightning-fabric", "lightning-fabric"), "mlflow_sync": ("mlflow", "mlflow"),
            "wandb": ("wandb", "wandb"), "aim": ("aim", "aim"), "dvclive": ("dvclive", "dvclive")}
    for k, (name, field) in pick.items():
        if k in v and v[k].get(field):
            parts.append(f"{name} {v[k][field]}")
    py = next((x.get("python") for x in v.values() if x.get("python")), None)
    if py:
        parts.insert(0, f"Python {py}")
    return ", ".join(parts)


def _machine_line(result: dict) -> str:
    m = result["meta"]["machine"]
    return f"{m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, {m['os']}"


# --------------------------------------------------------------------------- console

def console(result: dict) -> str:
    s = result["summary"]
    meta = result["meta"]
    T = meta["targets"]
    lines = [f"\ntest_tube benchmark ({meta['mode']}), {meta['date']}, {meta['rounds_run']} round(s), "
             f"{_machine_line(result)}"]
    for k, why in meta["skipped"].items():
        lines.append(f"  skipped {k}: {why}")
    scal = sorted((v for v in s if v.startswith("scalars@")), key=lambda v: int(v.split("@")[1]))
    big = scal[-1] if scal else None
    peers = [p for p in _peers(result) if p != "imageio_sync"]

    lines.append("\nScalars, 5 floats per step (medians over rounds)")
    hdr = f"  {'logger':30s} {'N':>9s} {'log() med µs':>12s} {'p99 µs':>8s} {'e2e µs/step':>11s} " \
          f"{'loop µs':>8s} {'×deque':>7s} {'close s':>8s} {'CPU s':>7s} {'RSS MB':>7s}  rows landed"
    lines.append(hdr)
    for p in peers:
        for v in scal:
            x = s[v].get(p)
            if not x:
                continue
            if x.get("ok_rounds", 0) == 0:
                lines.append(f"  {_label(result, p):30s} {v.split('@')[1]:>9s} {_error(s, v, p)}")
                continue
            lines.append(
                f"  {_label(result, p):30s} {int(v.split('@')[1]):>9,d} {f(x.get('lat_median_us')):>12s} "
                f"{f(x.get('lat_p99_us')):>8s} {f(x.get('e2e_us_per_step')):>11s} "
                f"{f(x.get('loop_us_per_step')):>8s} {f(x.get('x_deque')):>7s} {f(x.get('close_s')):>8s} {f(x.get('cpu_s')):>7s} "
                f"{f(x.get('peak_rss_mb')):>7s}  {_pct_landed(s, v, p)}")

    tt = "test_tube"
    if any(tt in s.get(v, {}) for v in s):
        lines.append("\nTargets for test_tube (reported, not asserted)")

        def row(name, val, target):
            lines.append(f"  {name:58s} {val:>22s}   {target}")

        if big:
            n = int(big.split("@")[1])
            row(f"log() median / p99 at {n:,} steps", f"{f(_get(s, big, tt, 'lat_median_us'))} / "
                f"{f(_get(s, big, tt, 'lat_p99_us'))} µs", "")
            row(f"end to end µs/step at {n:,} steps", f(_get(s, big, tt, 'e2e_us_per_step'), unit=" µs"),
                f"≤ {T['e2e_us_1e6']} µs (issue 2)")
            row(f"  of which loop / close (per step, {n:,})",
                f"{f(_get(s, big, tt, 'loop_us_per_step'))} / "
                f"{f((_get(s, big, tt, 'close_s') or 0) / n * 1e6)} µs", "")
            row("  loop: calling-thread CPU / other threads' CPU per step",
                f"{f(_get(s, big, tt, 'main_thread_cpu_us_per_step'))} / "
                f"{f(_get(s, big, tt, 'other_threads_cpu_us_per_step'))} µs", "")
            row(f"  × deque floor (within-round ratio, {n:,})", f(_get(s, big, tt, 'x_deque'), unit="×"),
                f"≤ {T['vs_deque_floor']}× (issue 7)")
            row(f"  (floors: no-op / deque at {n:,})",
                f"{f(_get(s, big, 'noop', 'e2e_us_per_step'))} / {f(_get(s, big, 'deque', 'e2e_us_per_step'))} µs", "")
            row("per-step µs at " + " / ".join(f"{int(v.split('@')[1]):.0e}".replace("+0", "")
                                               for v in scal),
                " / ".join(f(_get(s, v, tt, 'e2e_us_per_step')) for v in scal), "flat (issue 2)")
            row(f"peak RSS at {n:,} steps (before loop)",
                f"{f(_get(s, big, tt, 'peak_rss_mb'))} ({f(_get(s, big, tt, 'rss_before_mb'))}) MB", "")
            row(f"rows landed at {n:,}", _pct_landed(s, big, tt), "100 %")
        if "sparse" in s:
            row("sparse keys: e2e µs/step; rows landed",
                f"{f(_get(s, 'sparse', tt, 'e2e_us_per_step'))}; {_pct_landed(s, 'sparse', tt)}", "")
        row("training-loop slowdown (0.3 ms matmul step)",
            _error(s, "train", tt) or f(_get(s, "train", tt, "slowdown_pct"), unit=" %")
            + f" (incl. close {f(_get(s, 'train', tt, 'slowdown_incl_close_pct'))} %)",
            f"≤ {T['train_slowdown_pct']} % (issue 7)")
        img_err = _error(s, "images", tt)
        if img_err or _get(s, "images", tt, "images_landed") in (None, 0):
            row("image: calling-thread ms/image", "pending" + (f" ({img_err[:60]})" if img_err else ""),
                f"≤ {T['image_call_ms']} ms (issue 3)")
        else:
            row("image: calling-thread ms/image median / p99",
                f"{f(_get(s, 'images', tt, 'lat_median_ms'))} / {f(_get(s, 'images', tt, 'lat_p99_ms'))} ms",
                f"≤ {T['image_call_ms']} ms (issue 3)")
            row("image: 200 on disk (s) vs synchronous imageio loop",
                f"{f(_get(s, 'images', tt, 'to_disk_s'))} vs {f(_get(s, 'images', 'imageio_sync', 'to_disk_s'))} s",
                f"ratio {f(_get(s, 'images', tt, 'x_imageio_sync'))}×")
            row("image: landed", _pct_landed(s, "images", tt, "images"), "100 %")
        for var, name in (("imgstep", "image step slowdown (1 ms step, 1 image / 50 steps)"),
                          ("imgstep_1core", "  the same, numpy's BLAS on one thread")):
            if var == "imgstep_1core" and not s.get(var, {}).get(tt):
                continue
            err = _error(s, var, tt)
            if err or _get(s, var, tt, "steady_slowdown_pct") is None:
                row(name, "pending" + (f" ({err[:60]})" if err else ""),
                    f"≤ {T['imgstep_slowdown_pct']} % (issue 3)")
                continue
            row(name + ", steady", f(_get(s, var, tt, "steady_slowdown_pct"), unit=" %"),
                f"≤ {T['imgstep_slowdown_pct']} % (issue 3)")
            row("    with the first images' one-time import; that import",
                f"{f(_get(s, var, tt, 'image_steps_slowdown_pct'))} %; "
                f"{f(_get(s, var, tt, 'first_images_extra_ms'))} ms", "")
        row("exit without close(): rows kept", _pct_landed(s, "exit_end", tt), "100 % (issue 7)")
        fi = _get(s, "exit_os", tt, "flush_interval_used")
        lb = _get(s, "exit_os", tt, "rows_logged_before_last_interval")
        row(f"os._exit after loop: rows kept (flush_interval={fi})", _pct_landed(s, "exit_os", tt),
            f"≥ {f(lb)} rows logged ≥ 1 interval before exit" if lb is not None
            else "everything up to the last flush")
        if meta["mode"] == "full":
            e2e = "scalars@20000"
            ratios = [(_get(s, e2e, p, "x_test_tube"), p) for p in s.get(e2e, {})
                      if p not in ("noop", "deque", tt) and _get(s, e2e, p, "x_test_tube")]
            if ratios:
                r, p = min(ratios)
                row(f"fastest peer at 20,000 steps ({_label(result, p)})", f(r, unit="× slower"),
                    f"≥ {T['vs_fastest_peer']}× (issue 7)")
            sw = _get(s, e2e, "tb_torch", "x_test_tube")
            row("torch SummaryWriter at 20,000 steps", f(sw, unit="× slower"),
                f"≥ {T['vs_summarywriter']}× (issue 7)")
    lines.append(f"\n  wall time {meta['wall_s']:.0f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown

def markdown(result: dict) -> str:
    s = result["summary"]
    meta = result["meta"]
    peers = _peers(result)
    out = [
        "# Benchmark results",
        "",
        f"- Date: {meta['date']}; {meta['rounds_run']} round(s) of interleaved runs, "
        f"each in a fresh process; figures are medians over rounds, ratios are taken within a round.",
        f"- Machine: {_machine_line(result)}",
        f"- Versions: {_versions_line(result)}",
        f"- Command: `{meta['command'].strip()}` (peers installed with `.venv/bin/python benchmarks/setup_peers.py`)",
        f"- Wall time: {meta['wall_s'] / 60:.1f} min. Raw figures: `results.json`. Chart: `chart.png`.",
        "",
    ]
    if meta["skipped"]:
        out.append("Skipped: " + "; ".join(f"{_label(result, k)} ({why})" for k, why in meta["skipped"].items()))
        out.append("")
    v20 = main_variant(s)
    big = f"scalars@{meta['config'].get('big_n')}"
    cap = meta["config"].get("cap_s")
    out += [
        f"## Scalars: 5 floats per step, {int(v20.split('@')[1]):,} steps (each loop capped at {cap} s)",
        "",
        "| logger | log() median µs | log() p99 µs | end to end µs/step | × test_tube | × deque floor "
        "| µs/step at 10^6 | close s | CPU s (loop+close) | CPU s (whole process) | peak RSS MB | rows landed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in peers:
        x = s.get(v20, {}).get(p)
        if not x:
            continue
        if x.get("ok_rounds", 0) == 0:
            out.append(f"| {_label(result, p)} | {_error(s, v20, p)} ||||||||||| ")
            continue
        cap_note = _capped_note(result, v20, p)
        rows = "in memory" if p in ("noop", "deque") else _pct_landed(s, v20, p, show_cap=False)
        out.append(
            f"| {_label(result, p)}{cap_note} | {f(x.get('lat_median_us'))} | {f(x.get('lat_p99_us'))} "
            f"| **{f(x.get('e2e_us_per_step'))}** | {f(x.get('x_test_tube'), unit='×')} "
            f"| {f(x.get('x_deque'), unit='×')} | {f(_get(s, big, p, 'e2e_us_per_step'))} "
            f"| {f(x.get('close_s'))} | {f(x.get('cpu_s'))} | {f(x.get('cpu_total_s'))} "
            f"| {f(x.get('peak_rss_mb'))} | {rows} |")
    out += [
        "",
        "## Training loop, sparse keys and exit",
        "",
        "| logger | training-loop slowdown % | sparse keys µs/step | sparse rows landed "
        "| rows kept, end of script without close() | rows kept, os._exit after loop |",
        "|---|---:|---:|---|---|---|",
    ]
    for p in peers:
        if p in ("noop", "deque", "imageio_sync"):
            continue
        out.append(
            f"| {_label(result, p)} | {_error(s, 'train', p) or f(_get(s, 'train', p, 'slowdown_pct'))} "
            f"| {_error(s, 'sparse', p) or f(_get(s, 'sparse', p, 'e2e_us_per_step'))} "
            f"| {_pct_landed(s, 'sparse', p)} | {_error(s, 'exit_end', p) or _pct_landed(s, 'exit_end', p)} "
            f"| {_error(s, 'exit_os', p) or _pct_landed(s, 'exit_os', p)} |")
    out += [
        "",
        "## Images: 200 steps of a 256×256×3 uint8 image",
        "",
        "| logger | calling-thread ms/image (median) | p99 ms | time until all on disk s "
        "| × synchronous imageio loop | images landed "
        "| slowdown of a 1 ms step, 1 image / 50 steps %: steady (with the first images' import) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for p in peers:
        x = s.get("images", {}).get(p)
        if not x:
            if p not in ("noop", "deque") and s.get("train", {}).get(p):
                out.append(f"| {_label(result, p)} | no image API |||||| ")
            continue
        if x.get("ok_rounds", 0) == 0:
            out.append(f"| {_label(result, p)} | {_error(s, 'images', p)} |||||| ")
            continue
        out.append(
            f"| {_label(result, p)} | {f(x.get('lat_median_ms'))} | {f(x.get('lat_p99_ms'))} "
            f"| {f(x.get('to_disk_s'))} | {f(x.get('x_imageio_sync'), unit='×')} "
            f"| {_pct_landed(s, 'images', p, 'images')} "
            f"| {_error(s, 'imgstep', p) or _steady(s, p)} |")
    out += [
        "",
        "Notes: *end to end* = (loop time + close time) / steps. *log() latency* is timed per call on "
        "a sample of about 10,000 calls (1 in `stride`), the clock's own cost subtracted. "
        "*Rows landed* are read back from each logger's own files after its process ended. "
        "*Slowdown* compares per-step time with logging against the same step without logging, "
        "measured in the same process before and after. CPU s = CPU time of the logging process "
        "during loop + close (all its threads). Peak RSS = the child's whole-process maximum. "
        "A loop that hit its time cap reports the steps it did (\"capped\"). "
        "See `benchmarks/README.md`.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- chart

def chart(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    var = main_variant(s)
    items = [(x["e2e_us_per_step"], p) for p, x in s[var].items() if x.get("e2e_us_per_step")]
    items.sort()
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(items) + 2.2))
    colors = ["#2a9d8f" if p == "test_tube" else "#bbbbbb" if p in ("noop", "deque") else "#e76f51"
              for _, p in items]
    ax.barh([_label(result, p) for _, p in items], [v for v, _ in items], color=colors)
    ax.set_xscale("log")
    for i, (v, _) in enumerate(items):
        ax.text(v * 1.08, i, f"{f(v)} µs", va="center", fontsize=8)
    ax.set_xlabel("end-to-end µs per step (log scale; lower is better)")
    n = int(var.split("@")[1])
    ax.set_title(f"5 float scalars per step, {n:,} steps: median over {result['meta']['rounds_run']} round(s)")
    ax.set_xlim(right=max(v for v, _ in items) * 8)
    fig.text(0.01, 0.01, f"{result['meta']['date']} | {_machine_line(result)}\n{_versions_line(result)}",
             fontsize=7, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "results.json")
    result = json.loads(p.read_text())
    print(console(result))
    if result["meta"]["mode"] == "full":
        (p.parent / "RESULTS.md").write_text(markdown(result))
        chart(result, p.parent / "chart.png")
        print(f"wrote {p.parent / 'RESULTS.md'} and {p.parent / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
