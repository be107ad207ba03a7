"""SummaryWriter's methods on Experiment: each lands in read() and in the TensorBoard event file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

import test_tube

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ALL = {"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}


def open_exp(tmp_path: Path, name: str = "sw") -> test_tube.Experiment:
    return test_tube.Experiment(save_dir=tmp_path, name=name, record_git=False)


def events(exp: test_tube.Experiment) -> EventAccumulator:
    acc = EventAccumulator(exp.get_logdir(), size_guidance=ALL)
    acc.Reload()
    return acc


def cells(exp: test_tube.Experiment, column: str) -> list[tuple[int, Any]]:
    table = test_tube.read(exp.log_dir)
    return [(s, v) for s, v in zip(table.column("step").to_pylist(), table.column(column).to_pylist()) if v is not None]


def test_add_scalar_is_a_row_at_its_step_and_a_scalar(tmp_path: Path) -> None:
    """add_scalar(tag, v, step): column tag at that step in read(); the same step and value in TensorBoard."""
    with open_exp(tmp_path) as exp:
        exp.add_scalar("loss", 0.5, 10)
        exp.add_scalar("loss", 0.25, global_step=20)
        exp.add_scalar("loss", 0.125)  # the next step
    assert cells(exp, "loss") == [(10, 0.5), (20, 0.25), (21, 0.125)]
    assert [(e.step, e.value) for e in events(exp).Scalars("loss")] == [(10, 0.5), (20, 0.25), (21, 0.125)]


def test_add_scalar_walltime_is_the_rows_time(tmp_path: Path) -> None:
    """walltime=1.7e9 gives created_at 2023-11-14 22:13:20 UTC and that wall time in TensorBoard."""
    with open_exp(tmp_path) as exp:
        exp.add_scalar("x", 1.0, 0, walltime=1_700_000_000.25)
    created = test_tube.read(exp.log_dir).column("created_at").to_pylist()[0]
    assert created.timestamp() == 1_700_000_000.25
    assert events(exp).Scalars("x")[0].wall_time == 1_700_000_000.25
    with open_exp(tmp_path, "bad") as exp, pytest.raises(TypeError, match="walltime"):
        exp.add_scalar("x", 1.0, 0, walltime="now")  # type: ignore[arg-type]


def test_add_scalars_is_one_row_of_main_tag_slash_keys(tmp_path: Path) -> None:
    """add_scalars("loss", {"train": a, "val": b}, 3): columns loss/train and loss/val at step 3, both scalars."""
    with open_exp(tmp_path) as exp:
        exp.add_scalars("loss", {"train": 0.9, "val": 1.1}, 3)
    table = test_tube.read(exp.log_dir)
    assert table.select(["step", "loss/train", "loss/val"]).to_pylist() == [
        {"step": 3, "loss/train": 0.9, "loss/val": 1.1}]
    acc = events(exp)
    assert [(e.step, e.value) for e in acc.Scalars("loss/val")] == [(3, pytest.approx(1.1))]


@pytest.mark.parametrize(("dataformats", "shape"), [
    ("CHW", (3, 8, 12)), ("HWC", (8, 12, 3)), ("HW", (8, 12)), ("WH", (12, 8)), ("CWH", (1, 12, 8)),
    ("HWC", (8, 12, 4)),
])
def test_add_image_takes_tensorboards_channel_orders(tmp_path: Path, dataformats: str, shape: tuple[int, ...]) -> None:
    """The image in any dataformats is stored as (H=8, W=12[, C]) PNG: a media/ file, a cell, an image summary."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    with open_exp(tmp_path) as exp:
        exp.add_image("inputs/sample", img, 4, dataformats=dataformats)
    [(step, cell)] = cells(exp, "inputs/sample.png")
    assert (step, cell) == (4, "media/inputs_sample_4.png")
    pixels = iio.imread(Path(exp.log_dir) / cell)
    order = [dataformats.index(a) for a in "HWC" if a in dataformats]
    expected = np.transpose(img, order)
    assert pixels.shape[:2] == (8, 12)
    assert np.array_equal(pixels.reshape(expected.shape), expected)
    [image] = events(exp).Images("inputs/sample")
    assert (image.step, image.height, image.width) == (4, 8, 12)
    assert image.encoded_image_string == (Path(exp.log_dir) / cell).read_bytes()


def test_add_image_float_chw_in_0_1(tmp_path: Path) -> None:
    """A float CHW image in [0, 1] (SummaryWriter's default) is scaled to 0-255."""
    img = np.zeros((3, 4, 5), np.float32)
    img[0] = 1.0
    with open_exp(tmp_path) as exp:
        exp.add_image("red", img, 0)
    pixels = iio.imread(Path(exp.log_dir) / cells(exp, "red.png")[0][1])
    assert pixels.shape == (4, 5, 3) and (pixels[..., 0] == 255).all() and (pixels[..., 1:] == 0).all()


def test_add_image_with_the_wrong_dataformats_names_the_tag(tmp_path: Path) -> None:
    """A shape that does not match dataformats raises ValueError naming the tag; nothing is logged."""
    with open_exp(tmp_path) as exp:
        with pytest.raises(ValueError, match="'img'.*dataformats"):
            exp.add_image("img", np.zeros((4, 5)), 0, dataformats="CHW")
        with pytest.raises(ValueError, match="dataformats"):
            exp.add_image("img", np.zeros((4, 5)), 0, dataformats="XY")
    assert test_tube.read(exp.log_dir).num_rows == 0


def test_add_images_lays_a_batch_out_as_one_grid(tmp_path: Path) -> None:
    """10 NCHW images of 4x6 make one 8-column grid image of 8x48: each image in its cell, black after the last."""
    batch = np.stack([np.full((3, 4, 6), 20 * (i + 1), np.uint8) for i in range(10)])
    with open_exp(tmp_path) as exp:
        exp.add_images("batch", batch, 2)
    [(step, cell)] = cells(exp, "batch.png")
    grid = iio.imread(Path(exp.log_dir) / cell)
    assert step == 2 and grid.shape == (8, 48, 3)
    assert (grid[0:4, 6:12] == 40).all() and (grid[4:8, 6:12] == 200).all() and (grid[4:8, 12:] == 0).all()
    [image] = events(exp).Images("batch")
    assert (image.height, image.width) == (8, 48)


def test_add_text_is_a_string_column_and_a_text_summary(tmp_path: Path) -> None:
    """add_text: a str cell at the step; TensorBoard's text plugin gets the same string."""
    with open_exp(tmp_path) as exp:
        exp.add_text("notes", "**first** run", 7)
        with pytest.raises(TypeError, match="notes"):
            exp.add_text("notes", 3, 8)  # type: ignore[arg-type]
    assert cells(exp, "notes") == [(7, "**first** run")]
    [text] = events(exp).Tensors("notes")
    assert (text.step, text.tensor_proto.string_val) == (7, [b"**first** run"])


def test_add_histogram_is_a_json_cell_and_a_histogram(tmp_path: Path) -> None:
    """add_histogram: the cell holds counts summing to the number of values; TensorBoard's histogram has the same."""
    values = np.random.default_rng(3).normal(size=5000)
    with open_exp(tmp_path) as exp:
        exp.add_histogram("weights", values, 1, bins=20)
        exp.add_histogram("weights", values * 2, 2)
        with pytest.raises(ValueError, match="weights"):
            exp.add_histogram("weights", [1.0, float("nan")], 3)
    [(s1, c1), (s2, c2)] = cells(exp, "weights")
    h1 = json.loads(c1)["histogram"]
    assert s1 == 1 and len(h1["bucket"]) == 20 and sum(h1["bucket"]) == 5000 == h1["num"]
    assert h1["min"] == values.min() and h1["max"] == values.max() and h1["bucket_limit"][-1] == values.max()
    assert s2 == 2 and sum(json.loads(c2)["histogram"]["bucket"]) == 5000
    got = events(exp).Histograms("weights")
    assert [h.step for h in got] == [1, 2]
    assert list(got[0].histogram_value.bucket) == h1["bucket"]
    assert got[0].histogram_value.num == 5000


def test_add_hparams_tags_and_logs_the_metrics(tmp_path: Path) -> None:
    """add_hparams: the hyperparameters become tags (meta_tags.csv, HParams) and the metrics a row."""
    with open_exp(tmp_path) as exp:
        exp.add_hparams({"lr": 0.1, "bs": 32}, {"hparam/acc": 0.9}, global_step=5)
        with pytest.raises(ValueError, match="run_name"):
            exp.add_hparams({"lr": 0.1}, {}, run_name="other")
    assert (Path(exp.log_dir) / "meta_tags.csv").read_text().splitlines() == ["key,value", "lr,0.1", "bs,32"]
    assert cells(exp, "hparam/acc") == [(5, 0.9)]
    acc = events(exp)
    assert acc.Tensors("_hparams_/session_start_info")
    assert [(e.step, e.value) for e in acc.Scalars("hparam/acc")] == [(5, pytest.approx(0.9))]


def test_add_figure_renders_matplotlib_to_an_image(tmp_path: Path) -> None:
    """add_figure: a 4x3-inch figure at 50 dpi becomes a 150x200 RGB image; the figure is closed."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 3), dpi=50)
    plt.plot([0, 1], [1, 0])
    with open_exp(tmp_path) as exp:
        exp.add_figure("curve", fig, 9)
    assert not plt.fignum_exists(fig.number)
    [(step, cell)] = cells(exp, "curve.png")
    assert step == 9 and iio.imread(Path(exp.log_dir) / cell).shape == (150, 200, 3)
    assert [(i.step, i.height, i.width) for i in events(exp).Images("curve")] == [(9, 150, 200)]


def test_flush_makes_everything_readable_before_close(tmp_path: Path) -> None:
    """flush() is a barrier: the rows and the event records are on disk when it returns."""
    exp = open_exp(tmp_path)
    exp.add_scalar("a", 1.0, 0)
    exp.add_image("im", np.zeros((3, 2, 2), np.uint8), 0)
    exp.flush()
    assert cells(exp, "a") == [(0, 1.0)]
    acc = events(exp)
    assert [e.value for e in acc.Scalars("a")] == [1.0] and len(acc.Images("im")) == 1
    exp.close()


@pytest.mark.parametrize("method", ["add_graph", "add_embedding", "add_audio", "add_video", "add_pr_curve",
                                    "add_mesh", "add_custom_scalars", "add_image_with_boxes"])
def test_unsupported_methods_raise_not_implemented_naming_the_alternative(tmp_path: Path, method: str) -> None:
    """add_graph and the like raise NotImplementedError (a TestTubeError) that says what to use instead."""
    with open_exp(tmp_path) as exp:
        with pytest.raises(NotImplementedError, match=f"{method}.*(SummaryWriter|add_image)") as info:
            getattr(exp, method)(object())
    assert isinstance(info.value, test_tube.TestTubeError)


def test_add_methods_do_nothing_in_debug_mode(tmp_path: Path) -> None:
    """In debug mode every add_* returns and nothing is written."""
    exp = test_tube.Experiment(save_dir=tmp_path, debug=True)
    exp.add_scalar("a", 1.0, 0)
    exp.add_image("b", np.zeros((3, 2, 2), np.uint8))
    exp.add_histogram("c", [1.0, 2.0])
    exp.add_text("d", "x")
    exp.flush()
    exp.close()
    assert list(tmp_path.iterdir()) == []


def test_torch_tensors_are_taken_by_add_image_add_histogram_and_add_scalar(tmp_path: Path) -> None:
    """A CHW float tensor, a tensor of weights and a 0-d tensor: read with detach().cpu(), stored as numpy would be."""
    torch = pytest.importorskip("torch")
    img = torch.zeros(3, 4, 6)
    img[1] = 1.0
    weights = torch.arange(100, dtype=torch.float32)
    with open_exp(tmp_path) as exp:
        exp.add_image("t", img, 0)
        exp.add_histogram("w", weights, 0, bins=10)
        exp.add_scalar("s", torch.tensor(0.5), 0)
    pixels = iio.imread(Path(exp.log_dir) / cells(exp, "t.png")[0][1])
    assert pixels.shape == (4, 6, 3) and (pixels[..., 1] == 255).all() and (pixels[..., 0] == 0).all()
    histogram = json.loads(cells(exp, "w")[0][1])["histogram"]
    assert histogram["bucket"] == [10.0] * 10 and histogram["sum"] == 4950.0
    assert cells(exp, "s") == [(0, 0.5)]
