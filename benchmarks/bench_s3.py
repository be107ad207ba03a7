"""What does an S3 ``save_dir`` cost next to a local one?

Runs against a real S3 server on 127.0.0.1 (moto's, from ``tests/s3lib.py``;
it is installed into ``.venv-s3`` on first use), the local baseline in the
same process run, the two alternating round by round:

* ``log()``: the calling thread's time per row of a tight loop (the worst
  case: nothing but logging), local ``save_dir`` against ``s3://``;
* end to end: ``Experiment(...)`` to ``close()`` returned, everything
  published (on S3: every object complete in the bucket);
* ``close()``: from the call to a complete object in the bucket (close()
  returns only then) against the local close();
* upload work per 10**6 rows: bytes and requests counted by the upload stage,
  and the HTTP requests the server logged (pyarrow's own: multipart parts,
  listings), for one run of ``--big`` rows paced at ``--big-rate`` rows a second, scaled to 10**6.

Medians over ``--rounds`` rounds, with the ratio S3 / local.

    .venv/bin/python benchmarks/bench_s3.py      # 200,000 rows x 5 rounds; 10**6 rows paced over 20 s for the bytes
    .venv/bin/python benchmarks/bench_s3.py --rows 50000 --rounds 3 --big 200000 --big-rate 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from s3lib import S3Server  # noqa: E402
from test_tube import Experiment  # noqa: E402

_REQUEST = re.compile(rb'"(GET|PUT|POST|DELETE|HEAD) ')


def one_run(save_dir: str, rows: int, name: str, flush_interval: float = 2.0, rate: float = 0.0) -> dict[str, Any]:
    """One run of ``rows`` rows: times of open, the loop, close; the upload stage's counters.

    ``rate`` > 0 paces the loop at that many rows a second (in batches of 1,000), as a training loop is paced
    by its steps; 0 is a tight loop.
    """
    t0 = time.perf_counter()
    exp = Experiment(save_dir=save_dir, name=name, record_git=False, flush_interval=flush_interval)
    t1 = time.perf_counter()
    log = exp.log
    for i in range(rows):
        log({"loss": 1.0 / (i + 1), "acc": i * 1e-6, "epoch": i // 1000})
        if rate and i % 1000 == 999:
            ahead = t1 + (i + 1) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    t2 = time.perf_counter()
    upload = exp._upload
    exp.close()
    t3 = time.perf_counter()
    return {
        "open_s": t1 - t0, "log_ns": (t2 - t1) / rows * 1e9, "close_s": t3 - t2, "end_to_end_s": t3 - t0,
        "requests": upload.requests if upload else 0, "bytes": upload.bytes_sent if upload else 0,
        "version": exp.version, "log_dir": exp.log_dir,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", type=int, default=1_000_000, help="rows of the run whose upload work is counted")
    parser.add_argument("--big-rate", type=float, default=50_000,
                        help="rows a second that run is paced at (0: a tight loop); 50,000 spreads 10**6 rows over "
                             "20 s, ten flushes at the default flush_interval of 2 s")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "s3"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench_s3_")
    os.environ["TEST_TUBE_SPOOL"] = os.path.join(work, "spool")
    server = S3Server()
    server_log = Path(work) / "moto.log"
    server._log = open(server_log, "wb")  # noqa: SIM115 - the server's access log: its requests are counted
    server.start()
    os.environ.update(server.env())
    try:
        bucket = server.bucket("bench")
        uri = server.uri(bucket, "logs")
        local = os.path.join(work, "local")
        results: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
        one_run(local, 1000, "warm")
        one_run(uri, 1000, "warm")
        for r in range(args.rounds):
            order = [("local", local), ("s3", uri)] if r % 2 == 0 else [("s3", uri), ("local", local)]
            for kind, where in order:
                results[kind].append(one_run(where, args.rows, "loop"))
        fs = server.filesystem()
        last = results["s3"][-1]
        table = pq.read_table(f"{last['log_dir']}/metrics.parquet", filesystem=fs)
        assert table.num_rows == args.rows, "the object was not complete when close() returned"

        before = len(_REQUEST.findall(server_log.read_bytes()))
        big = one_run(uri, args.big, "big", rate=args.big_rate)
        http = len(_REQUEST.findall(server_log.read_bytes())) - before
        infos = fs.get_file_info(pafs.FileSelector(big["log_dir"], recursive=True))
        stored = sum(i.size for i in infos if i.type == pafs.FileType.File)
        kinds: dict[str, int] = {}
        for i in infos:
            if i.type == pafs.FileType.File:
                rel = i.path[len(big["log_dir"]) + 1:]
                kind = rel.split("/")[0] if "/" in rel else rel
                kinds[kind] = kinds.get(kind, 0) + i.size
        scale = 1e6 / args.big
    finally:
        server.kill()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    rows = []
    for key, label, unit in (("log_ns", "log() per row", "ns"), ("end_to_end_s", "end to end", "s"),
                             ("close_s", "close() to complete", "s"), ("open_s", "Experiment() open", "s")):
        lo, s3 = med("local", key), med("s3", key)
        rows.append((label, lo, s3, s3 / lo, unit))
    report = {
        "machine": platform.platform(), "python": platform.python_version(), "rows": args.rows,
        "rounds": args.rounds, "big_rows": args.big,
        "medians": {label: {"local": lo, "s3": s3, "ratio": ratio, "unit": unit} for label, lo, s3, ratio, unit in rows},
        "per_million_rows": {"upload_bytes": big["bytes"] * scale, "upload_requests": big["requests"] * scale,
                             "http_requests": http * scale, "stored_bytes": stored * scale},
        "big_run": {**{k: big[k] for k in ("log_ns", "close_s", "end_to_end_s")}, "rate": args.big_rate,
                    "stored_by_object": kinds},
        "raw": results,
    }
    lines = [f"# bench_s3: local save_dir against s3:// (moto on 127.0.0.1), {args.rows:,} rows x {args.rounds} "
             f"rounds, medians", "", "| measure | local | s3 | s3 / local |", "|---|---|---|---|"]
    for label, lo, s3, ratio, unit in rows:
        fmt = "{:.0f} " if unit == "ns" else "{:.3f} "
        lines.append(f"| {label} | {fmt.format(lo)}{unit} | {fmt.format(s3)}{unit} | {ratio:.2f} |")
    per = report["per_million_rows"]
    paced = f"paced at {args.big_rate:,.0f} rows/s" if args.big_rate else "a tight loop"
    lines += ["", f"Upload work per 10^6 rows (one run of {args.big:,} rows, {paced}, flush_interval 2 s, "
              f"{big['end_to_end_s']:.1f} s in all, scaled): "
              f"{per['upload_bytes'] / 2**20:.1f} MiB uploaded in {per['upload_requests']:.0f} PUTs by the upload "
              f"stage, {per['http_requests']:.0f} HTTP requests seen by the server, "
              f"{per['stored_bytes'] / 2**20:.1f} MiB stored at the end; that run's close() took "
              f"{big['close_s']:.3f} s to a complete object. Stored, by object: "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
