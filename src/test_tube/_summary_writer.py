"""The parts of ``Experiment`` that test-tube 0.7.5 users called: SummaryWriter's ``add_*`` and 0.7.5's extras.

In 0.7.5 ``Experiment`` subclassed TensorBoard's ``SummaryWriter``.  Here every
``add_*`` method is a ``log()`` or ``tag()`` of ours, so it lands in our files
(``metrics.csv``, ``metrics.parquet``, ``media/``, ``test_tube.read()``) and, through
the TensorBoard sink, in ``tf/events.out.tfevents.*``.  None of it needs torch
or TensorFlow; a tensor is read with ``.detach().cpu().numpy()`` when it has them.

Where each lands:

* ``add_scalar(tag, v, step)``: column ``tag`` at ``step``; ``add_scalars(main, {k: v})``
  columns ``main/k`` (one run, where SummaryWriter made a run per key);
* ``add_image`` / ``add_images`` / ``add_figure``: column ``<tag>.png``, a cell
  ``media/<file>.png`` and the PNG in ``media/``; TensorBoard shows it as ``tag``;
* ``add_text``: a string column ``tag``;
* ``add_histogram``: a string column ``tag`` whose cells are JSON,
  ``{"histogram": {"min", "max", "num", "sum", "sum_squares", "bucket_limit", "bucket"}}``
  (``bucket[i]`` values fell in ``(bucket_limit[i-1], bucket_limit[i]]``); TensorBoard shows a histogram;
* ``add_hparams(hparams, metrics)``: ``tag(hparams)`` and a row of ``metrics``.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import LogTypeError, LogValueError, TestTubeError
from ._engine import _exit
from ._engine._tensorboard import TF_DIR

if TYPE_CHECKING:
    from ._experiment import Experiment


class NotSupportedError(TestTubeError, NotImplementedError):
    """A SummaryWriter method test_tube cannot write (graphs, embeddings, audio...); the message names what to use."""


_TORCH_WRITER = ("torch.utils.tensorboard.SummaryWriter(log_dir=exp.get_logdir()).{0}(...): "
                 "TensorBoard shows its records in this run beside ours")

_UNSUPPORTED = {
    "add_graph": _TORCH_WRITER,
    "add_onnx_graph": _TORCH_WRITER,
    "add_openvino_graph": _TORCH_WRITER,
    "add_embedding": _TORCH_WRITER,
    "add_audio": _TORCH_WRITER + "; or save the file yourself under exp.log_dir",
    "add_video": _TORCH_WRITER + "; or log its frames as images with add_images",
    "add_pr_curve": _TORCH_WRITER + "; or log precision and recall as scalars",
    "add_pr_curve_raw": _TORCH_WRITER,
    "add_mesh": _TORCH_WRITER,
    "add_custom_scalars": _TORCH_WRITER,
    "add_custom_scalars_multilinechart": _TORCH_WRITER,
    "add_custom_scalars_marginchart": _TORCH_WRITER,
    "add_image_with_boxes": "draw the boxes into the image array, then add_image",
}


def _unsupported(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotSupportedError(f"Experiment.{name}() is not supported by test_tube; use "
                                + _UNSUPPORTED[name].format(name))
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Not supported: raises :class:`NotSupportedError` naming the alternative ({_UNSUPPORTED[name].format(name)})."
    return method


class SummaryWriterMethods:
    """SummaryWriter's methods, as ``log()``/``tag()`` calls; mixed into ``Experiment``."""

    if TYPE_CHECKING:  # what the methods use of Experiment
        name: str
        version: int
        save_dir: str
        log_dir: str
        tags: dict[str, Any]
        _inert: bool
        _closed: bool
        _pid: int
        _lock: threading.Lock
        _folder: Any  # its log_dir: the version folder, or on object storage the local spool

        def log(self, metrics: Mapping[str, Any] | None = None, step: int | None = None, *,
                global_step: int | None = None, metrics_dict: Mapping[str, Any] | None = None) -> None: ...
        def _log_slow(self, metrics: Any, step: Any, global_step: Any, metrics_dict: Any = None, *,
                      walltime: float | None = None) -> None: ...
        def tag(self, tags: Mapping[str, Any] | None = None, *, tag_dict: Mapping[str, Any] | None = None) -> None: ...
        def argparse(self, namespace: Any) -> None: ...
        def save(self, timeout: float | None = None) -> None: ...
        def get_data_path(self, exp_name: str, exp_version: int) -> str: ...

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None, new_style: bool = False, double_precision: bool = False) -> None:
        """Log ``{tag: scalar_value}`` at ``global_step`` (the next step if None), at ``walltime`` (seconds) if given.

        Never does I/O, like ``log()``.  ``new_style``/``double_precision`` (how
        SummaryWriter encodes) change nothing: TensorBoard gets a float32 scalar
        and our files the value as logged.
        """
        _check_tag("add_scalar", tag)
        self._log_at({tag: scalar_value}, global_step, walltime)

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any],
                    global_step: int | None = None, walltime: float | None = None) -> None:
        """Log ``{f"{main_tag}/{k}": v}`` in one row (SummaryWriter made a run per key; here it is one run)."""
        _check_tag("add_scalars", main_tag)
        if not isinstance(tag_scalar_dict, Mapping):
            raise LogTypeError(f"add_scalars(): tag_scalar_dict must be a dict, got {type(tag_scalar_dict).__name__}",
                               key=main_tag, value_type=type(tag_scalar_dict))
        self._log_at({f"{main_tag}/{_tag_text('add_scalars', k)}": v for k, v in tag_scalar_dict.items()},
                     global_step, walltime)

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None,
                  walltime: float | None = None, dataformats: str = "CHW") -> None:
        """Log one image: ``media/<tag>_<step>.png``, column ``<tag>.png``; TensorBoard shows it under ``tag``.

        ``dataformats`` names the axes, as SummaryWriter takes them: ``CHW``
        (default), ``HWC``, ``HW``, ``WH``, ``CWH``, ``WHC``, ... with C of 1, 3 or 4.
        Floats are taken as [0, 1], uint8 as 0-255.
        """
        _check_tag("add_image", tag)
        self._log_at({f"{tag}.png": to_hwc(tag, img_tensor, dataformats)}, global_step, walltime)

    def add_images(self, tag: str, img_tensor: Any, global_step: int | None = None,
                   walltime: float | None = None, dataformats: str = "NCHW") -> None:
        """Log a batch of images as one grid image (8 to a row, as SummaryWriter lays them out)."""
        _check_tag("add_images", tag)
        batch = _array(img_tensor)
        formats = dataformats.upper()
        if "N" not in formats or batch.ndim != len(formats):
            raise LogValueError(f"add_images(): {tag!r} has shape {batch.shape}, which does not match "
                                f"dataformats={dataformats!r} (with an N axis)", key=tag)
        batch = np.moveaxis(batch, formats.index("N"), 0)
        frames = [to_hwc(tag, image, formats.replace("N", "")) for image in batch]
        self._log_at({f"{tag}.png": _grid(tag, frames)}, global_step, walltime)

    def add_figure(self, tag: str, figure: Any, global_step: int | None = None, close: bool = True,
                   walltime: float | None = None) -> None:
        """Render a matplotlib figure (or a list of them, as a grid) and log it as an image.

        Needs matplotlib (``pip install test-tube[plot]``); ``close`` closes the figure afterwards.
        """
        _check_tag("add_figure", tag)
        figures = list(figure) if isinstance(figure, (list, tuple)) else [figure]
        frames = [_render(tag, f, close) for f in figures]
        image = frames[0] if len(frames) == 1 else _grid(tag, frames)
        self._log_at({f"{tag}.png": image}, global_step, walltime)

    def add_text(self, tag: str, text_string: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        """Log a string column ``tag``; TensorBoard shows it in its Text tab (markdown)."""
        _check_tag("add_text", tag)
        if not isinstance(text_string, str):
            raise LogTypeError(f"add_text(): {tag!r} must be a str, got {type(text_string).__name__}", key=tag,
                               value_type=type(text_string))
        self._log_at({tag: text_string}, global_step, walltime)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None,
                      bins: str | int | Sequence[float] = "tensorflow", walltime: float | None = None,
                      max_bins: int | None = None) -> None:
        """Log the histogram of ``values``: a JSON cell in column ``tag`` (see the module), a histogram in TensorBoard.

        ``bins`` is what ``numpy.histogram`` takes (a count, edges, or a rule
        such as ``"auto"``); ``"tensorflow"`` (the default) means ``"auto"``, at
        most ``max_bins`` (default 255) bins.  The histogram is computed now,
        on the calling thread.
        """
        _check_tag("add_histogram", tag)
        self._log_at({tag: histogram_cell(tag, values, bins, max_bins)}, global_step, walltime)

    def add_hparams(self, hparam_dict: Mapping[str, Any], metric_dict: Mapping[str, Any],
                    hparam_domain_discrete: Mapping[str, Sequence[Any]] | None = None, run_name: str | None = None,
                    global_step: int | None = None) -> None:
        """``tag(hparam_dict)`` (TensorBoard's HParams tab shows them) and a row of ``metric_dict``.

        SummaryWriter put these in a new run; here they belong to this run, so
        ``run_name`` must be None (open another Experiment for another run).
        ``hparam_domain_discrete`` only shaped TensorBoard's filter widgets and is not needed.
        """
        if run_name is not None:
            raise LogValueError(f"add_hparams(run_name={run_name!r}): an Experiment is one run; "
                                f"open another Experiment for another run", key="run_name")
        if not isinstance(metric_dict, Mapping):
            raise LogTypeError(f"add_hparams(): metric_dict must be a dict, got {type(metric_dict).__name__}",
                               value_type=type(metric_dict))
        self.tag(hparam_dict)
        if metric_dict:
            self.log(dict(metric_dict), step=global_step)

    def flush(self) -> None:
        """Block until every row logged so far is on disk, TensorBoard's file included (``save()``)."""
        self.save()

    def get_logdir(self) -> str:
        """The folder of this run's TensorBoard files, ``<log_dir>/tf`` (as SummaryWriter's ``get_logdir``)."""
        return os.path.join(self.log_dir, TF_DIR)

    # -- 0.7.5's own additions ----------------------------------------------------------

    @property
    def exp_hash(self) -> str:
        """``"<name>_v<version>"``, as in ``meta.experiment``."""
        return f"{self.name}_v{self.version}"

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (or in a forked child, which cannot write)."""
        return bool(self._closed) or _exit.forked(self._pid)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every row of this version so far, as 0.7.5 kept them: a list of dicts, missing keys left out.

        Each row holds ``step``, ``created_at`` (``"YYYY-MM-DD HH:MM:SS.ffffff"``,
        UTC) and its values; an image cell is its ``media/`` path.  It flushes
        (``save()``, unless closed) and reads the files, so it costs a read of the whole run:
        not for the training loop.  ``[]`` in debug mode and on ranks above 0.
        """
        if self._inert:
            return []
        if not self.closed:
            self.save()
        from ._store._read import read

        path, filesystem = self._folder.rows_at(closed=self.closed)
        rows = read(path, filesystem=filesystem).to_pylist()
        out = []
        for row in rows:
            created = row.get("created_at")
            if created is not None:
                row["created_at"] = str(created.astimezone(timezone.utc).replace(tzinfo=None))
            out.append({k: v for k, v in row.items() if v is not None})
        return out

    def get_meta_copy(self) -> MetaCopy:
        """A picklable stand-in holding this run's name, version, folders and tags (0.7.5's DDPExperiment)."""
        return MetaCopy(self)  # type: ignore[arg-type]  # self is always an Experiment

    def on_exit(self) -> None:
        """Does nothing, as in 0.7.5: the final flush at interpreter exit is automatic."""

    def add_meta_from_hyperopt(self, hypo: Any) -> None:
        """Tag the current trial's hyperparameters.

        ``hypo`` is a namespace from ``HyperOptArgumentParser`` (its values are
        tagged, as ``argparse()`` does) or any object with 0.7.5's
        ``get_current_trial_meta()``, a list of one-key dicts.
        """
        get_meta = getattr(hypo, "get_current_trial_meta", None)
        if callable(get_meta):
            for entry in get_meta():
                self.tag(entry)
        elif hasattr(hypo, "__dict__"):
            self.argparse(hypo)
        else:
            raise LogTypeError(f"add_meta_from_hyperopt() takes a hyperparameter namespace, got {type(hypo).__name__}",
                               value_type=type(hypo))

    def get_tensorboardx_path(self, exp_name: str, exp_version: int) -> str:
        """The ``tf/`` folder of ``exp_name``/``exp_version``, where the TensorBoard files go."""
        return os.path.join(self.get_data_path(exp_name, exp_version), TF_DIR)

    def get_tensorboardx_scalars_path(self, exp_name: str, exp_version: int) -> str:
        """``tf/scalars.json`` of that version: the path 0.7.5 returned (nothing writes that file; read the CSV)."""
        return os.path.join(self.get_tensorboardx_path(exp_name, exp_version), "scalars.json")

    # -- helpers --------------------------------------------------------------------------

    def _log_at(self, row: dict[str, Any], step: int | None, walltime: float | None) -> None:
        if walltime is None:
            self.log(row, step=step)
        else:
            self._log_slow(row, step, None, walltime=walltime)

    def _tags_snapshot(self) -> dict[str, Any]:
        """The tags as they are now (for the writer thread)."""
        with self._lock:
            return dict(self.tags)


for _name in _UNSUPPORTED:
    setattr(SummaryWriterMethods, _name, _unsupported(_name))


class MetaCopy:
    """What 0.7.5's ``get_meta_copy()`` gave: the run's description without its writer, picklable.

    ``get_non_ddp_exp()`` opens the version again (in this or another process, once the original is closed).
    """

    def __init__(self, exp: Experiment) -> None:
        self.name = exp.name
        self.version = exp.version
        self.save_dir = exp.save_dir
        self.log_dir = exp.log_dir
        self.debug = exp.debug
        self.autosave = exp.autosave
        self.description = exp.description
        self.create_git_tag = exp.create_git_tag
        self.created_at = exp.created_at
        self.exp_hash = f"{exp.name}_v{exp.version}"
        self.tags = dict(exp.tags)
        self.rank = exp.rank

    def get_non_ddp_exp(self) -> Experiment:
        """An open Experiment on the same version (rows are appended to it)."""
        from ._experiment import Experiment

        return Experiment(save_dir=self.save_dir, name=self.name, debug=self.debug, version=self.version,
                          autosave=self.autosave, description=self.description, rank=self.rank)

    def __repr__(self) -> str:
        return f"<MetaCopy of {self.exp_hash} log_dir={self.log_dir!r}>"


# -- conversions ----------------------------------------------------------------------------


def _check_tag(method: str, tag: Any) -> None:
    _tag_text(method, tag)


def _tag_text(method: str, tag: Any) -> str:
    if type(tag) is not str or not tag:
        raise LogTypeError(f"{method}(): the tag must be a non-empty str, got {tag!r}", key=tag, value_type=type(tag))
    return tag


def _array(value: Any) -> np.ndarray:
    """A numpy array of an array, a list or a tensor (torch's on any device, via detach().cpu())."""
    for step in ("detach", "cpu"):
        method = getattr(value, step, None)
        if callable(method) and not isinstance(value, np.ndarray):
            value = method()
    return np.asarray(value)


_AXES = frozenset("CHW")


def to_hwc(tag: str, image: Any, dataformats: str) -> np.ndarray:
    """An image in ``dataformats`` (``CHW``, ``HWC``, ``HW``, ...) as (H, W) or (H, W, C)."""
    pixels = _array(image)
    formats = dataformats.upper()
    if len(set(formats)) != len(formats) or not set(formats) <= _AXES or not {"H", "W"} <= set(formats):
        raise LogValueError(f"dataformats={dataformats!r} for {tag!r}: expected H, W and optionally C, "
                            f"such as 'CHW', 'HWC' or 'HW'", key=tag)
    if pixels.ndim != len(formats):
        raise LogValueError(f"image {tag!r} has shape {pixels.shape}, which does not match dataformats={dataformats!r}",
                            key=tag)
    order = [formats.index(axis) for axis in "HWC" if axis in formats]
    pixels = np.transpose(pixels, order)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return pixels


def _grid(tag: str, frames: list[np.ndarray], columns: int = 8) -> np.ndarray:
    """Images of one size laid out ``columns`` to a row, the gaps black."""
    if not frames:
        raise LogValueError(f"{tag!r}: no images to log", key=tag)
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise LogValueError(f"{tag!r}: images of different shapes {sorted(shapes)} cannot share a grid", key=tag)
    first = frames[0]
    n = len(frames)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    height, width = first.shape[:2]
    grid = np.zeros((rows * height, cols * width, *first.shape[2:]), first.dtype)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = frame
    return grid


def _render(tag: str, figure: Any, close: bool) -> np.ndarray:
    """RGB pixels of a matplotlib figure, drawn with the Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise LogTypeError(f"add_figure({tag!r}) needs matplotlib: pip install test-tube[plot]", key=tag) from exc
    if not hasattr(figure, "savefig"):
        raise LogTypeError(f"add_figure(): {tag!r} must be a matplotlib Figure, got {type(figure).__name__}",
                           key=tag, value_type=type(figure))
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # type: ignore[no-untyped-call]
    rgba = canvas.buffer_rgba()  # type: ignore[no-untyped-call]
    pixels = np.asarray(rgba)[:, :, :3].copy()
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return pixels


def histogram_cell(tag: str, values: Any, bins: Any, max_bins: int | None) -> str:
    """The JSON cell ``add_histogram`` logs (TensorBoard's HistogramProto fields)."""
    try:
        data = _array(values).astype(np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise LogTypeError(f"add_histogram(): {tag!r} could not be read as numbers: {exc}", key=tag) from exc
    if data.size == 0:
        raise LogValueError(f"add_histogram(): {tag!r} has no values", key=tag)
    if not np.isfinite(data).all():
        raise LogValueError(f"add_histogram(): {tag!r} contains NaN or infinity", key=tag)
    limit = 255 if max_bins is None else max_bins
    rule = "auto" if bins == "tensorflow" else bins
    try:
        edges = np.histogram_bin_edges(data, bins=rule)
    except (TypeError, ValueError) as exc:
        raise LogValueError(f"add_histogram(): bins={bins!r} for {tag!r}: {exc}", key=tag) from exc
    if len(edges) - 1 > limit:
        edges = np.linspace(edges[0], edges[-1], limit + 1)
    counts, edges = np.histogram(data, bins=edges)
    cell = {
        "min": float(data.min()),
        "max": float(data.max()),
        "num": float(data.size),
        "sum": float(data.sum()),
        "sum_squares": float(np.dot(data, data)),
        "bucket_limit": [float(e) for e in edges[1:]],
        "bucket": [float(c) for c in counts],
    }
    return json.dumps({"histogram": cell})


def read_histogram(cell: str) -> dict[str, Any]:
    """The fields of a histogram cell (the inverse of what ``add_histogram`` logs)."""
    value: dict[str, Any] = json.loads(cell)["histogram"]
    return value

