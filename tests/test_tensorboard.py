"""The TensorBoard sink: event files read back with TensorBoard's own reader and its server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import test_tube
from test_tube._engine import _tfevents

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.compat.proto import event_pb2  # noqa: E402

ALL = {"scalars": 0, "images": 0, "histograms": 0, "tensors": 0, "compressedHistograms": 0}


def accumulate(log_dir: str | Path) -> EventAccumulator:
    acc = EventAccumulator(os.path.join(log_dir, "tf"), size_guidance=ALL)
    acc.Reload()
    return acc


def series(log_dir: str | Path, column: str) -> list[tuple[int, float, Any]]:
    """(step, created_at in s, value) of every row of read() that has ``column``."""
    table = test_tube.read(log_dir)
    created = table.column("created_at").cast("int64").to_pylist()
    return [(s, t / 1e6, v) for s, t, v in zip(table.column("step").to_pylist(), created,
                                              table.column(column).to_pylist()) if v is not None]


def test_scalars_read_back_with_tensorboards_reader_equal_read(tmp_path: Path) -> None:
    """Every numeric column is a scalar series whose steps, wall times and (float32) values equal read()'s."""
    with test_tube.Experiment(save_dir=tmp_path, name="tb", record_git=False) as exp:
        for i in range(300):
            row: dict[str, Any] = {"loss": 1.0 / (i + 1), "epoch": i // 100, "better": i % 3 == 0}
            if i % 50 == 49:
                row["val/acc"] = i / 300
            exp.log(row, step=10 * i)
            if i == 150:
                exp.save()
    acc = accumulate(exp.log_dir)
    assert set(acc.Tags()["scalars"]) == {"loss", "epoch", "better", "val/acc"}
    for column in ("loss", "epoch", "better", "val/acc"):
        expected = series(exp.log_dir, column)
        got = acc.Scalars(column)
        assert [e.step for e in got] == [s for s, _, _ in expected]
        assert [e.wall_time for e in got] == pytest.approx([t for _, t, _ in expected], abs=1e-6)
        assert [e.value for e in got] == [float(np.float32(v)) for _, _, v in expected]
    assert len(acc.Scalars("val/acc")) == 6


def test_files_are_where_0_7_5_put_them(tmp_path: Path) -> None:
    """version_<N>/tf/events.out.tfevents.*, named by get_logdir() and get_tensorboardx_path()."""
    with test_tube.Experiment(save_dir=tmp_path, name="where", record_git=False) as exp:
        exp.log({"a": 1.0})
    tf = Path(exp.log_dir) / "tf"
    assert exp.get_logdir() == str(tf)
    assert exp.get_tensorboardx_path("where", 0) == str(tf)
    assert [p.name.startswith("events.out.tfevents.") for p in tf.iterdir()] == [True]


def test_formats_without_tensorboard_write_no_tf_folder(tmp_path: Path) -> None:
    """formats=("csv", "parquet") leaves TensorBoard out: no tf/ folder."""
    with test_tube.Experiment(save_dir=tmp_path, name="no_tb", formats=("csv", "parquet"), record_git=False) as exp:
        exp.log({"a": 1.0})
    assert not (Path(exp.log_dir) / "tf").exists()
    assert test_tube.read(exp.log_dir).column("a").to_pylist() == [1.0]


def test_every_record_frames_and_checksums_as_tfrecord(tmp_path: Path) -> None:
    """Each record: length, masked CRC32C of it, an Event, masked CRC32C of it; the first event is the file version."""
    with test_tube.Experiment(save_dir=tmp_path, name="crc", record_git=False) as exp:
        exp.tag({"lr": 0.5})
        for i in range(1000):
            exp.log({"x": float(i), "y": -i} if i % 7 else {"x": float(i)}, step=i - 3)
        exp.add_text("note", "hi", 5)
    data = next((Path(exp.log_dir) / "tf").iterdir()).read_bytes()
    events = []
    off = 0
    while off < len(data):
        header = data[off:off + 8]
        (length,) = np.frombuffer(header, "<u8")
        assert int(np.frombuffer(data[off + 8:off + 12], "<u4")[0]) == _tfevents.masked(_tfevents.crc32c(header))
        body = data[off + 12:off + 12 + int(length)]
        assert int(np.frombuffer(data[off + 12 + int(length):off + 16 + int(length)], "<u4")[0]) == \
            _tfevents.masked(_tfevents.crc32c(body))
        events.append(event_pb2.Event.FromString(body))
        off += 16 + int(length)
    assert off == len(data)
    assert events[0].file_version == "brain.Event:2"
    steps = [e.step for e in events if e.summary.value and e.summary.value[0].tag == "x"]
    assert steps == list(range(-3, 997))


def test_crc32c_matches_the_standard_check_values() -> None:
    """CRC32C of "123456789" is 0xE3069283; long messages (lanes joined) agree with the byte-at-a-time loop."""
    assert _tfevents.crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(7)
    for n in (1023, 1024, 4097, 100_003):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        crc = 0xFFFFFFFF
        for byte in data:
            crc = int(_tfevents._TABLE[(crc ^ byte) & 0xFF]) ^ (crc >> 8)
        assert _tfevents.crc32c(data) == crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("cut", [1, 5, 11, 13, 30])
def test_a_torn_last_record_leaves_every_whole_record_readable(tmp_path: Path, cut: int) -> None:
    """The file cut inside its last record (a crash mid-write): TensorBoard reads every record before it."""
    with test_tube.Experiment(save_dir=tmp_path, name="torn", record_git=False) as exp:
        for i in range(40):
            exp.log({"loss": float(i)})
    path = next((Path(exp.log_dir) / "tf").iterdir())
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - cut])
    assert [e.step for e in accumulate(exp.log_dir).Scalars("loss")] == list(range(39))


KILLED = """
import sys, test_tube
exp = test_tube.Experiment(save_dir=sys.argv[1], name="killed", record_git=False, flush_interval=0.01)
i = 0
while True:
    exp.log({"loss": i * 0.5, "i": i})
    i += 1
    if i % 500 == 0:
        exp.save()
        print("saved", i, flush=True)
"""


def test_kill_9_leaves_the_event_file_readable_with_every_saved_row(tmp_path: Path) -> None:
    """A run killed with SIGKILL: TensorBoard reads a prefix of read()'s rows holding every row saved before the kill."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    saved = 0
    for line in proc.stdout:
        saved = int(line.split()[1])
        if saved >= 5000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    log_dir = tmp_path / "killed" / "version_0"
    got = [(e.step, e.value) for e in accumulate(log_dir).Scalars("i")]
    rows = [(s, v) for s, _, v in series(log_dir, "i")]
    assert len(got) >= saved
    assert got == [(s, float(v)) for s, v in rows[:len(got)]]


def test_resumed_version_adds_a_second_event_file_read_as_one_run(tmp_path: Path) -> None:
    """Reopening a version continues its steps in a new event file; the reader sees one series."""
    with test_tube.Experiment(save_dir=tmp_path, name="again", record_git=False) as exp:
        for i in range(5):
            exp.log({"loss": float(i)})
    with test_tube.Experiment(save_dir=tmp_path, name="again", version=0, record_git=False) as exp:
        for i in range(5, 9):
            exp.log({"loss": float(i)})
    assert len(list((Path(exp.log_dir) / "tf").iterdir())) == 2
    assert [(e.step, e.value) for e in accumulate(exp.log_dir).Scalars("loss")] == [(i, float(i)) for i in range(9)]


def test_tags_are_hparams_and_strings_are_text(tmp_path: Path) -> None:
    """tag() values reach the HParams plugin's session_start_info; a string column is a text tensor."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    with test_tube.Experiment(save_dir=tmp_path, name="hp", record_git=False) as exp:
        exp.tag({"lr": 0.01, "optimizer": "adam", "nesterov": True, "layers": [64, 32], "decay": np.float32(0.5),
                 "mask": np.array([1, 0])})
        exp.log({"phase": "warm-up", "loss": 1.0})
        exp.save()  # a second flush compares the tags with those written (an array among them)
        exp.log({"phase": "train", "loss": 0.5})
    acc = accumulate(exp.log_dir)
    [start] = acc.Tensors("_hparams_/session_start_info")
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data
    assert content.plugin_name == "hparams"
    info = plugin_data_pb2.HParamsPluginData.FromString(content.content).session_start_info
    assert info.hparams["lr"].number_value == 0.01
    assert info.hparams["optimizer"].string_value == "adam"
    assert info.hparams["nesterov"].bool_value is True
    assert info.hparams["layers"].string_value == "[64, 32]"
    assert info.hparams["decay"].number_value == 0.5 and info.hparams["mask"].string_value == "[1 0]"
    assert info.group_name == "hp/version_0"
    assert [(t.step, t.tensor_proto.string_val) for t in acc.Tensors("phase")] == [(0, [b"warm-up"]), (1, [b"train"])]
    assert acc.SummaryMetadata("phase").plugin_data.plugin_name == "text"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_server_lists_the_runs_and_serves_their_scalars(tmp_path: Path) -> None:
    """`tensorboard --logdir <save_dir>` on 127.0.0.1: runs <name>/version_<N>/tf, scalars equal to read(), HParams."""
    for lr, name in ((0.1, "mnist"), (0.01, "mnist"), (0.5, "cifar")):
        with test_tube.Experiment(save_dir=tmp_path, name=name, record_git=False) as exp:
            exp.tag({"lr": lr, "optimizer": "adam"})
            for i in range(20):
                exp.log({"loss": 1.0 / (i + 1)}, step=i)
    port = _free_port()
    tensorboard = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen([str(tensorboard), "--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", str(port),
                             "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        want = {"cifar/version_0/tf", "mnist/version_0/tf", "mnist/version_1/tf"}
        deadline = time.monotonic() + 90
        runs: list[str] = []
        while time.monotonic() < deadline and set(runs) != want:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                runs = _get(f"{base}/data/runs")
            except OSError:
                runs = []
            if set(runs) != want:
                time.sleep(0.5)  # the server's own start-up and first load, not our writer
        assert set(runs) == want
        query = urllib.parse.urlencode({"run": "mnist/version_1/tf", "tag": "loss"})
        points = _get(f"{base}/data/plugin/scalars/scalars?{query}")
        expected = series(tmp_path / "mnist" / "version_1", "loss")
        assert [p[1] for p in points] == [s for s, _, _ in expected]
        assert [p[2] for p in points] == pytest.approx([v for _, _, v in expected], rel=1e-6)
        # The HParams tab: one session group per version, with its tags and the last loss as a metric.
        body = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN"], "colParams": [], "startIndex": 0,
                "sliceSize": 10}
        request = urllib.request.Request(f"{base}/data/plugin/hparams/session_groups", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
        with urllib.request.urlopen(request, timeout=10) as response:
            groups = json.loads(response.read())["sessionGroups"]
        assert {g["name"]: g["hparams"] for g in groups} == {
            "mnist/version_0": {"lr": 0.1, "optimizer": "adam"}, "mnist/version_1": {"lr": 0.01, "optimizer": "adam"},
            "cifar/version_0": {"lr": 0.5, "optimizer": "adam"}}
        last = {g["name"]: g["metricValues"][0] for g in groups}["mnist/version_1"]
        assert (last["name"]["tag"], last["trainingStep"]) == ("loss", 19)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_writing_event_files_imports_neither_tensorboard_nor_protobuf_nor_matplotlib() -> None:
    """A run with scalars, an image, text and tags writes tf/ without importing tensorboard, protobuf, matplotlib or torch."""
    code = ("import sys, tempfile, numpy, test_tube\n"
            "with test_tube.Experiment(save_dir=tempfile.mkdtemp(), record_git=False) as exp:\n"
            "    exp.tag({'lr': 0.1}); exp.add_scalar('a', 1.0, 0); exp.add_text('t', 'x', 0)\n"
            "    exp.add_image('i', numpy.zeros((3, 4, 4), numpy.uint8), 0); exp.add_histogram('h', [1.0, 2.0], 0)\n"
            "import os; print(len(os.listdir(exp.get_logdir())))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'google', 'matplotlib', 'torch')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["1", "[]"]


def test_the_benchmark_script_runs_and_compares_with_the_sink_and_without() -> None:
    """benchmarks/bench_tensorboard.py (tiny sizes) prints our encoder (others need crc32c) and both ratios."""
    script = Path(__file__).parent.parent / "benchmarks" / "bench_tensorboard.py"
    result = subprocess.run([sys.executable, str(script), "--encode-rows", "2000", "--repeats", "1", "--steps", "5000"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "  numpy " in result.stdout
    assert result.stdout.count("ratio") == 2
