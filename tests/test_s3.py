"""Runs written to object storage (a real S3 server, moto's, on 127.0.0.1), read back from the bucket directly."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import test_tube
from faultlib import released_together
from s3lib import S3Server
from test_tube import Experiment
from test_tube._store import _journal, _layout


@pytest.fixture(autouse=True)
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every run of these tests spools under tmp_path (TEST_TUBE_SPOOL), not in the home folder."""
    path = tmp_path / "spool"
    monkeypatch.setenv("TEST_TUBE_SPOOL", str(path))
    return path


def objects(s3: S3Server, prefix: str) -> dict[str, int]:
    """Every object under ``prefix`` in the test's bucket: path relative to it -> size."""
    base = f"{s3.bucket_name}/{prefix}".rstrip("/")
    infos = s3.filesystem().get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return {i.path[len(base) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}


def read_bytes(s3: S3Server, path: str) -> bytes:
    with s3.filesystem().open_input_stream(f"{s3.bucket_name}/{path}") as f:
        data: bytes = f.read()
        return data


def journal_rows(s3: S3Server, version_path: str, tmp_path: Path) -> pa.Table:
    """The rows of a version's journal segments, concatenated in name order (as a reader does)."""
    names = sorted(n for n in objects(s3, version_path) if n.startswith(_layout.JOURNAL_SEGMENTS + "/"))
    offset = 0
    data = b""
    for name in names:
        assert _layout.segment_offset(name.split("/")[1]) == offset, f"segments not contiguous at {name}"
        chunk = read_bytes(s3, f"{version_path}/{name}")
        data += chunk
        offset += len(chunk)
    path = tmp_path / "joined.arrows"
    path.write_bytes(data)
    tables, end = _journal.read_frames(path)
    assert end == len(data), "a segment holds a part of a frame"
    return pa.concat_tables(tables, promote_options="default")


ROWS: list[dict[str, Any]] = [
    {"loss": 1.0 / (i + 1), "n": i, "ok": i % 3 == 0, **({"note": f"r{i},\"q\""} if i % 4 else {}),
     **({"late": i * 0.5} if i >= 150 else {})}
    for i in range(200)
]


def test_a_run_reads_back_row_for_row_with_types_kept(s3: S3Server, tmp_path: Path, spool: Path) -> None:
    """Rows logged to s3:// are in metrics.parquet, metrics.csv and the journal segments, typed as on disk."""
    uri = s3.uri(s3.bucket_name, "logs")
    with Experiment(save_dir=uri, name="r", record_git=False) as exp:
        for row in ROWS:
            exp.log(row)
        assert exp.log_dir == f"{s3.bucket_name}/logs/r/version_0"
    with Experiment(save_dir=str(tmp_path / "local"), name="r", record_git=False) as local:
        for row in ROWS:
            local.log(row)
    fs = s3.filesystem()
    remote = pq.read_table(f"{s3.bucket_name}/logs/r/version_0/metrics.parquet", filesystem=fs)
    on_disk = pq.read_table(tmp_path / "local" / "r" / "version_0" / "metrics.parquet")
    assert remote.schema == on_disk.schema
    assert remote.drop_columns(["created_at"]).equals(on_disk.drop_columns(["created_at"]))
    expected = [{"step": i, **{k: row.get(k) for k in ("loss", "n", "ok", "note", "late")}}
                for i, row in enumerate(ROWS)]
    assert remote.drop_columns(["created_at"]).to_pylist() == expected
    assert remote.schema.field("n").type == pa.int64() and remote.schema.field("ok").type == pa.bool_()
    # pandas through pyarrow.fs, and the CSV with pyarrow.csv
    frame = __import__("pandas").read_parquet(f"{s3.bucket_name}/logs/r/version_0/metrics.parquet", filesystem=fs)
    assert frame["n"].tolist() == list(range(200))
    with fs.open_input_stream(f"{s3.bucket_name}/logs/r/version_0/metrics.csv") as f:
        table = pacsv.read_csv(f)
    assert table.column("n").to_pylist() == list(range(200))
    assert table.column("note").to_pylist() == [row.get("note", "") for row in ROWS]  # an empty cell
    local_csv = (tmp_path / "local" / "r" / "version_0" / "metrics.csv").read_text().splitlines()
    remote_csv = read_bytes(s3, "logs/r/version_0/metrics.csv").decode().splitlines()
    assert remote_csv[0] == local_csv[0] and len(remote_csv) == len(local_csv)
    segments = journal_rows(s3, "logs/r/version_0", tmp_path)
    assert segments.column("n").to_pylist() == list(range(200))
    meta = json.loads(read_bytes(s3, "logs/r/version_0/meta.experiment"))
    assert meta["status"] == "finished" and meta["end_reason"] == "close"
    names = set(objects(s3, "logs/r/version_0"))
    assert not {n for n in names if n.startswith(_layout.CLAIMS + "/") or n in (_layout.LOCK, "_ring.tt")}
    assert not any(spool.rglob("*.arrows")), "the spool is removed once everything is uploaded"
    # and test_tube's own readers over the URI give what they give on disk
    run_uri = s3.uri(s3.bucket_name, "logs/r/version_0")
    mine, theirs = test_tube.read(run_uri), test_tube.read(tmp_path / "local" / "r" / "version_0")
    assert mine.schema == theirs.schema
    assert mine.drop_columns(["created_at"]).equals(theirs.drop_columns(["created_at"]))
    assert [{k: v for k, v in row.items() if k != "created_at"} for row in exp.metrics] == \
        [{k: v for k, v in row.items() if k != "created_at"} for row in local.metrics]
    listed, local_runs = test_tube.runs(uri), test_tube.runs(tmp_path / "local")
    assert listed.column("status").to_pylist() == ["finished"] and listed.column("rows").to_pylist() == [200]
    assert listed.drop_columns(["log_dir", "created_at"]).equals(local_runs.drop_columns(["log_dir", "created_at"]))


def test_images_tags_and_git_metadata_reach_the_bucket(s3: S3Server, tmp_path: Path) -> None:
    """Each image is one object with the pixels logged; tags and the git snapshot match a run on disk."""
    import imageio.v3 as iio

    pixels = np.arange(8 * 6 * 3, dtype=np.uint8).reshape(8, 6, 3)
    with Experiment(save_dir=s3.uri(s3.bucket_name), name="m") as exp:
        exp.tag({"lr": 0.001, "layers": [2, 3], "name": "a,b"})
        exp.log({"sample.png": pixels, "loss": 0.5})
        exp.log({"sample.png": pixels[::-1], "photo.jpg": pixels})
        exp.save()
        saved = objects(s3, "m/version_0")
        assert {"media/sample_0.png", "media/sample_1.png", "media/photo_1.jpg", "meta_tags.csv"} <= set(saved)
    with Experiment(save_dir=str(tmp_path), name="m") as local:
        local.tag({"lr": 0.001, "layers": [2, 3], "name": "a,b"})
    assert np.array_equal(iio.imread(read_bytes(s3, "m/version_0/media/sample_0.png")), pixels)
    assert np.array_equal(iio.imread(read_bytes(s3, "m/version_0/media/sample_1.png")), pixels[::-1])
    table = pq.read_table(f"{s3.bucket_name}/m/version_0/metrics.parquet", filesystem=s3.filesystem())
    assert table.column("sample.png").to_pylist() == ["media/sample_0.png", "media/sample_1.png"]
    tags = list(csv.reader(io.StringIO(read_bytes(s3, "m/version_0/meta_tags.csv").decode())))
    assert tags == [["key", "value"], ["lr", "0.001"], ["layers", "[2, 3]"], ["name", "a,b"]]
    assert read_bytes(s3, "m/version_0/meta_tags.csv") == (tmp_path / "m" / "version_0" / "meta_tags.csv").read_bytes()
    meta = json.loads(read_bytes(s3, "m/version_0/meta.experiment"))
    local_meta = json.loads((tmp_path / "m" / "version_0" / "meta.experiment").read_text())
    assert meta["git"] == local_meta["git"] and meta["git"]["ok"] is True


def test_resume_appends_rows_continues_steps_and_merges_tags(s3: S3Server, tmp_path: Path, spool: Path) -> None:
    """version=N of a run on the store takes it up from the bucket (the spool is gone): rows, steps, tags."""
    uri = s3.uri(s3.bucket_name, "p")
    with Experiment(save_dir=uri, name="res", record_git=False) as exp:
        exp.tag({"a": 1})
        for i in range(10):
            exp.log({"x": i})
    assert not any(spool.rglob("*.arrows"))
    with Experiment(save_dir=uri, name="res", version=0, record_git=False) as again:
        assert again.version == 0
        again.tag({"b": 2})
        for i in range(10, 15):
            again.log({"x": i, "y": "new"})
    table = pq.read_table(f"{s3.bucket_name}/p/res/version_0/metrics.parquet", filesystem=s3.filesystem())
    assert table.column("step").to_pylist() == list(range(15))
    assert table.column("x").to_pylist() == list(range(15))
    assert table.column("y").to_pylist() == [None] * 10 + ["new"] * 5
    assert journal_rows(s3, "p/res/version_0", tmp_path).column("x").to_pylist() == list(range(15))
    tags = read_bytes(s3, "p/res/version_0/meta_tags.csv").decode().splitlines()
    assert tags == ["key,value", "a,1", "b,2"]
    with Experiment(save_dir=uri, name="res", record_git=False) as fresh:
        assert fresh.version == 1


def test_eight_processes_claiming_at_once_get_eight_versions(s3: S3Server, tmp_path: Path, spool: Path) -> None:
    """Eight processes released together claim versions under one prefix: all distinct, each with its row."""
    script = tmp_path / "claim.py"
    script.write_text(textwrap.dedent(f"""
        import sys, test_tube
        print("ready", flush=True)
        sys.stdin.read()  # released together when the test closes every stdin
        exp = test_tube.Experiment(name="race", save_dir={s3.uri(s3.bucket_name, "runs")!r}, record_git=False)
        exp.log({{"v": exp.version}})
        print(exp.version, flush=True)
        exp.close()
    """))
    versions = [int(line) for line in released_together(script, 8, env={**s3.env(), "TEST_TUBE_SPOOL": str(spool)})]
    assert len(set(versions)) == 8
    fs = s3.filesystem()
    for v in versions:
        table = pq.read_table(f"{s3.bucket_name}/runs/race/version_{v}/metrics.parquet", filesystem=fs)
        assert table.column("v").to_pylist() == [v]


def test_filesystem_argument_takes_a_path_in_it(s3: S3Server) -> None:
    """filesystem= with save_dir a path in it writes the same objects as the URI form."""
    with Experiment(save_dir=f"{s3.bucket_name}/fs", filesystem=s3.filesystem(), name="f", record_git=False) as exp:
        exp.log({"a": 1})
    table = pq.read_table(f"{s3.bucket_name}/fs/f/version_0/metrics.parquet", filesystem=s3.filesystem())
    assert table.column("a").to_pylist() == [1]


def test_bad_locations_raise_at_the_constructor(tmp_path: Path) -> None:
    """A filesystem that is not pyarrow's, a URI beside filesystem=, an unknown scheme: clear errors, nothing made."""
    with pytest.raises(TypeError, match="pyarrow.fs.FileSystem"):
        Experiment(save_dir=str(tmp_path), filesystem="s3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is a URI"):
        Experiment(save_dir="s3://bucket/x", filesystem=pafs.LocalFileSystem())
    with pytest.raises(ValueError, match="not a URI pyarrow can open"):
        Experiment(save_dir="nosuchscheme://bucket/x")
    with pytest.raises(TypeError, match="save_dir"):
        Experiment(save_dir=3)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_file_uri_and_a_plain_path_write_the_same_local_folder(tmp_path: Path, spool: Path) -> None:
    """file:// is a local save_dir as before: no spool, no upload stage, the usual folder."""
    with Experiment(save_dir=f"file://{tmp_path}", name="loc", record_git=False) as exp:
        exp.log({"a": 1})
        assert exp.log_dir == str(tmp_path / "loc" / "version_0")
    assert test_tube.read(tmp_path / "loc" / "version_0").column("a").to_pylist() == [1]
    assert not spool.exists()


def test_per_rank_with_a_version_writes_one_folder_per_rank(s3: S3Server) -> None:
    """per_rank=True with version=N: each rank claims version_N/rank_<r>/ of its own."""
    uri = s3.uri(s3.bucket_name, "ddp")
    ranks = [Experiment(save_dir=uri, name="d", version=3, rank=r, per_rank=True, record_git=False) for r in (0, 1)]
    for r, exp in enumerate(ranks):
        exp.log({"rank": r})
        exp.close()
    fs = s3.filesystem()
    for r in (0, 1):
        table = pq.read_table(f"{s3.bucket_name}/ddp/d/version_3/rank_{r}/metrics.parquet", filesystem=fs)
        assert table.column("rank").to_pylist() == [r]
    with Experiment(save_dir=uri, name="d", record_git=False) as later:
        assert later.version == 4


def test_per_rank_ranks_of_one_launch_agree_on_a_version_through_the_store(s3: S3Server, tmp_path: Path,
                                                                         spool: Path) -> None:
    """Two ranks of a torchrun launch (TORCHELASTIC_RUN_ID, no process group), each its own process and spool:
    rank 0 claims on the store, rank 1 learns the number from it; both write version_<N>/rank_<r>/."""
    import uuid

    uri = s3.uri(s3.bucket_name, "launch")
    with Experiment(save_dir=uri, name="l", record_git=False) as before:
        before.log({"first": 1})  # version 0 is taken: the launch must get another
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(f"""
        import sys, test_tube
        exp = test_tube.Experiment(save_dir={uri!r}, name="l", per_rank=True, record_git=False)
        exp.log({{"rank": exp.rank}})
        exp.close()
        print(exp.version, flush=True)
    """))
    launch = f"test-{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **s3.env(), "TORCHELASTIC_RUN_ID": launch, "RANK": str(r),
                                   "WORLD_SIZE": "2", "TEST_TUBE_SPOOL": str(spool / f"host{r}")})
             for r in (1, 0)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0].strip() == outs[1].strip() == "1"
    fs = s3.filesystem()
    for r in (0, 1):
        table = pq.read_table(f"{s3.bucket_name}/launch/l/version_1/rank_{r}/metrics.parquet", filesystem=fs)
        assert table.column("rank").to_pylist() == [r]
    assert not [n for n in objects(s3, "launch/l/version_1") if n.startswith(_layout.CLAIMS + "/")]


def test_the_s3_benchmark_runs_at_a_tiny_size(s3_server: S3Server, tmp_path: Path) -> None:
    """benchmarks/bench_s3.py runs end to end (its own server) and reports every figure it promises."""
    out = tmp_path / "s3"
    done = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "benchmarks" / "bench_s3.py"),
                           "--rows", "2000", "--rounds", "1", "--big", "5000", "--big-rate", "5000", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["medians"]) == {"log() per row", "end to end", "close() to complete", "Experiment() open"}
    per = report["per_million_rows"]
    assert per["upload_requests"] > 0 and per["http_requests"] >= per["upload_requests"]
    assert per["upload_bytes"] >= per["stored_bytes"] > 0  # every stored byte went up through the upload stage


def test_save_puts_every_row_before_it_in_the_bucket_while_the_run_is_open(s3: S3Server, tmp_path: Path) -> None:
    """After save() the journal segments, tags and meta.experiment on the store cover every row logged before it."""
    with Experiment(save_dir=s3.uri(s3.bucket_name), name="open", record_git=False) as exp:
        for round_ in range(3):
            for i in range(100):
                exp.log({"i": round_ * 100 + i})
            exp.tag({"round": round_})
            exp.save()
            assert journal_rows(s3, "open/version_0", tmp_path).column("i").to_pylist() == list(range(100 * round_
                                                                                                     + 100))
            assert read_bytes(s3, "open/version_0/meta_tags.csv").decode().splitlines() == ["key,value",
                                                                                             f"round,{round_}"]
            meta = json.loads(read_bytes(s3, "open/version_0/meta.experiment"))
            assert meta["status"] == "running" and meta["version"] == 0
            assert [row["i"] for row in exp.metrics] == list(range(100 * round_ + 100))  # 0.7.5's list of dicts
            # test_tube.read() and runs() over the URI see the open run up to this save()
            assert test_tube.read(s3.uri(s3.bucket_name, "open/version_0")).column("i").to_pylist() == \
                list(range(100 * round_ + 100))
            listed = test_tube.runs(s3.uri(s3.bucket_name))
            assert listed.column("status").to_pylist() == ["running"]
            assert listed.column("rows").to_pylist() == [100 * round_ + 100]


def test_readers_during_a_run_never_see_a_torn_object(s3: S3Server, tmp_path: Path) -> None:
    """A reader listing and reading the version while it is written: every object it gets parses whole."""
    import threading

    fs = s3.filesystem()
    base = f"{s3.bucket_name}/torn/t/version_0"
    stop = threading.Event()
    seen: dict[str, int] = {"parquet": 0, "csv": 0, "segments": 0}
    errors: list[BaseException] = []

    def read_all() -> None:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            with fs.open_input_stream(info.path) as f:
                data = f.read()
            if len(data) != info.size or fs.get_file_info(info.path).size != info.size:
                # Replaced between the listing and the read: pyarrow reads an object by its listed (or HEAD)
                # size in ranged GETs, so a read across a replacement mixes two whole objects. Not a torn PUT.
                continue
            if info.base_name == "metrics.parquet":
                pq.read_table(pa.BufferReader(data))
                seen["parquet"] += 1
            elif info.base_name == "metrics.csv":
                assert data.endswith(b"\n"), "a CSV object cut in a line"
                pacsv.read_csv(pa.BufferReader(data))
                seen["csv"] += 1
            elif info.path.startswith(f"{base}/{_layout.JOURNAL_SEGMENTS}/"):
                path = tmp_path / "segment.arrows"
                path.write_bytes(data)
                assert _journal.read_frames(path)[1] == len(data), "a segment holds part of a frame"
                seen["segments"] += 1

    def reader() -> None:
        try:
            while not stop.is_set():
                read_all()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with Experiment(save_dir=s3.uri(s3.bucket_name, "torn"), name="t", record_git=False,
                        flush_interval=0.01) as exp:
            for i in range(60_000):
                exp.log({"i": i, "x": i * 0.5, "s": f"row {i}"})
                if i % 5_000 == 0:
                    exp.save()
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors[0]
    during = dict(seen)
    read_all()  # and the complete objects after close()
    assert during["segments"] > 0 and during["csv"] > 0, during
    assert seen["parquet"] > 0


def test_torchrun_ranks_agree_by_broadcast_and_rank_0_alone_writes_a_plain_run(s3: S3Server, tmp_path: Path,
                                                                             spool: Path) -> None:
    """torchrun --nproc_per_node 2 (gloo) with an s3:// save_dir: a plain Experiment is rank 0's alone; per_rank
    Experiments opened after init_process_group share the version rank 0 claimed on the store."""
    pytest.importorskip("torch.distributed")
    from test_ddp import TORCHRUN_SCRIPT, _env, _free_port, _run

    uri = s3.uri(s3.bucket_name, "tr")
    with Experiment(save_dir=uri, name="mine", record_git=False) as older:
        older.log({"old": 1})  # version 0 is taken: the launch must claim version 1
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    _run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_port",
          str(_free_port()), str(script), uri, "static"],
         _env(OMP_NUM_THREADS="1", TEST_TUBE_SPOOL=str(spool), **s3.env()), tmp_path)
    fs = s3.filesystem()
    plain = pq.read_table(f"{s3.bucket_name}/tr/plain/version_0/metrics.parquet", filesystem=fs)
    assert plain.column("rank").to_pylist() == [0] * 5
    assert not objects(s3, "tr/plain/version_1")
    for rank in (0, 1):
        table = pq.read_table(f"{s3.bucket_name}/tr/mine/version_1/rank_{rank}/metrics.parquet", filesystem=fs)
        assert table.column("rank").to_pylist() == [rank] * 5
        assert table.column("total").to_pylist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert not objects(s3, "tr/mine/.rank_claims")  # agreed by broadcast, not through an object


def test_debug_mode_on_object_storage_never_contacts_the_store(tmp_path: Path, spool: Path) -> None:
    """debug=True with a store nobody answers for: no error, nothing spooled, every method does nothing."""
    with socketserver_port() as port:  # a port with nothing listening: any request would fail
        uri = f"s3://k:s@nobucket/logs?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        exp = Experiment(save_dir=uri, name="d", debug=True)
        exp.log({"a": 1.0})
        exp.tag({"b": 2})
        exp.save()
        exp.close()
    assert (exp.version, exp.log_dir) == (0, "nobucket/logs/d/version_0")
    assert not any(spool.rglob("*")), "debug mode spooled something"


@contextlib.contextmanager
def socketserver_port() -> Iterator[int]:
    """A local port that was free a moment ago and has no listener."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port
