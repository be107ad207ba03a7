"""Code written for test-tube 0.7.5 and old Lightning keeps working, or fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import test_tube


def test_positional_arguments_follow_0_7_5_order(tmp_path: Path) -> None:
    """Experiment(save_dir, name, debug, version, autosave, description) lands where 0.7.5 put it."""
    exp = test_tube.Experiment(str(tmp_path), "old_script", False, 3, True, "positional", record_git=False)
    exp.log({"loss": 1.0})
    exp.close()
    assert exp.log_dir == os.path.join(str(tmp_path), "old_script", "version_3")
    assert test_tube.read(exp.log_dir).column("loss").to_pylist() == [1.0]
    assert test_tube.runs(tmp_path).column("description").to_pylist() == ["positional"]


def test_positional_debug_flag_is_debug_not_a_version(tmp_path: Path) -> None:
    """The third positional argument is debug, as in 0.7.5: Experiment(dir, name, True) writes nothing."""
    exp = test_tube.Experiment(str(tmp_path), "dbg", True)
    exp.log({"loss": 1.0})
    exp.close()
    assert exp.debug
    assert list(tmp_path.iterdir()) == []


def test_name_positional_with_save_dir_keyword_is_rejected(tmp_path: Path) -> None:
    """A name given first and save_dir by keyword is a clash, not a silent swap."""
    with pytest.raises(TypeError, match="save_dir"):
        test_tube.Experiment("my_exp", save_dir=tmp_path)  # type: ignore[misc]
    assert list(tmp_path.iterdir()) == []


def test_swapped_save_dir_and_name_are_rejected(tmp_path: Path) -> None:
    """Experiment(name, path) in the newer order would put a path in the name: that raises, naming the argument."""
    with pytest.raises(ValueError, match="name"):
        test_tube.Experiment("my_exp", str(tmp_path / "logs"))
    assert not (tmp_path / "logs").exists()


def test_rank_zero_writes(tmp_path: Path) -> None:
    """rank=0 (what old Lightning passed) is an ordinary run."""
    with test_tube.Experiment(save_dir=tmp_path, name="r", rank=0, record_git=False) as exp:
        exp.log({"a": 1})
    assert test_tube.read(exp.log_dir).column("a").to_pylist() == [1]


def test_rank_above_zero_writes_nothing(tmp_path: Path) -> None:
    """As in 0.7.5, an Experiment of rank 1 does nothing: no folder, no rows, close() is fine."""
    exp = test_tube.Experiment(save_dir=tmp_path, name="r", rank=1, record_git=False)
    exp.tag({"lr": 0.1})
    exp.log({"a": 1})
    exp.save()
    exp.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rank", [-1, 1.5, True, "0"])
def test_bad_rank_is_rejected(tmp_path: Path, rank: object) -> None:
    """A rank that is not an int >= 0 raises ValueError naming rank."""
    with pytest.raises(ValueError, match="rank"):
        test_tube.Experiment(save_dir=tmp_path, name="r", rank=rank)  # type: ignore[arg-type]


def test_old_module_path_imports_the_experiment() -> None:
    """from test_tube.log import Experiment, as 0.7.5 scripts and old Lightning did."""
    from test_tube.log import Experiment

    assert Experiment is test_tube.Experiment


def test_str_of_hyperparameters_is_the_0_7_5_table() -> None:
    """print(hparams) shows a rule, 'Hyperparameters:' and one aligned 'name: value' line per argument."""
    parser = test_tube.HyperOptArgumentParser(strategy="grid_search")
    parser.opt_list("--learning_rate", options=[0.1, 0.01], type=float, default=0.1, tunable=True)
    parser.add_argument("--optimizer", default="adam")
    hparams = parser.parse_args([])
    assert str(hparams) == (
        "-" * 100 + "\n"
        "Hyperparameters:\n"
        "learning_rate       : 0.1\n"
        "optimizer           : adam\n"
    )
    trial = next(hparams.trials(1))
    assert str(trial).splitlines()[2] == "learning_rate       : 0.1"
    assert repr(hparams).startswith("HyperOptNamespace(")


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((3,), {}, "debug"),  # a version where debug goes
        ((False, 0, "my description"), {}, "autosave"),  # a release that put description before autosave
        ((False, 0, True, True), {}, "description"),
        ((), {"create_git_tag": "yes"}, "create_git_tag"),
    ],
)
def test_arguments_in_another_releases_order_are_rejected(
    tmp_path: Path, args: tuple[object, ...], kwargs: dict[str, object], named: str
) -> None:
    """A number or text where a flag goes, or a flag where the description goes, raises naming the argument."""
    with pytest.raises(TypeError, match=named):
        test_tube.Experiment(str(tmp_path), "exp", *args, record_git=False, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_sys_exit_0_inside_the_with_block_is_a_normal_end(tmp_path: Path) -> None:
    """sys.exit(0) in `with Experiment(...)` (a job that asked to be requeued) records finished, not failed."""
    with pytest.raises(SystemExit), test_tube.Experiment(save_dir=tmp_path, name="e", record_git=False) as exp:
        exp.log({"a": 1})
        raise SystemExit(0)
    with pytest.raises(SystemExit), test_tube.Experiment(save_dir=tmp_path, name="f", record_git=False) as failed:
        failed.log({"a": 1})
        raise SystemExit(3)
    assert test_tube.runs(tmp_path).column("status").to_pylist() == ["finished", "failed"]
