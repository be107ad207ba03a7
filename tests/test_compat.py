"""Code written for test-tube 0.7.5 and old Lightning keeps working, or fails loudly."""

from __future__ import annotations

import json
import os
import pickle
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


# -- the behaviours test-tube 0.7.5's own test files check, and its Experiment API -------------


def test_slurm_time_to_seconds_reads_0_7_5s_examples() -> None:
    """MM:SS, D-HH:MM:SS, H:MM:SS, HH:MM:SS and a bare number (seconds), as 0.7.5's hpc test reads them."""
    from test_tube import SlurmCluster

    hparams = test_tube.HyperOptArgumentParser().parse_args([])
    cluster = SlurmCluster(log_path="/tmp/unused", hyperparam_optimizer=hparams)
    examples = {"15:00": 900, "1-12:20:12": 130_812, "1:20:12": 4_812, "00:20:12": 1_212, "00:00:12": 12, "12": 12}
    assert {text: cluster.slurm_time_to_seconds(text) for text in examples} == examples
    assert SlurmCluster.slurm_time_to_seconds("2-06") == 2 * 86_400 + 6 * 3_600  # days-hours, as Slurm means it
    for bad in ("", "1:2:3:4", "ten", "1-2-3"):
        with pytest.raises(ValueError, match="slurm_time_to_seconds"):
            SlurmCluster.slurm_time_to_seconds(bad)


def test_slurm_cluster_imports_from_the_package_as_0_7_5s_examples_do() -> None:
    """from test_tube import SlurmCluster is test_tube.hpc.SlurmCluster."""
    from test_tube import SlurmCluster
    from test_tube.hpc import SlurmCluster as FromModule

    assert SlurmCluster is FromModule


def test_strategies_behave_as_0_7_5s_strategy_tests_check() -> None:
    """Grid search: all 8 combinations, or the first 5; random search: 5 distinct; unknown: ValueError; no count: TypeError."""
    from test_tube.hyper_opt_utils import strategies

    flat = [[{"idx": i, "val": v, "name": "learning_rate"} for i, v in enumerate([1e-4, 1e-3, 1e-2, 1e-1])],
            [{"idx": 4 + i, "val": v, "name": "decay"} for i, v in enumerate([0.99, 0.999])]]
    assert len(strategies.generate_trials("grid_search", flat, nb_trials=None)) == 8
    assert len(strategies.generate_trials("grid_search", flat, nb_trials=5)) == 5
    drawn = strategies.generate_trials("random_search", flat, nb_trials=5)
    assert len(drawn) == 5 and len({tuple(d["val"] for d in trial) for trial in drawn}) == 5
    with pytest.raises(ValueError):
        strategies.generate_trials("unknown_strategy", flat, nb_trials=None)
    with pytest.raises(TypeError):
        strategies.generate_trials("random_search", flat, nb_trials=None)


def test_str_and_exp_hash_are_0_7_5s(tmp_path: Path) -> None:
    """str(exp) is 'Exp: <name>, v: <version>' and exp_hash '<name>_v<version>', as in meta.experiment."""
    with test_tube.Experiment(save_dir=tmp_path, record_git=False) as exp:
        assert str(exp) == "Exp: default, v: 0"
        assert exp.exp_hash == "default_v0"
    assert json.loads((Path(exp.log_dir) / "meta.experiment").read_text())["exp_hash"] == "default_v0"


def test_log_and_tag_take_0_7_5s_keyword_names(tmp_path: Path) -> None:
    """log(metrics_dict=...) and tag(tag_dict=...) work; giving both names is a TypeError naming them."""
    with test_tube.Experiment(save_dir=tmp_path, record_git=False) as exp:
        exp.log(metrics_dict={"loss": 1.0})
        exp.log(metrics_dict={"loss": 0.5}, global_step=7)
        exp.tag(tag_dict={"lr": 0.1})
        with pytest.raises(TypeError, match="metrics_dict"):
            exp.log({"loss": 1.0}, metrics_dict={"loss": 2.0})
        with pytest.raises(TypeError, match="tag_dict"):
            exp.tag({"a": 1}, tag_dict={"b": 2})
    table = test_tube.read(exp.log_dir)
    assert table.select(["step", "loss"]).to_pylist() == [{"step": 0, "loss": 1.0}, {"step": 7, "loss": 0.5}]
    assert exp.tags == {"lr": 0.1}


def test_metrics_of_a_reopened_version_are_its_past_rows(tmp_path: Path) -> None:
    """exp.metrics after reopening: every earlier row as a dict without its missing keys, created_at as text."""
    with test_tube.Experiment(save_dir=tmp_path, name="m", record_git=False) as first:
        first.log({"train_loss": 0.9, "epoch": 0})
        first.log({"val_loss": 1.1})
    again = test_tube.Experiment(save_dir=tmp_path, name="m", version=0, record_git=False)
    rows = again.metrics
    assert [{k: v for k, v in r.items() if k != "created_at"} for r in rows] == [
        {"step": 0, "train_loss": 0.9, "epoch": 0}, {"step": 1, "val_loss": 1.1}]
    assert all(len(r["created_at"]) == 26 and r["created_at"][10] == " " for r in rows)
    again.log({"train_loss": 0.7, "epoch": 1})
    assert len(again.metrics) == 3
    again.close()
    assert test_tube.Experiment(save_dir=tmp_path, debug=True).metrics == []


def test_get_meta_copy_pickles_and_reopens_the_version(tmp_path: Path) -> None:
    """get_meta_copy() is picklable; get_non_ddp_exp() on it appends to the same version once the original closed."""
    exp = test_tube.Experiment(save_dir=tmp_path, name="ddp", description="d", record_git=False)
    exp.tag({"lr": 0.1})
    exp.log({"a": 1})
    meta = pickle.loads(pickle.dumps(exp.get_meta_copy()))
    exp.close()
    assert (meta.name, meta.version, meta.exp_hash, meta.tags, meta.description) == ("ddp", 0, "ddp_v0", {"lr": 0.1}, "d")
    with meta.get_non_ddp_exp() as reopened:
        reopened.log({"a": 2})
    assert test_tube.read(exp.log_dir).column("a").to_pylist() == [1, 2]


def test_on_exit_flush_and_the_tensorboardx_paths(tmp_path: Path) -> None:
    """on_exit() does nothing; flush() saves; the tensorboardx paths are version_<N>/tf and tf/scalars.json."""
    exp = test_tube.Experiment(save_dir=tmp_path, name="p", record_git=False)
    exp.log({"a": 1})
    exp.on_exit()
    exp.flush()
    assert test_tube.read(exp.log_dir).column("a").to_pylist() == [1]
    tf = os.path.join(str(tmp_path), "p", "version_3", "tf")
    assert exp.get_tensorboardx_path("p", 3) == tf
    assert exp.get_tensorboardx_scalars_path("p", 3) == os.path.join(tf, "scalars.json")
    exp.close()


def test_add_meta_from_hyperopt_tags_the_trial(tmp_path: Path) -> None:
    """A HyperOptArgumentParser trial is tagged like argparse(); 0.7.5's get_current_trial_meta() list is tagged too."""
    parser = test_tube.HyperOptArgumentParser(strategy="grid_search")
    parser.opt_list("--lr", options=[0.1, 0.01], type=float, default=0.1, tunable=True)
    trial = next(parser.parse_args([]).trials(1))

    class OldOptimizer:
        def get_current_trial_meta(self) -> list[dict[str, object]]:
            return [{"hypo_lr": 0.1}, {"hypo_layers": 3}]

    with test_tube.Experiment(save_dir=tmp_path, record_git=False) as exp:
        exp.add_meta_from_hyperopt(trial)
        exp.add_meta_from_hyperopt(OldOptimizer())
        with pytest.raises(TypeError, match="add_meta_from_hyperopt"):
            exp.add_meta_from_hyperopt(3)
    assert exp.tags["lr"] == 0.1 and exp.tags["hypo_lr"] == 0.1 and exp.tags["hypo_layers"] == 3
