"""test_tube.lightning.TestTubeLogger with a real Lightning Trainer on CPU."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

import test_tube

pytest.importorskip("lightning")
torch = pytest.importorskip("torch")

from lightning.pytorch.core.saving import load_hparams_from_tags_csv  # noqa: E402
from lightning.pytorch.utilities.rank_zero import rank_zero_only  # noqa: E402

from lightning_model import Tiny, data, trainer  # noqa: E402
from test_tube.lightning import TestTubeLogger  # noqa: E402


@pytest.fixture(autouse=True)
def quiet() -> Any:
    """Lightning's advice about dataloader workers and the like is noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _meta(log_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(log_dir) / "meta.experiment").read_text())


def _rows(log_dir: str | Path, column: str) -> list[tuple[int, Any]]:
    table = test_tube.read(log_dir)
    return [(s, v) for s, v in zip(table.column("step").to_pylist(), table.column(column).to_pylist())
            if v is not None]


def test_import_test_tube_never_imports_torch_or_lightning() -> None:
    """import test_tube (and creating an Experiment) leaves torch and lightning out of sys.modules."""
    code = ("import sys, tempfile, test_tube\n"
            "test_tube.Experiment(save_dir=tempfile.mkdtemp(), record_git=False).close()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_fit_and_validate_write_every_row_with_lightnings_steps(tmp_path: Path) -> None:
    """fit (2 epochs of 4 steps) then validate: train_loss at steps 0-7, val_loss at 3, 7 and 8, status finished."""
    logger = TestTubeLogger(tmp_path, name="tiny", description="two epochs")
    model = Tiny(arch={"depth": 2, "act": "relu"})
    fit = trainer(logger)
    fit.fit(model, data(), data())
    fit.validate(model, data())
    assert logger.version == 0
    assert logger.log_dir == str(tmp_path / "tiny" / "version_0")
    assert [s for s, _ in _rows(logger.log_dir, "train_loss")] == list(range(8))
    assert [s for s, _ in _rows(logger.log_dir, "val_loss")] == [3, 7, 8]
    assert [e for _, e in _rows(logger.log_dir, "epoch")] == [0] * 5 + [1] * 5 + [2]
    header = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,created_at,train_loss,epoch,val_loss"
    meta = _meta(logger.log_dir)
    assert (meta["status"], meta["end_reason"], meta["description"]) == ("finished", "close", "two epochs")
    assert list((Path(logger.log_dir) / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["version_0"]


def test_lightning_reads_the_hyperparameters_back_from_meta_tags_csv(tmp_path: Path) -> None:
    """load_hparams_from_tags_csv gets back the Namespace's values; nested dicts come back as a/b keys."""
    logger = TestTubeLogger(tmp_path, name="hp")
    logger.log_hyperparams(Namespace(lr=0.001, layers=[64, 32], optimizer="adam", dropout=True, seed=None,
                                     model={"depth": 3, "act": {"name": "gelu"}}, scale=torch.tensor(0.5)))
    logger.finalize("success")
    loaded = load_hparams_from_tags_csv(str(Path(logger.log_dir) / "meta_tags.csv"))
    assert loaded == {"lr": 0.001, "layers": [64, 32], "optimizer": "adam", "dropout": True, "seed": None,
                      "model/depth": 3, "model/act/name": "gelu", "scale": 0.5}


def test_a_failing_fit_is_recorded_failed_and_keeps_its_rows(tmp_path: Path) -> None:
    """An exception in training_step: Lightning calls finalize("failed"); meta says failed, earlier rows are kept."""
    logger = TestTubeLogger(tmp_path, name="fails")
    with pytest.raises(RuntimeError, match="on purpose"):
        trainer(logger).fit(Tiny(fail_at=2), data(), data())
    meta = _meta(logger.log_dir)
    assert (meta["status"], meta["end_reason"]) == ("failed", "close(failed=True)")
    assert [s for s, _ in _rows(logger.log_dir, "train_loss")] == [0, 1]
    assert test_tube.runs(tmp_path).column("status").to_pylist() == ["failed"]


def test_resuming_from_a_checkpoint_continues_the_same_version(tmp_path: Path) -> None:
    """One epoch, then a new Trainer and logger with version=0 resume from the checkpoint: steps 4-7 follow 0-3."""
    first = TestTubeLogger(tmp_path, name="resume")
    trainer(first, max_epochs=1).fit(Tiny(), data(), data())
    [checkpoint] = (Path(first.log_dir) / "checkpoints").glob("*.ckpt")
    second = TestTubeLogger(tmp_path, name="resume", version=0)
    trainer(second).fit(Tiny(), data(), data(), ckpt_path=str(checkpoint))
    assert second.log_dir == first.log_dir
    assert [s for s, _ in _rows(second.log_dir, "train_loss")] == list(range(8))
    assert [s for s, _ in _rows(second.log_dir, "val_loss")] == [3, 7]
    assert _meta(second.log_dir)["status"] == "finished"
    assert [p.name for p in (tmp_path / "resume").iterdir()] == ["version_0"]


def test_log_metrics_takes_tensors_a_prefix_and_any_step_order(tmp_path: Path) -> None:
    """Tensors are stored as numbers, the prefix is joined with '-', and a step may repeat or go back."""
    logger = TestTubeLogger(tmp_path, name="m", prefix="train")
    logger.log_metrics({"loss": torch.tensor(1.5)}, step=5)
    logger.log_metrics({"loss": 1.0}, step=5)
    logger.log_metrics({"loss": torch.tensor([0.5])}, step=2)
    logger.experiment.log({"other": 1})  # an automatic step continues from the last explicit one
    logger.save()
    assert _rows(logger.log_dir, "train-loss") == [(5, 1.5), (5, 1.0), (2, 0.5)]
    assert _rows(logger.log_dir, "other") == [(3, 1)]
    logger.finalize("success")


def test_other_ranks_log_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a rank other than 0 every method does nothing and no folder is created."""
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = TestTubeLogger(tmp_path, name="r1")
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert not isinstance(logger.experiment, test_tube.Experiment)
    assert logger.version == 0
    assert list(tmp_path.iterdir()) == []


def test_the_logger_pickles_without_its_experiment(tmp_path: Path) -> None:
    """A logger with an open Experiment pickles (for spawned processes); the copy opens its own when used."""
    logger = TestTubeLogger(tmp_path, name="p", version=4)
    logger.log_metrics({"loss": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    assert copy._experiment is None and copy.version == 4
    logger.finalize("success")


def _picklable_trainer(tmp_path: Path, name: str) -> tuple[TestTubeLogger, Any]:
    """What Lightning's own logger test does before pickling: open the experiment, log, save."""
    logger = TestTubeLogger(tmp_path, name=name)
    assert isinstance(logger.experiment, test_tube.Experiment)
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    pickle.dumps(logger)
    return logger, trainer(logger)


def test_a_pickled_trainer_logs_into_the_same_version_in_this_process(tmp_path: Path) -> None:
    """The Trainer pickled and loaded here: the copy and the original both log to version 0, no row lost or doubled."""
    logger, fit = _picklable_trainer(tmp_path, "pk")
    copy = pickle.loads(pickle.dumps(fit))
    copy.logger.log_metrics({"acc": 1.0}, step=1)  # no VersionInUseError
    logger.log_metrics({"a": 2.0}, step=2)
    copy.logger.save()
    assert copy.logger.experiment is logger.experiment  # one process, one open Experiment per version
    assert (copy.logger.name, copy.logger.save_dir, copy.logger.version) == ("pk", str(tmp_path), 0)
    copy.logger.finalize("success")
    logger.log_metrics({"a": 3.0}, step=3)  # the original opens the version again after the copy closed it
    logger.finalize("success")
    table = test_tube.read(tmp_path / "pk" / "version_0")
    assert table.select(["step", "a", "acc"]).to_pylist() == [
        {"step": 0, "a": 1.0, "acc": None}, {"step": 1, "a": None, "acc": 1.0},
        {"step": 2, "a": 2.0, "acc": None}, {"step": 3, "a": 3.0, "acc": None}]
    assert [p.name for p in (tmp_path / "pk").iterdir()] == ["version_0"]
    assert _meta(logger.log_dir)["status"] == "finished"


def test_a_pickled_trainer_logs_into_the_same_version_in_a_spawned_process(tmp_path: Path) -> None:
    """The Trainer loaded in a spawned process logs and saves there; the original then goes on in the same version."""
    import multiprocessing

    from lightning_model import log_on_a_copy

    logger, fit = _picklable_trainer(tmp_path, "spawned")
    child = multiprocessing.get_context("spawn").Process(target=log_on_a_copy, args=(pickle.dumps(fit),))
    child.start()
    child.join(240)
    assert child.exitcode == 0
    logger.log_metrics({"a": 2.0}, step=2)
    logger.finalize("success")
    table = test_tube.read(tmp_path / "spawned" / "version_0")
    assert table.select(["step", "a", "acc"]).to_pylist() == [
        {"step": 0, "a": 1.0, "acc": None}, {"step": 1, "a": None, "acc": 1.0}, {"step": 2, "a": 2.0, "acc": None}]
    assert [p.name for p in (tmp_path / "spawned").iterdir()] == ["version_0"]


def test_pickling_a_fresh_logger_pins_its_version(tmp_path: Path) -> None:
    """A logger pickled before its first use claims its version then, so the copy and the original agree."""
    logger = TestTubeLogger(tmp_path, name="fresh")
    copy = pickle.loads(pickle.dumps(logger))
    copy.log_metrics({"x": 1.0}, step=0)
    logger.log_metrics({"x": 2.0}, step=1)
    copy.finalize("success")
    logger.finalize("success")
    assert copy.version == logger.version == 0
    assert _rows(tmp_path / "fresh" / "version_0", "x") == [(0, 1.0), (1, 2.0)]


def test_summary_writer_calls_on_the_loggers_experiment_land_in_both_files(tmp_path: Path) -> None:
    """self.logger.experiment.add_histogram/add_image, as the former logger's docs said: rows and TensorBoard records."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class WithHistogram(Tiny):
        def on_train_epoch_end(self) -> None:
            self.logger.experiment.add_histogram("weights", self.layer.weight, self.global_step)
            self.logger.experiment.add_image("kernel", self.layer.weight.unsqueeze(0).sigmoid(), self.global_step)

    logger = TestTubeLogger(tmp_path, name="sw")
    trainer(logger).fit(WithHistogram(), data(), data())
    assert [s for s, _ in _rows(logger.log_dir, "weights")] == [4, 8]
    assert [s for s, _ in _rows(logger.log_dir, "kernel.png")] == [4, 8]
    events = EventAccumulator(str(Path(logger.log_dir) / "tf"), size_guidance={"histograms": 0, "images": 0})
    events.Reload()
    assert [h.step for h in events.Histograms("weights")] == [4, 8]
    assert [(i.step, i.height, i.width) for i in events.Images("kernel")] == [(4, 1, 4), (8, 1, 4)]
    assert [e.step for e in events.Scalars("train_loss")] == list(range(8))


def test_debug_writes_nothing(tmp_path: Path) -> None:
    """debug=True, as in the former logger: a full fit leaves no test_tube files."""
    logger = TestTubeLogger(tmp_path, name="dbg", debug=True)
    trainer(logger, max_epochs=1, enable_checkpointing=False).fit(Tiny(), data(), data())
    assert not (tmp_path / "dbg").exists()
