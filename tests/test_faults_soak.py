"""Soak: logging at 10 kHz for a while keeps memory flat and the number of files bounded."""

from __future__ import annotations

import json
from pathlib import Path

import test_tube
from faultlib import count, rss_helper, run, script

SOAK = """
root, seconds = sys.argv[1], float(sys.argv[2])
from faultlib_rss import rss_kib
exp = Experiment(name="soak", save_dir=root, record_git=False)
rate, batch = 10_000, 100
samples = []
i = 0
start = time.monotonic()
next_sample = start
while True:
    now = time.monotonic()
    if now - start >= seconds:
        break
    if now >= next_sample:
        files = sum(len(f) for _, _, f in os.walk(exp.log_dir))
        samples.append((round(now - start, 1), rss_kib(), files, i))
        next_sample += max(seconds / 60, 0.25)
    for _ in range(batch):
        exp.log({"i": i, "loss": 1.0 / (i + 1), "acc": (i % 1000) / 1000, "epoch": i // 100_000,
                 "note": "checkpoint" if i % 10_000 == 0 else None})
        i += 1
    target = start + i / rate
    delay = target - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # pace the producer at 10 kHz
exp.close()
say(json.dumps({"rows": i, "seconds": time.monotonic() - start, "samples": samples}))
"""


def test_soak_at_ten_kilohertz(tmp_path: Path) -> None:
    """10 kHz for 20 s (10 min with --full): every row kept, memory flat in the second half, files bounded."""
    seconds = count(20, 600)
    rss_helper(tmp_path)
    proc = run(script(tmp_path, SOAK), tmp_path, seconds, timeout=seconds + 120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    samples = out["samples"]
    rss = [s[1] for s in samples]
    files = [s[2] for s in samples]
    half = len(samples) // 2
    growth = max(rss[half:]) - rss[half]
    print(f"soak: {out['rows']} rows in {out['seconds']:.0f} s; RSS {rss[1] // 1024}..{max(rss) // 1024} MiB, "
          f"growth over the second half {growth // 1024} MiB; files {min(files)}..{max(files)}")
    assert out["rows"] >= 0.9 * 10_000 * seconds, "the producer could not keep 10 kHz"
    assert growth < 40 * 1024, f"memory grew by {growth // 1024} MiB over the second half"
    assert max(files) <= 12, files
    table = test_tube.read(tmp_path / "soak" / "version_0")
    assert table.num_rows == out["rows"]
    assert table.column("i").to_pylist() == list(range(out["rows"]))
