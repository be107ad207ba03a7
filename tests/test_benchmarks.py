"""The benchmark harness runs end to end on tiny sizes with test_tube and the floors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import test_tube

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

if not hasattr(test_tube, "Experiment"):
    pytest.skip("test_tube.Experiment is not there yet: nothing to benchmark",
                allow_module_level=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny run of the harness (floors + test_tube), its JSON parsed."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--tiny",
         "--peers", "noop,deque,test_tube,imageio_sync", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "tiny.json").read_text())
    result["_stdout"] = proc.stdout
    result["_out"] = str(out)
    return result


def test_meta_names_machine_versions_and_command(tiny: dict) -> None:
    """The JSON says when, where, with what and how it was run."""
    meta = tiny["meta"]
    for key in ("date", "mode", "command", "machine", "versions", "skipped", "targets",
                "config", "rounds_run", "wall_s", "labels"):
        assert key in meta, key
    assert meta["mode"] == "tiny"
    assert meta["skipped"] == {}
    assert set(meta["versions"]) == {"noop", "deque", "test_tube", "imageio_sync"}
    assert meta["machine"]["cores"] >= 1


def test_every_workload_ran_for_test_tube(tiny: dict) -> None:
    """test_tube gets all workloads; the floors get only the scalar loop."""
    peers_by_variant = {v: set(p) for v, p in tiny["summary"].items()}
    assert peers_by_variant["scalars@400"] == {"noop", "deque", "test_tube"}
    for var in ("sparse", "train", "imgstep", "exit_end", "exit_os"):
        assert peers_by_variant[var] == {"test_tube"}, var
    assert peers_by_variant["images"] == {"test_tube", "imageio_sync"}


def test_scalar_figures_and_ratios_present(tiny: dict) -> None:
    """Latency, loop, close, end-to-end, CPU, memory and within-round ratios are reported."""
    s = tiny["summary"]["scalars@400"]
    for peer in ("noop", "deque", "test_tube"):
        fig = s[peer]
        assert fig["ok_rounds"] == 1, fig
        for key in ("lat_median_us", "lat_p99_us", "loop_s", "close_s", "e2e_us_per_step",
                    "cpu_s", "peak_rss_mb", "x_deque"):
            assert isinstance(fig[key], (int, float)), (peer, key)
        assert fig["lat_median_us"] <= fig["lat_p99_us"]
    assert s["deque"]["x_deque"] == pytest.approx(1.0)
    assert s["test_tube"]["x_test_tube"] == pytest.approx(1.0)


def test_test_tube_rows_landed_equal_rows_logged(tiny: dict) -> None:
    """Every row test_tube was given is read back from disk after its process ended."""
    runs = [r for r in tiny["runs"] if r["peer"] == "test_tube"
            and r["workload"] in ("scalars", "sparse", "train", "exit_end")]
    assert len(runs) == 4
    for r in runs:
        assert r["ok"], r.get("error")
        assert r["rows_logged"] > 0
        assert r["rows_landed"] == r["rows_logged"], r["workload"]
        assert r["values_landed"] == r["values_logged"], r["workload"]


def test_exit_and_image_workloads_report_what_they_measured(tiny: dict) -> None:
    """os._exit reports rows kept; image runs report landed images or why they failed."""
    (os_exit,) = [r for r in tiny["runs"] if r["peer"] == "test_tube" and r["workload"] == "exit_os"]
    assert os_exit["ok"] and 0 <= os_exit["rows_landed"] <= os_exit["rows_logged"]
    for r in tiny["runs"]:
        if r["workload"] in ("images", "imgstep"):
            assert r["ok"] or r["error"]
            if r["ok"]:
                assert "images_landed" in r and r["images_logged"] > 0


def test_console_and_markdown_and_chart_render(tiny: dict, tmp_path: Path) -> None:
    """The console table is printed, and the Markdown and chart render from the JSON."""
    sys.path.insert(0, str(BENCH))
    try:
        import report
    finally:
        sys.path.remove(str(BENCH))
    assert "Targets for test_tube" in tiny["_stdout"]
    result = {k: v for k, v in tiny.items() if not k.startswith("_")}
    md = report.markdown(result)
    assert "| test_tube (this repo) |" in md or "test_tube (this repo)" in md
    report.chart(result, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000
