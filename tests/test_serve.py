"""`test-tube serve`: its JSON endpoints, media, static files and path safety, over HTTP, on real runs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import test_tube
from test_tube._app._serve import Server
from test_runs import build_per_rank

TIMEOUT = 30
SPIKE_STEP = 12_345


def build_three_runs(save_dir: Path) -> Path:
    """mnist/version_0 and _1 (finished, tags, images at steps 0, 10, 20), long/version_0 (20,000 rows, one spike)."""
    opts: dict[str, Any] = {"save_dir": save_dir, "record_git": False}
    for lr in (0.1, 0.01):
        with test_tube.Experiment(name="mnist", description=f"lr {lr}", **opts) as exp:
            exp.tag({"lr": lr, "optimizer": "adam"})
            for step in range(30):
                row: dict[str, Any] = {"loss": 1.0 / (step + 1) + lr, "acc": step / 30}
                if step % 10 == 0:
                    row["sample_png"] = np.full((8, 8), step * 8, np.uint8)
                exp.log(row)
            exp.log({"loss": float("nan")})
    with test_tube.Experiment(name="long", **opts) as exp:
        exp.tag({"lr": 0.5, "optimizer": "sgd"})
        values = np.sin(np.arange(20_000) / 500.0)
        values[SPIKE_STEP] = 1000.0
        for value in values.tolist():
            exp.log({"loss": value})
    return save_dir


class Running:
    """A Server on port 0 serving in a thread; stop() shuts it down within a bounded time."""

    def __init__(self, save_dir: Path) -> None:
        self.server = Server(save_dir, "127.0.0.1", 0)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-serve", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """GET ``url``: status, Content-Type and body, also for error statuses."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def get_json(url: str, status: int = 200) -> Any:
    code, kind, body = get(url)
    assert code == status, body
    assert kind == "application/json"
    return json.loads(body)


def q(**params: Any) -> str:
    return urllib.parse.urlencode(params)


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_three_runs(tmp_path_factory.mktemp("serve") / "logs")


@pytest.fixture(scope="module")
def server(save_dir: Path) -> Iterator[Running]:
    running = Running(save_dir)
    yield running
    running.stop()


# -- JSON endpoints -------------------------------------------------------------------------


def test_runs_lists_every_run_with_status_tags_and_metric_summaries(server: Running, save_dir: Path) -> None:
    """/api/runs: one entry per run, ordered by name then version, with tags and last/min/max."""
    data = get_json(server.url + "api/runs")
    assert data["save_dir"] == str(save_dir)
    runs = data["runs"]
    assert [r["id"] for r in runs] == ["long/version_0", "mnist/version_0", "mnist/version_1"]
    mnist0 = runs[1]
    assert mnist0["status"] == "finished" and mnist0["rows"] == 31 and mnist0["last_step"] == 30
    assert mnist0["tags"] == {"lr": 0.1, "optimizer": "adam"}
    assert mnist0["metrics"]["loss"] == ["NaN", pytest.approx(0.1 + 1 / 30), pytest.approx(1.1)]
    assert mnist0["metrics"]["acc"][0] == pytest.approx(29 / 30)
    assert runs[0]["metrics"]["loss"][2] == 1000.0


def test_run_gives_meta_tags_metrics_and_media_by_key_and_step(server: Running) -> None:
    """/api/run: meta.experiment, tags as written, numeric columns, images by logged key, ordered by step."""
    data = get_json(server.url + "api/run?" + q(name="mnist", version=1))
    assert data["id"] == "mnist/version_1" and data["status"] == "finished" and data["rows"] == 31
    assert data["meta"]["description"] == "lr 0.01" and data["meta"]["version"] == 1
    assert data["tags"] == {"lr": "0.01", "optimizer": "adam"}
    assert data["metrics"] == ["loss", "acc"]
    assert data["media"] == {"sample_png": [[0, "sample_0.png"], [10, "sample_10.png"], [20, "sample_20.png"]]}


def test_series_of_a_short_run_is_every_point(server: Running, save_dir: Path) -> None:
    """/api/series: below 4 points per bucket, exactly the finite rows of the metric, by step."""
    data = get_json(server.url + "api/series?" + q(name="mnist", version=0, metric="loss"))
    table = test_tube.read(save_dir / "mnist" / "version_0")
    loss = table.column("loss").to_pylist()
    assert data["points"] == 30 and data["nonfinite"] == 1 and not data["downsampled"]
    assert data["xs"] == [float(s) for s, v in zip(table.column("step").to_pylist(), loss) if v == v]
    assert data["ys"] == [v for v in loss if v == v]


def test_series_of_a_long_run_is_bounded_and_keeps_the_spike(server: Running) -> None:
    """20,000 rows into 100 buckets: at most 400 points, and the single spike is among them."""
    data = get_json(server.url + "api/series?" + q(name="long", version=0, metric="loss", buckets=100))
    assert data["points"] == 20_000 and data["downsampled"]
    assert len(data["xs"]) <= 400
    assert data["ys"][data["xs"].index(float(SPIKE_STEP))] == 1000.0
    assert data["xs"][0] == 0.0 and data["xs"][-1] == 19_999.0


def test_series_zoomed_to_an_x_range(server: Running) -> None:
    """x_min/x_max: the points in that range plus one neighbour each side, exact when they fit."""
    data = get_json(server.url + "api/series?" + q(name="long", version=0, metric="loss", x_min=100, x_max=199))
    assert data["xs"] == [float(s) for s in range(99, 201)]


def test_series_on_a_time_axis_starts_at_zero_and_grows(server: Running) -> None:
    """x=time: seconds since the run's first row, non-decreasing."""
    data = get_json(server.url + "api/series?" + q(name="mnist", version=0, metric="acc", x="time"))
    assert data["x"] == "time" and data["xs"][0] == 0.0 and len(data["xs"]) == 30
    assert all(b >= a for a, b in zip(data["xs"], data["xs"][1:]))


@pytest.mark.parametrize(("params", "status", "message"), [
    ({"name": "mnist", "version": 0, "metric": "nope"}, 404, "has no metric 'nope'"),
    ({"name": "mnist", "version": 0, "metric": "step"}, 404, "has no metric 'step'"),
    ({"name": "mnist", "version": 0, "metric": "loss", "x": "epoch"}, 400, "x must be step or time"),
    ({"name": "mnist", "version": 0, "metric": "loss", "buckets": 0}, 400, "buckets must be 1..10000"),
    ({"name": "mnist", "version": 0, "metric": "loss", "x_min": "nan"}, 400, "x_min must be finite"),
    ({"name": "mnist", "version": 0}, 400, "missing query parameter 'metric'"),
    ({"name": "mnist", "version": 7, "metric": "loss"}, 404, "no run mnist/version_7"),
])
def test_series_bad_requests_get_a_json_error(server: Running, params: dict[str, Any], status: int,
                                              message: str) -> None:
    """Bad parameters: a 400 or 404 with a JSON message naming the problem."""
    data = get_json(server.url + "api/series?" + q(**params), status=status)
    assert message in data["error"] and data["status"] == status


def test_series_many_gives_every_metric_of_every_run_as_series_does(server: Running) -> None:
    """/api/series_many: one entry per run and metric it has, each equal to /api/series's answer."""
    url = server.url + "api/series_many?" + urllib.parse.urlencode(
        [("run", "mnist/version_0"), ("run", "long/version_0"), ("metric", "loss"), ("metric", "acc"),
         ("buckets", "100")])
    data = get_json(url)
    assert data["x"] == "step" and data["errors"] == []
    assert [(s["id"], s["metric"]) for s in data["series"]] == [
        ("mnist/version_0", "loss"), ("mnist/version_0", "acc"), ("long/version_0", "loss")]  # long has no acc
    for entry in data["series"]:
        name, version = entry["id"].split("/version_")
        one = get_json(server.url + "api/series?" + q(name=name, version=version, metric=entry["metric"], buckets=100))
        assert entry == one
    assert get_json(url) == data  # the second answer, from the cache, is the same


def test_series_many_zoomed_and_on_time(server: Running) -> None:
    """x_min/x_max and x=time apply to every series of the request."""
    data = get_json(server.url + "api/series_many?" + urllib.parse.urlencode(
        [("run", "long/version_0"), ("metric", "loss"), ("x_min", "100"), ("x_max", "199")]))
    assert data["series"][0]["xs"] == [float(s) for s in range(99, 201)]
    data = get_json(server.url + "api/series_many?" + q(run="mnist/version_1", metric="acc", x="time"))
    assert data["x"] == "time" and data["series"][0]["xs"][0] == 0.0


def test_series_many_reports_a_missing_run_and_refuses_bad_requests(server: Running) -> None:
    """A run that is not there is an entry in errors; no run, no metric or a bad x is a 400."""
    data = get_json(server.url + "api/series_many?" + urllib.parse.urlencode(
        [("run", "mnist/version_9"), ("run", "mnist/version_1"), ("metric", "acc")]))
    assert [s["id"] for s in data["series"]] == ["mnist/version_1"]
    assert len(data["errors"]) == 1 and "no run mnist/version_9" in data["errors"][0]["error"]
    for params, message in [({"metric": "loss"}, "at least one run"), ({"run": "mnist/version_0"}, "at least one run"),
                            ({"run": "mnist/version_0", "metric": "loss", "x": "epoch"}, "x must be step or time")]:
        assert message in get_json(server.url + "api/series_many?" + q(**params), status=400)["error"]


def test_media_file_is_the_image_on_disk(server: Running, save_dir: Path) -> None:
    """/media: the image's bytes, typed image/png."""
    status, kind, body = get(server.url + "media?" + q(name="mnist", version=0, file="sample_10.png"))
    assert status == 200 and kind == "image/png"
    assert body == (save_dir / "mnist" / "version_0" / "media" / "sample_10.png").read_bytes()


def test_page_and_static_files(server: Running) -> None:
    """/ is the page; its scripts, styles and uPlot's licence are served from the package."""
    status, kind, body = get(server.url)
    assert status == 200 and kind.startswith("text/html") and b"/static/app.js" in body
    for path, word in [("app.js", b"uPlot"), ("style.css", b"#runs"), ("uplot/uPlot.iife.min.js", b"uPlot"),
                       ("uplot/uPlot.min.css", b".uplot"), ("uplot/LICENSE", b"MIT")]:
        status, _, body = get(server.url + "static/" + path)
        assert status == 200 and word in body, path


def test_unknown_pages_get_an_error_page_not_a_traceback(server: Running) -> None:
    """An unknown path is a 404 HTML page with a message; an unknown API path a 404 JSON."""
    status, kind, body = get(server.url + "nope")
    assert status == 404 and kind.startswith("text/html") and b"no such page" in body and b"Traceback" not in body
    assert "no such page" in get_json(server.url + "api/nope", status=404)["error"]


def test_requests_for_another_host_name_are_refused(server: Running) -> None:
    """A Host header that is not this machine (DNS rebinding) gets 403, not the runs."""
    status, _, body = get(server.url + "api/runs", headers={"Host": "attacker.example:80"})
    assert status == 403 and b"mnist" not in body
    assert get(server.url + "api/runs", headers={"Host": "localhost:1234"})[0] == 200


# -- path safety --------------------------------------------------------------------------------


SECRET = b"secret-outside-save-dir"


@pytest.mark.parametrize("path", [
    "static/../../../pyproject.toml",
    "static/%2e%2e/_serve.py",
    "static/index.html/../../_serve.py",
    "media?" + q(name="mnist", version=0, file="../meta.experiment"),
    "media?" + q(name="mnist", version=0, file="..%2Fmeta.experiment"),
    "media?" + q(name="mnist", version=0, file="/etc/passwd"),
    "media?" + q(name="mnist", version=0, file="sample_0.png/../../meta.experiment"),
    "media?" + q(name="..", version=0, file="sample_0.png"),
    "media?" + q(name="mnist/version_0/../..", version=0, file="sample_0.png"),
    "api/run?" + q(name="../mnist", version=0),
    "api/run?" + q(name="/etc", version=0),
    "api/run?" + q(name="mnist", version="0/../1"),
    "api/run?" + q(name="mnist", version="-1"),
])
def test_paths_outside_the_save_dir_or_package_are_404(server: Running, path: str) -> None:
    """Traversal in a path or parameter never reads a file: 404 with a message."""
    status, _, body = get(server.url + path)
    assert status == 404, body
    assert b"root:" not in body and b"exp_hash" not in body and b"def " not in body


def test_symlinks_pointing_out_of_the_save_dir_are_not_followed(tmp_path: Path) -> None:
    """A version folder or an image that links outside SAVE_DIR is neither listed nor served."""
    outside = build_outside_run(tmp_path / "elsewhere")
    save_dir = tmp_path / "logs"
    with test_tube.Experiment(name="inside", save_dir=save_dir, record_git=False) as exp:
        exp.log({"loss": 1.0, "x_png": np.zeros((4, 4), np.uint8)})
    (save_dir / "inside" / "version_1").symlink_to(outside, target_is_directory=True)
    (save_dir / "inside" / "version_0" / "media" / "leak_5.png").symlink_to(tmp_path / "secret.png")
    running = Running(save_dir)
    try:
        ids = [r["id"] for r in get_json(running.url + "api/runs")["runs"]]
        assert ids == ["inside/version_0"]
        data = get_json(running.url + "api/run?" + q(name="inside", version=1), status=404)
        assert "no run inside/version_1" in data["error"]
        status, _, body = get(running.url + "api/series?" + q(name="inside", version=1, metric="loss"))
        assert status == 404 and b"42" not in body
        status, _, body = get(running.url + "media?" + q(name="inside", version=0, file="leak_5.png"))
        assert status == 404 and SECRET not in body
    finally:
        running.stop()


def build_outside_run(save_dir: Path) -> Path:
    with test_tube.Experiment(name="other", save_dir=save_dir, record_git=False) as exp:
        exp.log({"loss": 42.0})
    (save_dir.parent / "secret.png").write_bytes(SECRET)
    return save_dir / "other" / "version_0"


# -- runs that change while shown -----------------------------------------------------------------


def test_a_run_deleted_while_served_is_404_json(tmp_path: Path) -> None:
    """After rmtree of a run, its endpoints answer 404 JSON and the runs table drops it."""
    save_dir = tmp_path / "logs"
    for _ in range(2):
        with test_tube.Experiment(name="exp", save_dir=save_dir, record_git=False) as exp:
            exp.log({"loss": 1.0, "img_png": np.zeros((4, 4), np.uint8)})
    running = Running(save_dir)
    try:
        query = q(name="exp", version=1)
        assert get_json(running.url + "api/run?" + query)["rows"] == 1
        assert len(get_json(running.url + "api/series?" + query + "&metric=loss")["xs"]) == 1
        shutil.rmtree(save_dir / "exp" / "version_1")
        for path in ("api/run?" + query, "api/series?" + query + "&metric=loss"):
            data = get_json(running.url + path, status=404)
            assert data["error"].startswith("no run exp/version_1") and "deleted" in data["error"]
        status, kind, body = get(running.url + "media?" + query + "&file=img_0.png")
        assert status == 404 and kind.startswith("text/html") and b"Traceback" not in body
        assert [r["id"] for r in get_json(running.url + "api/runs")["runs"]] == ["exp/version_0"]
        shutil.rmtree(save_dir)
        assert "no longer exists" in get_json(running.url + "api/runs", status=404)["error"]
    finally:
        running.stop()


def test_a_running_run_shows_new_rows_after_each_flush(tmp_path: Path) -> None:
    """While a run writes, the endpoints show every row up to its last save(), and status running."""
    save_dir = tmp_path / "logs"
    exp = test_tube.Experiment(name="live", save_dir=save_dir, record_git=False, flush_interval=3600)
    running = Running(save_dir)
    try:
        query = q(name="live", version=0, metric="loss")
        for i in range(3):
            exp.log({"loss": float(i)})
        exp.save()
        assert get_json(running.url + "api/series?" + query)["ys"] == [0.0, 1.0, 2.0]
        run = get_json(running.url + "api/runs")["runs"][0]
        assert run["status"] == "running" and run["rows"] == 3
        for i in range(3, 5):
            exp.log({"loss": float(i)})
        exp.save()
        assert get_json(running.url + "api/series?" + query)["ys"] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert get_json(running.url + "api/runs")["runs"][0]["rows"] == 5
        exp.close()
        assert get_json(running.url + "api/runs")["runs"][0]["status"] == "finished"
    finally:
        exp.close()
        running.stop()


def test_a_growing_run_adds_columns_and_a_remade_run_is_read_afresh(tmp_path: Path) -> None:
    """Rows flushed later (with a new column) are appended; a run deleted and made again shows only its own rows."""
    save_dir = tmp_path / "logs"
    # No metrics.parquet: every chart reads the journal, as for a run whose Parquet file lags.
    exp = test_tube.Experiment(name="live", save_dir=save_dir, record_git=False, flush_interval=3600,
                               formats=("csv",))
    running = Running(save_dir)
    try:
        for i in range(3):
            exp.log({"loss": float(i)})
        exp.save()
        assert get_json(running.url + "api/series?" + q(name="live", version=0, metric="loss"))["ys"] == [0.0, 1.0, 2.0]
        exp.log({"loss": 3.0, "acc": 0.5})
        exp.save()
        assert get_json(running.url + "api/series?" + q(name="live", version=0, metric="acc"))["ys"] == [0.5]
        assert get_json(running.url + "api/series?" + q(name="live", version=0, metric="loss"))["points"] == 4
        exp.close()
        shutil.rmtree(save_dir / "live")
        with test_tube.Experiment(name="live", save_dir=save_dir, record_git=False, formats=("csv",)) as again:
            for i in range(6):
                again.log({"loss": 10.0 + i})
        series = get_json(running.url + "api/series?" + q(name="live", version=0, metric="loss"))
        assert series["ys"] == [10.0 + i for i in range(6)]
        get_json(running.url + "api/series?" + q(name="live", version=0, metric="acc"), status=404)
    finally:
        exp.close()
        running.stop()


# -- the command ------------------------------------------------------------------------------------


CLI = [sys.executable, "-m", "test_tube._app._cli"]


def test_serve_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    """test-tube serve on a folder that does not exist: exit 2, one line, no server."""
    proc = subprocess.run([*CLI, "serve", str(tmp_path / "nope"), "--port", "0"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"test-tube serve: error: {tmp_path / 'nope'} is not a folder"]


def test_serve_a_bad_port_is_a_usage_error(tmp_path: Path) -> None:
    """--port outside 0..65535: exit 2 with usage."""
    proc = subprocess.run([*CLI, "serve", str(tmp_path), "--port", "70000"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2 and "must be 0..65535" in proc.stderr


def test_serve_a_port_in_use_is_a_one_line_error(server: Running, save_dir: Path) -> None:
    """A port another server holds: exit 1, one line saying so."""
    port = server.server.server_port
    proc = subprocess.run([*CLI, "serve", str(save_dir), "--port", str(port)], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1 port {port}" in lines[0]


def test_serve_command_answers_on_localhost_and_stops_on_ctrl_c(save_dir: Path) -> None:
    """The command prints its URL, serves the runs there, and exits 0 on SIGINT."""
    proc = subprocess.Popen([*CLI, "serve", str(save_dir), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = read_line(proc.stdout)
        assert line.startswith(f"serving {save_dir} at http://127.0.0.1:")
        url = line.split(" at ", 1)[1].split()[0]
        assert len(get_json(url + "api/runs")["runs"]) == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


def read_line(stream: Any) -> str:
    """One line from a child's stdout, within TIMEOUT seconds."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(TIMEOUT)
    assert result, "no line from the child in time"
    return result[0]


def test_the_page_files_are_in_the_package() -> None:
    """index.html, app.js, style.css and vendored uPlot with its licence ship inside test_tube."""
    static = Path(test_tube.__file__).parent / "_app" / "_static"
    for name in ("index.html", "app.js", "style.css", "uplot/uPlot.iife.min.js", "uplot/uPlot.min.css",
                 "uplot/LICENSE"):
        assert (static / name).is_file(), name
    assert "MIT" in (static / "uplot" / "LICENSE").read_text()


def test_a_run_whose_files_link_out_of_the_save_dir_is_left_out(tmp_path: Path) -> None:
    """meta_tags.csv or meta.experiment linking to a file outside SAVE_DIR: the run is not listed and not served."""
    save_dir = tmp_path / "logs"
    for name in ("tags", "meta"):
        with test_tube.Experiment(name=name, save_dir=save_dir, record_git=False) as exp:
            exp.log({"loss": 1.0})
    (tmp_path / "secret.csv").write_text("key,value\npassword,hunter2\n")
    (tmp_path / "secret.json").write_text('{"api_key": "hunter2"}')
    tags = save_dir / "tags" / "version_0" / "meta_tags.csv"
    tags.unlink()
    tags.symlink_to(tmp_path / "secret.csv")
    meta = save_dir / "meta" / "version_0" / "meta.experiment"
    meta.unlink()
    meta.symlink_to(tmp_path / "secret.json")
    running = Running(save_dir)
    try:
        status, _, body = get(running.url + "api/runs")
        assert status == 200 and b"hunter2" not in body
        assert get_json(running.url + "api/runs")["runs"] == []
        for name in ("tags", "meta"):
            status, _, body = get(running.url + "api/run?" + q(name=name, version=0))
            assert status == 404 and b"hunter2" not in body
    finally:
        running.stop()


# -- per-rank runs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def per_rank_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Serves ddp/version_3/rank_0 and rank_1 (3 and 5 rows, an image on rank 1) and plain/version_0."""
    running = Running(build_per_rank(tmp_path_factory.mktemp("serve_per_rank") / "logs"))
    yield running
    running.stop()


def test_runs_lists_each_rank_of_a_per_rank_version(per_rank_server: Running) -> None:
    """/api/runs: one entry per rank, id name/version_N/rank_r, rank null for an ordinary run."""
    runs = get_json(per_rank_server.url + "api/runs")["runs"]
    assert [(r["id"], r["rank"]) for r in runs] == [
        ("ddp/version_3/rank_0", 0), ("ddp/version_3/rank_1", 1), ("plain/version_0", None)]
    assert [r["rows"] for r in runs] == [3, 5, 1]
    assert runs[1]["metrics"]["loss"] == [23.0, 20.0, 23.0] and runs[1]["tags"]["worker"] == 1


def test_run_series_and_media_take_a_rank(per_rank_server: Running) -> None:
    """rank=1 names rank 1's folder in /api/run, /api/series and /media."""
    url = per_rank_server.url
    run = get_json(url + "api/run?" + q(name="ddp", version=3, rank=1))
    assert run["id"] == "ddp/version_3/rank_1" and run["rank"] == 1 and run["rows"] == 5
    assert run["media"] == {"sample_png": [[4, "sample_4.png"]]}
    series = get_json(url + "api/series?" + q(name="ddp", version=3, rank=1, metric="loss"))
    assert series["id"] == "ddp/version_3/rank_1"
    assert series["xs"] == [0, 1, 2, 3] and series["ys"] == [20.0, 21.0, 22.0, 23.0]
    assert get_json(url + "api/series?" + q(name="ddp", version=3, rank=0, metric="loss"))["ys"] == [10.0, 11.0, 12.0]
    status, kind, _ = get(url + "media?" + q(name="ddp", version=3, rank=1, file="sample_4.png"))
    assert status == 200 and kind == "image/png"


@pytest.mark.parametrize(("params", "message"), [
    ({"name": "ddp", "version": 3, "rank": 2}, "no run ddp/version_3/rank_2"),
    ({"name": "ddp", "version": 3, "rank": "x"}, "no run ddp/version_3/rank_x"),
    ({"name": "ddp", "version": 3, "rank": ""}, "no run ddp/version_3/rank_"),
    ({"name": "ddp", "version": 3, "rank": "²"}, "no run ddp/version_3/rank_²"),
    ({"name": "ddp", "version": 3, "rank": "../../plain/version_0"}, "no run ddp/version_3/rank_../"),
    ({"name": "ddp", "version": 3}, "holds one run per rank; add rank= (one of 0, 1)"),
    ({"name": "plain", "version": 0, "rank": 0}, "no run plain/version_0/rank_0"),
])
def test_a_bad_rank_is_404(per_rank_server: Running, params: dict[str, Any], message: str) -> None:
    """A rank that find_runs did not list, or no rank for a per-rank version: a JSON 404 naming the run."""
    for endpoint in ("api/run", "api/series"):
        data = get_json(per_rank_server.url + endpoint + "?" + q(metric="loss", **params), status=404)
        assert message in data["error"]
    status, _, _ = get(per_rank_server.url + "media?" + q(file="sample_4.png", **params))
    assert status == 404


def test_a_rank_folder_linking_out_of_the_save_dir_is_not_served(tmp_path: Path) -> None:
    """A rank_<r> symlink to a run outside SAVE_DIR is neither listed nor served, like a version link."""
    outside = build_outside_run(tmp_path / "elsewhere")
    save_dir = tmp_path / "logs"
    with test_tube.Experiment(save_dir=save_dir, name="ddp", version=0, rank=0, per_rank=True,
                              record_git=False) as exp:
        exp.log({"loss": 1.0})
    (save_dir / "ddp" / "version_0" / "rank_1").symlink_to(outside, target_is_directory=True)
    running = Running(save_dir)
    try:
        assert [r["id"] for r in get_json(running.url + "api/runs")["runs"]] == ["ddp/version_0/rank_0"]
        status, _, body = get(running.url + "api/series?" + q(name="ddp", version=0, rank=1, metric="loss"))
        assert status == 404 and b"42" not in body
    finally:
        running.stop()


def test_ordinary_runs_in_the_api_have_a_null_rank(server: Running) -> None:
    """Ordinary runs keep their ids; rank is null, and rank= is not needed."""
    runs = get_json(server.url + "api/runs")["runs"]
    assert all(r["rank"] is None and "rank_" not in r["id"] for r in runs)
    assert get_json(server.url + "api/run?" + q(name="mnist", version=0))["rank"] is None


# -- holes found by trying to break it (issue 22) ------------------------------------------


def test_a_nul_byte_in_a_media_file_name_is_a_404_not_a_500(server: Running) -> None:
    """/media?file=img_0.png%00 (and a NUL mid-name) answers 404 with a message, never 500."""
    for file in ("sample_0.png\0", "sample\0_0.png", "\0"):
        status, kind, body = get(server.url + "media?" + q(name="mnist", version=0, file=file))
        assert status == 404 and kind.startswith("text/html") and b"has no image" in body


def test_images_are_listed_by_the_key_and_step_of_their_rows(tmp_path: Path) -> None:
    """Three images at one step, a long key and a negative step are listed as logged; FIFOs and links out are not."""
    import os

    long_key = "k" * 300 + "_png"
    with test_tube.Experiment(name="img", save_dir=tmp_path, record_git=False) as exp:
        for i in range(3):
            exp.log({"x_png": np.full((4, 4), i, np.uint8), "loss": float(i)}, step=5)
        exp.log({"x_png": np.full((4, 4), 9, np.uint8)}, step=7)
        exp.log({long_key: np.zeros((4, 4), np.uint8)}, step=-2)
        exp.log({"y_jpg": np.zeros((4, 4, 3), np.uint8)}, step=8)
    media = Path(exp.log_dir) / "media"
    cells = test_tube.read(exp.log_dir).to_pydict()
    long_file = cells[long_key][4].split("/", 1)[1]
    (tmp_path / "secret.png").write_bytes(b"secret")
    (media / "x_7.png").unlink()
    (media / "x_7.png").symlink_to(tmp_path / "secret.png")  # the row's file, now a link out of SAVE_DIR
    (media / "y_8.jpg").unlink()
    os.mkfifo(media / "y_8.jpg")  # the row's file, now a FIFO
    os.mkfifo(media / "pipe_1.png")
    running = Running(tmp_path)
    try:
        data = get_json(running.url + "api/run?" + q(name="img", version=0))
        assert data["media"] == {"x_png": [[5, "x_5.png"], [5, "x_5_1.png"], [5, "x_5_2.png"]],
                                 long_key: [[-2, long_file]]}
        status, kind, body = get(running.url + "media?" + q(name="img", version=0, file="x_5_2.png"))
        assert status == 200 and body == (media / "x_5_2.png").read_bytes()
        for file in ("y_8.jpg", "pipe_1.png", "x_7.png"):  # answered at once, never hanging on the FIFO
            status, _, body = get(running.url + "media?" + q(name="img", version=0, file=file))
            assert status == 404 and b"secret" not in body
    finally:
        running.stop()


def test_clients_resetting_mid_response_print_no_traceback(tmp_path: Path) -> None:
    """Twenty clients that reset the connection while a 16 MB image is sent leave stderr without a traceback."""
    import socket
    import struct

    with test_tube.Experiment(name="big", save_dir=tmp_path, record_git=False) as exp:
        exp.log({"x_png": np.zeros((4, 4), np.uint8)}, step=0)
    (Path(exp.log_dir) / "media" / "x_0.png").write_bytes(np.random.default_rng(0).bytes(16 * 2**20))
    proc = subprocess.Popen([*CLI, "serve", str(tmp_path), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    resets = 20
    try:
        assert proc.stdout is not None
        url = read_line(proc.stdout).split(" at ", 1)[1].split()[0]
        host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
        for i in range(resets):
            sock = socket.create_connection((host, port), timeout=TIMEOUT)
            sock.sendall(b"GET /media?name=big&version=0&file=x_0.png HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if i % 2:
                assert sock.recv(1024)  # the answer has started
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
            sock.close()
        status, _, body = get(url + "media?" + q(name="big", version=0, file="x_0.png"))
        assert status == 200 and len(body) == 16 * 2**20
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) <= resets, err
