"""Images logged through log(): naming, validation, encoding off the training loop."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pyarrow.parquet as pq
import pytest

import test_tube
from test_tube import Experiment


def rgb(seed: int = 0, shape: tuple[int, ...] = (32, 48, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_png_round_trips_exactly_and_the_cell_holds_a_relative_path(tmp_path: Path) -> None:
    """key fake_png at step 3 writes media/fake_3.png, identical pixels, and the cell says media/fake_3.png."""
    image = rgb()
    with Experiment(name="img", save_dir=tmp_path) as exp:
        exp.log({"loss": 1.0}, step=3)
        exp.log({"fake_png": image, "loss": 0.5}, step=3)
    path = Path(exp.log_dir) / "media" / "fake_3.png"
    assert np.array_equal(iio.imread(path), image)
    table = test_tube.read(exp.log_dir)
    assert table.column("fake_png").to_pylist() == [None, "media/fake_3.png"]
    assert pq.read_table(Path(exp.log_dir) / "metrics.parquet").column("fake_png").to_pylist()[1] == "media/fake_3.png"
    with open(Path(exp.log_dir) / "metrics.csv", newline="") as f:
        assert list(csv.DictReader(f))[1]["fake_png"] == "media/fake_3.png"


def test_the_seed_example_names_test_jpg_as_test_0(tmp_path: Path) -> None:
    """The seed's own example: key test_jpg at step 0 gives media/test_0.jpg, close to the input."""
    image = np.full((40, 40, 3), 120, dtype=np.uint8)
    image[10:30, 10:30] = 200
    with Experiment(name="seed", save_dir=tmp_path) as exp:
        exp.log({"test_jpg": image, "val_err": 0.2})
    decoded = iio.imread(Path(exp.log_dir) / "media" / "test_0.jpg")
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("png", "image_0.png"),
        ("sample_PNG", "sample_0.png"),
        ("png_sample", "sample_0.png"),
        ("my_jpeg_then_png", "my_jpeg_then_0.png"),
        ("val/recon_jpeg", "val_recon_0.jpeg"),
    ],
)
def test_file_names_drop_the_format_word(tmp_path: Path, key: str, expected: str) -> None:
    """The file name is the key without its (last) format word, then _<step> and that format."""
    with Experiment(name="names", save_dir=tmp_path) as exp:
        exp.log({key: rgb()})
    assert os.listdir(Path(exp.log_dir) / "media") == [expected]


def test_names_that_collide_do_not_overwrite(tmp_path: Path) -> None:
    """Two images that would share a name in one run both survive."""
    a, b, c = rgb(1), rgb(2), rgb(3)
    with Experiment(name="collide", save_dir=tmp_path) as exp:
        exp.log({"fake_png": a, "png_fake": b}, step=1)
        exp.log({"fake_png": c}, step=1)
    cells = test_tube.read(exp.log_dir).to_pylist()
    paths = [cells[0]["fake_png"], cells[0]["png_fake"], cells[1]["fake_png"]]
    assert len(set(paths)) == 3
    for path, image in zip(paths, (a, b, c)):
        assert np.array_equal(iio.imread(Path(exp.log_dir) / path), image)


def test_accepted_image_kinds(tmp_path: Path) -> None:
    """Grey, 1/3/4 channels, bool, 16-bit grey PNG and float [0, 1] images are all encoded."""
    grey = rgb(shape=(16, 16, 1))
    with Experiment(name="kinds", save_dir=tmp_path) as exp:
        exp.log({
            "grey_png": grey[..., 0],
            "one_png": grey,
            "rgba_png": rgb(shape=(16, 16, 4)),
            "mask_png": np.eye(16, dtype=bool),
            "deep_png": np.arange(256, dtype=np.uint16).reshape(16, 16) * 200,
            "float_png": np.linspace(0, 1, 256).reshape(16, 16),
        })
    media = Path(exp.log_dir) / "media"
    assert np.array_equal(iio.imread(media / "grey_0.png"), grey[..., 0])
    assert np.array_equal(iio.imread(media / "one_0.png"), grey[..., 0])
    assert iio.imread(media / "rgba_0.png").shape == (16, 16, 4)
    assert np.array_equal(iio.imread(media / "mask_0.png"), np.eye(16, dtype=np.uint8) * 255)
    deep = iio.imread(media / "deep_0.png")
    assert deep.dtype == np.uint16 and np.array_equal(deep, np.arange(256, dtype=np.uint16).reshape(16, 16) * 200)
    assert iio.imread(media / "float_0.png")[-1, -1] == 255


class ArrayLike:
    """Something with __array__, like a CPU tensor or a PIL image."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.data


def test_array_likes_are_images_and_scalars_under_image_keys_are_scalars(tmp_path: Path) -> None:
    """Anything with __array__ under an image key is an image; a float under such a key is a plain value."""
    image = rgb()
    with Experiment(name="like", save_dir=tmp_path) as exp:
        exp.log({"tensor_png": ArrayLike(image), "png_count": 3.0})
    row = test_tube.read(exp.log_dir).to_pylist()[0]
    assert row["png_count"] == 3.0
    assert np.array_equal(iio.imread(Path(exp.log_dir) / row["tensor_png"]), image)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4,), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.full((4, 4), np.nan),
        np.full((4, 4), 2.0),
        np.zeros((4, 4), np.int32),
        np.zeros((4, 4), np.complex64),
        np.zeros((4, 4, 3), np.uint16),
        np.array([["a"]]),
    ],
)
def test_bad_images_raise_at_the_call(tmp_path: Path, bad: np.ndarray) -> None:
    """A bad image raises TypeError or ValueError naming the key, and nothing of that row is queued."""
    with Experiment(name="bad", save_dir=tmp_path) as exp:
        with pytest.raises((TypeError, ValueError), match="'bad_png'"):
            exp.log({"bad_png": bad, "loss": 1.0})
        exp.log({"loss": 2.0})
    table = test_tube.read(exp.log_dir)
    assert table.column("loss").to_pylist() == [2.0]
    assert "bad_png" not in table.column_names
    assert os.listdir(Path(exp.log_dir) / "media") == []


def test_jpeg_alpha_is_rejected(tmp_path: Path) -> None:
    """JPEG cannot store an alpha channel: an RGBA array under a jpg key raises ValueError."""
    with Experiment(name="alpha", save_dir=tmp_path) as exp, pytest.raises(ValueError, match="alpha"):
        exp.log({"x_jpg": rgb(shape=(8, 8, 4))})


_BUFFERS = {
    "rgb": (lambda: rgb(5), lambda a: a),
    "grey with one channel": (lambda: rgb(6, (32, 48, 1)), lambda a: a[..., 0]),
    "uint16 grey": (
        lambda: np.random.default_rng(7).integers(0, 65536, size=(32, 48), dtype=np.uint16),
        lambda a: a,
    ),
    "a strided view": (lambda: rgb(8, (64, 96, 3))[::2, ::2], lambda a: a),
    "a transposed view": (lambda: rgb(11, (48, 32, 3)).transpose(1, 0, 2), lambda a: a),
    "bool": (lambda: rgb(9, (32, 48)) > 127, lambda a: a.astype(np.uint8) * 255),
    "float": (lambda: rgb(10).astype(np.float64) / 255.0, lambda a: np.round(a * 255.0).astype(np.uint8)),
}


class _Tensor:
    """A stand-in for a CPU tensor: ``__array__`` hands out a view of its storage."""

    def __init__(self, storage: np.ndarray) -> None:
        self.storage = storage

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.storage


@pytest.mark.parametrize("kind", [*_BUFFERS, "an __array__ object sharing its storage"])
def test_the_array_is_copied_at_the_call(tmp_path: Path, kind: str) -> None:
    """Changing the buffer after log() does not change the file (training loops reuse buffers)."""
    if kind in _BUFFERS:
        make, expected = _BUFFERS[kind]
        buffer = make()
        value: Any = buffer
    else:
        buffer, expected = rgb(12), (lambda a: a)
        value = _Tensor(buffer)
    original = expected(buffer.copy())
    with Experiment(name="copy", save_dir=tmp_path) as exp:
        exp.log({"frame_png": value})
        buffer[...] = 0
    assert np.array_equal(iio.imread(Path(exp.log_dir) / "media" / "frame_0.png"), original)


def test_save_waits_for_images_and_no_file_is_seen_half_written(tmp_path: Path) -> None:
    """A reader polling media/ during logging only ever sees complete files; save() covers every image."""
    exp = Experiment(name="race", save_dir=tmp_path, image_workers=2)
    media = Path(exp.log_dir) / "media"
    stop = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            for name in os.listdir(media):
                if name.startswith("."):
                    continue  # a temporary name: not published yet
                try:
                    iio.imread(media / name)
                    seen.add(name)
                except Exception as exc:  # a torn file would land here
                    problems.append(f"{name}: {exc}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    images = [rgb(i, (64, 64, 3)) for i in range(40)]
    for i, image in enumerate(images):
        exp.log({"sample_png": image, "i": i})
    exp.save()
    stop.set()
    watcher.join()
    assert problems == []
    assert sorted(os.listdir(media)) == sorted(f"sample_{i}.png" for i in range(40))
    for i, image in enumerate(images):
        assert np.array_equal(iio.imread(media / f"sample_{i}.png"), image)
    exp.close()


def test_pending_images_count_against_the_byte_bound(tmp_path: Path) -> None:
    """With a byte bound of one image, log() waits for the encoder and every image still lands."""
    image = rgb(shape=(64, 64, 3))
    with Experiment(name="bound", save_dir=tmp_path, max_queue_bytes=image.nbytes) as exp:
        for i in range(30):
            exp.log({"x_png": rgb(i, (64, 64, 3))})
    assert len(os.listdir(Path(exp.log_dir) / "media")) == 30


def test_an_encode_failure_surfaces_and_the_writer_keeps_working(tmp_path: Path) -> None:
    """With media/ replaced by a file, save() raises WriterError; the row's scalars land; later images work."""
    exp = Experiment(name="broken", save_dir=tmp_path)
    media = Path(exp.log_dir) / "media"
    shutil.rmtree(media)
    media.write_text("not a folder")
    exp.log({"a_png": rgb(1), "loss": 1.0})
    with pytest.raises(test_tube.WriterError) as info:
        exp.save()
    assert isinstance(info.value.__cause__, OSError)
    media.unlink()
    media.mkdir()
    exp.log({"a_png": rgb(2), "loss": 2.0})
    exp.close()
    table = test_tube.read(exp.log_dir)
    assert table.column("loss").to_pylist() == [1.0, 2.0]
    assert np.array_equal(iio.imread(Path(exp.log_dir) / table.column("a_png")[1].as_py()), rgb(2))


def test_jpeg_quality_is_an_option(tmp_path: Path) -> None:
    """A lower jpeg_quality gives a smaller file for the same image."""
    image = rgb(7, (128, 128, 3))
    sizes = []
    for quality in (20, 95):
        with Experiment(name=f"q{quality}", save_dir=tmp_path, jpeg_quality=quality) as exp:
            exp.log({"x_jpg": image})
        sizes.append(os.path.getsize(Path(exp.log_dir) / "media" / "x_0.jpg"))
    assert sizes[0] < sizes[1]


def test_imageio_is_imported_only_with_the_first_image(tmp_path: Path) -> None:
    """A run without images never imports imageio or starts an encoder thread."""
    code = f"""
        import sys, threading, numpy as np, test_tube
        exp = test_tube.Experiment(name="lazy", save_dir={str(tmp_path)!r})
        exp.log({{"loss": 1.0}})
        exp.save()
        print("imageio" in sys.modules, sum(t.name.startswith("test_tube-media") for t in threading.enumerate()))
        exp.log({{"x_png": np.zeros((4, 4), np.uint8)}})
        exp.save()
        print("imageio" in sys.modules)
        exp.close()
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.split() == ["False", "0", "True"], result.stderr
