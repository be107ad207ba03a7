"""The loggers under test: how to open, log to, close, and read back each one.

This module is imported by the child process (``_child.py``) inside each peer's
own virtual environment, so at module level it uses only the standard library;
every peer's package is imported inside its adapter.

An adapter is built with the run folder and gives three things to the child:

* ``log(row)``   -- log one row (a dict of floats); peers that need a step keep
  their own counter, exactly as a user's loop would pass ``step=i``;
* ``log_image(img)`` -- log one HxWx3 uint8 image, or ``None`` when the peer
  has no image support;
* ``close()``    -- the peer's own finish/close/end call.

``count(peer, folder)`` reads back what landed on disk with each peer's own
files and returns ``{key: number of values}`` (images under the key
``"sample"``).  It runs in a separate process after the child has exited.
"""

from __future__ import annotations

import collections
import csv
import glob
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".bench-venvs"


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    group: str  # "main" = the dev venv (.venv); else a .bench-venvs/<group>
    images: bool
    module: str  # imported by the probe
    floor: bool = False
    env: dict[str, str] = field(default_factory=dict)


PEERS: dict[str, Peer] = {p.key: p for p in [
    Peer("noop", "floor: no-op method call", "main", False, "collections", floor=True),
    Peer("deque", "floor: deque.append(copy+ts)", "main", False, "collections", floor=True),
    Peer("test_tube", "test_tube (this repo)", "main", True, "test_tube"),
    Peer("imageio_sync", "imageio.imwrite, synchronous", "main", True, "imageio", floor=True),
    Peer("test_tube_075", "test-tube 0.7.5", "torch", True, "test_tube"),
    Peer("tb_torch", "torch SummaryWriter", "torch", True, "torch.utils.tensorboard"),
    Peer("tensorboardx", "tensorboardX", "tensorboardx", True, "tensorboardX"),
    Peer("csvlogger", "Lightning CSVLogger", "torch", False, "lightning_fabric.loggers"),
    Peer("mlflow_sync", "MLflow file store, sync", "mlflow", True, "mlflow",
         env={"MLFLOW_ALLOW_FILE_STORE": "true"}),
    Peer("mlflow_async", "MLflow file store, async", "mlflow", True, "mlflow",
         env={"MLFLOW_ALLOW_FILE_STORE": "true"}),
    Peer("wandb", "W&B offline", "wandb", True, "wandb", env={"WANDB_MODE": "offline"}),
    Peer("aim", "Aim", "aim", True, "aim"),
    Peer("dvclive", "DVCLive", "dvclive", True, "dvclive"),
]}

# Environment every child gets: one BLAS thread, no telemetry, nothing outside
# the run folder.  {dir} is replaced by the run folder.
CHILD_ENV = {
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1", "BLIS_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1", "PYTHONWARNINGS": "ignore",
    "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
    "AIM_UI_TELEMETRY_ENABLED": "0", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
    "WANDB_DIR": "{dir}", "WANDB_CONFIG_DIR": "{dir}/.wandb-config",
    "WANDB_CACHE_DIR": "{dir}/.wandb-cache", "WANDB_DATA_DIR": "{dir}/.wandb-data",
    "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "GIT_CEILING_DIRECTORIES": "{parent}",
}


def python_for(peer: Peer) -> Path:
    if peer.group == "main":
        dev = ROOT / ".venv" / "bin" / "python"
        return dev if dev.exists() else Path(sys.executable)
    return VENVS / peer.group / "bin" / "python"


def group_state(peer: Peer) -> str | None:
    """None when the peer's environment is ready, else why it is not."""
    if peer.group == "main":
        return None
    env_dir = VENVS / peer.group
    if (env_dir / "READY").exists():
        return None
    log = VENVS / f"{peer.group}.log"
    if log.exists():
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]
        tail = lines[-1][:160] if lines else "empty log"
        return f"environment '{peer.group}' failed to install: {tail}"
    return f"environment '{peer.group}' not set up (run benchmarks/setup_peers.py)"


def group_versions(peer: Peer) -> dict[str, str]:
    if peer.group == "main":
        return {}
    ready = VENVS / peer.group / "READY"
    try:
        return json.loads(ready.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- adapters

class Adapter:
    log: Callable[[dict], Any]
    log_image: Callable[[Any], Any] | None = None

    def close(self) -> None:
        pass


class NoopAdapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        class Sink:
            def noop(self, row: dict) -> None:
                pass
        self.log = Sink().noop


class DequeAdapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        self.q: collections.deque = collections.deque()

        def log(row: dict, _append=self.q.append, _ns=time.time_ns) -> None:
            _append((_ns(), row.copy()))
        self.log = log


class ImageioSyncAdapter(Adapter):
    """The synchronous baseline for images: one imageio.imwrite per call."""

    def __init__(self, d: Path, opts: dict) -> None:
        import imageio.v3 as iio
        media = d / "media"
        media.mkdir()
        step = iter(range(10**12))

        def log_image(img: Any) -> None:
            iio.imwrite(media / f"sample_{next(step)}.png", img)
        self.log_image = log_image
        self.log = lambda row: None


class TestTubeAdapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        import inspect
        import test_tube
        kw: dict[str, Any] = {"name": "bench", "save_dir": str(d), "autosave": True}
        params = inspect.signature(test_tube.Experiment).parameters
        fi = opts.get("flush_interval")
        self.flush_interval_used = None
        if fi is not None and "flush_interval" in params:
            kw["flush_interval"] = fi
            self.flush_interval_used = fi
        self.exp = test_tube.Experiment(**kw)
        self.log_dir = str(self.exp.log_dir)
        self.log = self.exp.log
        exp_log = self.exp.log
        self.log_image = lambda img: exp_log({"sample_png": img})

    def close(self) -> None:
        self.exp.close()


class TestTube075Adapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        from test_tube import Experiment
        self.exp = Experiment(name="bench", save_dir=str(d), autosave=False)
        self.log = self.exp.log
        exp_log = self.exp.log
        self.log_image = lambda img: exp_log({"png_sample": img})

    def close(self) -> None:
        self.exp.save()
        self.exp.close()


class _TBAdapter(Adapter):
    def _setup(self, writer: Any) -> None:
        self.w = writer
        step = iter(range(10**12))
        add_scalar, add_image = writer.add_scalar, writer.add_image

        def log(row: dict) -> None:
            i = next(step)
            for k, v in row.items():
                add_scalar(k, v, i)
        self.log = log
        istep = iter(range(10**12))
        self.log_image = lambda img: add_image("sample", img, next(istep), dataformats="HWC")

    def close(self) -> None:
        self.w.close()


class TBTorchAdapter(_TBAdapter):
    def __init__(self, d: Path, opts: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self._setup(SummaryWriter(log_dir=str(d / "tb")))


class TensorboardXAdapter(_TBAdapter):
    def __init__(self, d: Path, opts: dict) -> None:
        from tensorboardX import SummaryWriter
        self._setup(SummaryWriter(logdir=str(d / "tb")))


class CSVLoggerAdapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        from lightning_fabric.loggers import CSVLogger
        self.lg = CSVLogger(root_dir=str(d), name="bench")
        step = iter(range(10**12))
        log_metrics = self.lg.log_metrics
        self.log = lambda row: log_metrics(row, next(step))

    def close(self) -> None:
        self.lg.finalize("success")


class MLflowAdapter(Adapter):
    def __init__(self, d: Path, opts: dict, synchronous: bool) -> None:
        import inspect
        import mlflow
        self.mlflow = mlflow
        mlflow.set_tracking_uri((d / "mlruns").as_uri())
        mlflow.set_experiment("bench")
        mlflow.start_run()
        step = iter(range(10**12))
        log_metrics = mlflow.log_metrics
        self.log = lambda row: log_metrics(row, step=next(step), synchronous=synchronous)
        istep = iter(range(10**12))
        log_image = mlflow.log_image
        if "synchronous" in inspect.signature(log_image).parameters:
            self.log_image = lambda img: log_image(img, key="sample", step=next(istep),
                                                   synchronous=synchronous)
        else:
            self.log_image = lambda img: log_image(img, key="sample", step=next(istep))

    def close(self) -> None:
        self.mlflow.end_run()


class WandbAdapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        import wandb
        self.wandb = wandb
        self.run = wandb.init(project="bench", dir=str(d), mode="offline")
        run_log = self.run.log
        self.log = run_log
        Image = wandb.Image
        self.log_image = lambda img: run_log({"sample": Image(img)})

    def close(self) -> None:
        self.run.finish()


class AimAdapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        import aim
        self.run = aim.Run(repo=str(d / "aim"), experiment="bench")
        track = self.run.track
        step = iter(range(10**12))
        self.log = lambda row: track(row, step=next(step))
        Image = aim.Image
        istep = iter(range(10**12))
        self.log_image = lambda img: track(Image(img), name="sample", step=next(istep))

    def close(self) -> None:
        self.run.close()


class DVCLiveAdapter(Adapter):
    def __init__(self, d: Path, opts: dict) -> None:
        from dvclive import Live
        # No git repository here, so no DVC experiment is saved either way;
        # say so explicitly instead of letting it warn on every run.
        self.live = Live(dir=str(d / "dvclive"), save_dvc_exp=False)
        live = self.live
        log_metric, next_step = live.log_metric, live.next_step

        def log(row: dict) -> None:
            for k, v in row.items():
                log_metric(k, v)
            next_step()
        self.log = log
        istep = iter(range(10**12))

        def log_image(img: Any) -> None:
            live.log_image(f"sample_{next(istep)}.png", img)
        self.log_image = log_image

    def close(self) -> None:
        self.live.end()


def make_adapter(key: str, d: Path, opts: dict) -> Adapter:
    if key == "noop":
        return NoopAdapter(d, opts)
    if key == "deque":
        return DequeAdapter(d, opts)
    if key == "imageio_sync":
        return ImageioSyncAdapter(d, opts)
    if key == "test_tube":
        return TestTubeAdapter(d, opts)
    if key == "test_tube_075":
        return TestTube075Adapter(d, opts)
    if key == "tb_torch":
        return TBTorchAdapter(d, opts)
    if key == "tensorboardx":
        return TensorboardXAdapter(d, opts)
    if key == "csvlogger":
        return CSVLoggerAdapter(d, opts)
    if key == "mlflow_sync":
        return MLflowAdapter(d, opts, synchronous=True)
    if key == "mlflow_async":
        return MLflowAdapter(d, opts, synchronous=False)
    if key == "wandb":
        return WandbAdapter(d, opts)
    if key == "aim":
        return AimAdapter(d, opts)
    if key == "dvclive":
        return DVCLiveAdapter(d, opts)
    raise KeyError(key)


# --------------------------------------------------------------------------- readers

def _csv_counts(path: Path) -> dict[str, int]:
    """Non-empty cells per column of a CSV; a torn last line (no newline) is dropped."""
    counts: dict[str, int] = collections.Counter()
    if not path.exists():
        return counts
    data = path.read_text(errors="replace")
    if data and not data.endswith("\n"):
        data = data[: data.rfind("\n") + 1]
    rows = csv.reader(data.splitlines())
    header = next(rows, None)
    if header is None:
        return counts
    for row in rows:
        for name, cell in zip(header, row):
            if cell != "":
                counts[name] += 1
    return counts


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message (no schema)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            val, i = buf[i:i + ln], i + ln
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, val


def _tfevents_counts(folder: Path) -> dict[str, int]:
    """Count Summary values per tag in TFRecord event files, without TensorFlow.

    Event: field 5 = Summary; Summary: field 1 = Value; Value: field 1 = tag,
    2 = simple_value, 4 = image, 8 = tensor.  A torn final record ends the scan.
    """
    counts: dict[str, int] = collections.Counter()
    for f in sorted(glob.glob(str(folder / "**" / "*tfevents*"), recursive=True)):
        data = Path(f).read_bytes()
        i = 0
        while i + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, i)
            start = i + 12
            if start + length + 4 > len(data):
                break
            rec = data[start:start + length]
            i = start + length + 4
            try:
                for num, _, val in _fields(rec):
                    if num != 5:
                        continue
                    for snum, _, sval in _fields(val):
                        if snum != 1:
                            continue
                        tag, kinds = None, set()
                        for vnum, _, vval in _fields(sval):
                            if vnum == 1:
                                tag = vval.decode(errors="replace")
                            elif vnum in (2, 4, 8):
                                kinds.add(vnum)
                        if tag is not None and kinds:
                            counts["sample" if 4 in kinds and tag.startswith("sample") else tag] += 1
            except (ValueError, IndexError):
                break
    return counts


def _mlflow_counts(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    for f in glob.glob(str(folder / "mlruns" / "*" / "*" / "metrics" / "*")):
        with open(f) as fh:
            counts[os.path.basename(f)] += sum(1 for ln in fh if ln.endswith("\n"))
    pngs = glob.glob(str(folder / "mlruns" / "*" / "*" / "artifacts" / "images" / "sample*.png"))
    counts["sample"] = len(pngs)
    return counts


def _wandb_records(path: Path):
    """Yield the payload of each complete record of a .wandb (LevelDB log format) file."""
    data = path.read_bytes()
    block = 32768
    i = 7  # ":W&B" + magic (2) + version (1)
    pending = b""
    while i + 7 <= len(data):
        room = block - (i % block)
        if room < 7:
            i += room
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, i)
        i += 7
        if i + length > len(data):
            return
        chunk, i = data[i:i + length], i + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:
            continue
        else:
            return


def _wandb_counts(folder: Path) -> dict[str, int]:
    from wandb.proto import wandb_internal_pb2 as pb
    counts: dict[str, int] = collections.Counter()
    for f in glob.glob(str(folder / "wandb" / "*run-*" / "run-*.wandb")):
        for payload in _wandb_records(Path(f)):
            rec = pb.Record()
            try:
                rec.ParseFromString(payload)
            except Exception:  # a torn record at the end of a killed run
                break
            if rec.WhichOneof("record_type") != "history":
                continue
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    counts[key] += 1
    pngs = glob.glob(str(folder / "wandb" / "*run-*" / "files" / "media" / "images" / "sample_*.png"))
    counts["sample"] = len(pngs)  # image files on disk, not history entries
    return counts


def _aim_counts(folder: Path) -> dict[str, int]:
    from aim import Repo, Run
    from aim.sdk.index_manager import RepoIndexManager
    from aim.sdk.sequences.image_sequence import Images
    counts: dict[str, int] = collections.Counter()
    repo_path = folder / "aim"
    if not (repo_path / ".aim").exists():
        return counts
    repo = Repo.from_path(str(repo_path))
    mng = RepoIndexManager(repo)
    for h in repo.list_all_runs():
        mng.index(h)  # a read-only Run sees only indexed runs
        run = Run(h, repo=repo, read_only=True)
        for name, ctx, _ in run.iter_metrics_info():
            if name.startswith("__system__"):
                continue
            m = run.get_metric(name, ctx)
            counts[name] += len(m.values.sparse_list()[0])
        for name, ctx, _ in run.iter_sequence_info_by_type(Images.allowed_dtypes()):
            seq = run._get_sequence("images", name, ctx)
            counts[name] += len(seq.values.sparse_list()[0]) if seq is not None else 0
    return counts


def _dvclive_counts(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    base = folder / "dvclive"
    for f in glob.glob(str(base / "plots" / "metrics" / "**" / "*.tsv"), recursive=True):
        lines = Path(f).read_text(errors="replace").splitlines(keepends=True)
        counts[Path(f).stem] += sum(1 for ln in lines[1:] if ln.endswith("\n"))
    counts["sample"] = len(glob.glob(str(base / "plots" / "images" / "sample_*.png")))
    return counts


def _test_tube_counts(folder: Path) -> dict[str, int]:
    import test_tube
    info = json.loads((folder / "_bench_info.json").read_text())
    log_dir = info["log_dir"]
    counts: dict[str, int] = collections.Counter()
    try:
        table = test_tube.read(log_dir)
    except Exception as e:  # nothing flushed at all is a valid outcome after os._exit
        counts["_read_error"] = 1
        sys.stderr.write(f"test_tube.read failed: {e!r}\n")
        table = None
    if table is not None:
        for name in table.column_names:
            counts[name] = len(table) - table.column(name).null_count
        counts["_rows"] = len(table)
    counts["sample"] = len(glob.glob(os.path.join(log_dir, "media", "sample_*.png")))
    return counts


def count(key: str, folder: Path) -> dict[str, int]:
    if key in ("noop", "deque"):
        return {}
    if key == "imageio_sync":
        return {"sample": len(glob.glob(str(folder / "media" / "sample_*.png")))}
    if key == "test_tube":
        return dict(_test_tube_counts(folder))
    if key == "test_tube_075":
        c = _csv_counts(folder / "bench" / "version_0" / "metrics.csv")
        c["sample"] = len(glob.glob(str(folder / "bench" / "version_0" / "media" / "*.png")))
        return dict(c)
    if key in ("tb_torch", "tensorboardx"):
        return dict(_tfevents_counts(folder / "tb"))
    if key == "csvlogger":
        return dict(_csv_counts(folder / "bench" / "version_0" / "metrics.csv"))
    if key in ("mlflow_sync", "mlflow_async"):
        return dict(_mlflow_counts(folder))
    if key == "wandb":
        return dict(_wandb_counts(folder))
    if key == "aim":
        return dict(_aim_counts(folder))
    if key == "dvclive":
        return dict(_dvclive_counts(folder))
    raise KeyError(key)
