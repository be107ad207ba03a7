"""Tests for HyperOptArgumentParser, its namespace, the strategies and the parallel runners."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pickle
import random
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_tube.argparse_hopt import HyperOptArgumentParser, HyperOptNamespace, TrialError
from test_tube.hyper_opt_utils import strategies  # noqa: F401  (the original import path must work)
from test_tube.hyper_opt_utils.strategies import generate_trials

METHODS = {"trials", "generate_trials", "optimize_parallel_cpu", "optimize_parallel_gpu"}


@pytest.fixture(autouse=True)
def _not_in_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every test start outside a Jupyter kernel, whatever the test runner imported."""
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)


def grid_parser(**kwargs: Any) -> HyperOptArgumentParser:
    parser = HyperOptArgumentParser(**kwargs)
    parser.opt_list("--layers", options=[1, 2, 3], type=int, default=2, tunable=True)
    parser.opt_list("--optimizer", options=["adam", "sgd"], default="adam", tunable=True)
    parser.opt_list("--batch_size", options=[16, 32], type=int, default=32)
    parser.add_argument("--data", default="mnist")
    return parser


def combos(trials: list[HyperOptNamespace]) -> list[tuple[Any, Any]]:
    return [(t.layers, t.optimizer) for t in trials]


# --- argparse keeps working ------------------------------------------------------------


def test_is_an_argument_parser_that_parses_like_argparse() -> None:
    """Plain add_argument, parse_known_args and errors behave as in argparse."""
    parser = HyperOptArgumentParser(prog="train")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--flag", action="store_true")
    assert isinstance(parser, argparse.ArgumentParser)
    hparams, extras = parser.parse_known_args(["--lr", "0.5", "--flag", "--other", "1"])
    assert (hparams.lr, hparams.flag, extras) == (0.5, True, ["--other", "1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--lr", "not-a-number"])


def test_exit_on_error_false_raises_argument_error() -> None:
    """With exit_on_error=False a bad value raises argparse.ArgumentError."""
    parser = HyperOptArgumentParser(exit_on_error=False)
    parser.add_argument("--lr", type=float)
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--lr", "x"])


def test_subparsers_and_intermixed_parsing_work() -> None:
    """Subcommands and parse_intermixed_args still work and return a HyperOptNamespace."""
    parser = HyperOptArgumentParser()
    parser.opt_list("--layers", options=[1, 2], type=int, default=1, tunable=True)
    sub = parser.add_subparsers(dest="command")
    fit = sub.add_parser("fit")
    fit.add_argument("--epochs", type=int, default=3)
    hparams = parser.parse_args(["fit", "--epochs", "7"])
    assert (hparams.command, hparams.epochs) == ("fit", 7)
    assert [t.layers for t in hparams.trials()] == [1, 2]

    flat = HyperOptArgumentParser()
    flat.add_argument("files", nargs="*")
    flat.add_argument("--n", type=int)
    mixed = flat.parse_intermixed_args(["a", "--n", "2", "b"])
    assert isinstance(mixed, HyperOptNamespace)
    assert (mixed.files, mixed.n) == (["a", "b"], 2)


def test_unknown_strategy_raises_value_error() -> None:
    """An unknown strategy is a ValueError from the parser and from generate_trials."""
    with pytest.raises(ValueError, match="strategy"):
        HyperOptArgumentParser(strategy="bayes")
    with pytest.raises(ValueError, match="strategy"):
        generate_trials("bayes", [[1, 2]])


def test_namespace_holds_only_parsed_values_and_callable_methods() -> None:
    """vars() of the parsed namespace is the parsed values; the search methods are bound methods."""
    hparams = grid_parser().parse_args(["--data", "cifar"])
    assert vars(hparams) == {"layers": 2, "optimizer": "adam", "batch_size": 32, "data": "cifar"}
    for name in METHODS:
        assert callable(getattr(hparams, name))
    public = {name for name in dir(hparams) if not name.startswith("_")}
    assert all(callable(getattr(hparams, name)) for name in public - set(vars(hparams)))


def test_dest_that_hides_a_method_warns() -> None:
    """An argument named like a namespace method warns that it hides the method."""
    parser = HyperOptArgumentParser()
    with pytest.warns(UserWarning, match="trials"):
        parser.add_argument("--trials", type=int)


# --- grid and random search ------------------------------------------------------------


def test_grid_search_is_the_product_in_stable_order() -> None:
    """Grid search yields every combination, the last tunable argument varying fastest."""
    trials = grid_parser().parse_args([]).generate_trials()
    assert combos(trials) == [
        (1, "adam"), (1, "sgd"), (2, "adam"), (2, "sgd"), (3, "adam"), (3, "sgd"),
    ]


def test_grid_search_is_limited_by_nb_trials() -> None:
    """nb_trials keeps the first combinations of the grid."""
    hparams = grid_parser().parse_args([])
    assert combos(hparams.generate_trials(4)) == [(1, "adam"), (1, "sgd"), (2, "adam"), (2, "sgd")]
    assert hparams.generate_trials(0) == []
    assert len(hparams.generate_trials(100)) == 6


def test_trials_is_a_generator_of_namespaces() -> None:
    """trials(n) returns an iterator of HyperOptNamespace trials."""
    trials = grid_parser().parse_args([]).trials(2)
    assert iter(trials) is trials
    first = next(trials)
    assert isinstance(first, HyperOptNamespace)
    assert (first.layers, first.optimizer) == (1, "adam")


def test_non_tunable_arguments_keep_their_parsed_value_in_every_trial() -> None:
    """Arguments not marked tunable keep the command-line value in every trial."""
    hparams = grid_parser().parse_args(["--batch_size", "64", "--data", "svhn"])
    trials = hparams.generate_trials()
    assert {(t.batch_size, t.data) for t in trials} == {(64, "svhn")}


def test_random_search_draws_distinct_combinations_at_most_all() -> None:
    """Random search gives distinct combinations, and asking 100 of 6 gives all 6."""
    hparams = grid_parser(strategy="random_search").parse_args([])
    three = combos(hparams.generate_trials(3))
    assert len(three) == len(set(three)) == 3
    everything = combos(hparams.generate_trials(100))
    assert len(everything) == 6
    assert set(everything) == {(n, o) for n in (1, 2, 3) for o in ("adam", "sgd")}


def test_random_search_requires_nb_trials() -> None:
    """Random search without nb_trials raises TypeError."""
    hparams = grid_parser(strategy="random_search").parse_args([])
    with pytest.raises(TypeError, match="nb_trials"):
        hparams.generate_trials()
    with pytest.raises(TypeError, match="nb_trials"):
        generate_trials("random_search", [[1, 2]])


def test_bad_nb_trials_is_rejected() -> None:
    """A negative or non-int nb_trials is a ValueError or TypeError."""
    hparams = grid_parser().parse_args([])
    with pytest.raises(ValueError, match="nb_trials"):
        hparams.generate_trials(-1)
    with pytest.raises(TypeError, match="nb_trials"):
        hparams.generate_trials(2.0)  # type: ignore[arg-type]


def test_random_search_over_a_huge_space_returns_distinct_trials() -> None:
    """A space with more combinations than sys.maxsize can still be sampled."""
    flat = [list(range(1000))] * 7  # 10**21 combinations
    trials = generate_trials("random_search", flat, 50, seed=3)
    assert len(set(trials)) == 50


# --- strategies module (original import path) ------------------------------------------


def flat_params(sizes: list[int]) -> list[list[dict[str, Any]]]:
    return [
        [{"idx": i, "val": v, "name": f"arg{i}"} for v in range(size)]
        for i, size in enumerate(sizes)
    ]


def test_generate_trials_returns_tuples_of_param_dicts() -> None:
    """Each trial is a tuple with one {'idx', 'val', 'name'} dict per argument."""
    flat = flat_params([2, 3])
    trials = generate_trials("grid_search", flat)
    assert trials[0] == ({"idx": 0, "val": 0, "name": "arg0"}, {"idx": 1, "val": 0, "name": "arg1"})
    assert all(isinstance(t, tuple) and len(t) == 2 for t in trials)
    assert generate_trials("grid_search", flat, nb_trials=None) == trials


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5), max_size=4),
    nb_trials=st.integers(min_value=0, max_value=700),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_strategies_counts_and_distinctness(sizes: list[int], nb_trials: int, seed: int) -> None:
    """Grid gives min(n, product) first combinations; random gives as many distinct ones; inputs stay unmodified."""
    flat = flat_params(sizes)
    snapshot = [list(values) for values in flat]
    total = math.prod(sizes)
    grid = generate_trials("grid_search", flat, nb_trials)
    assert len(grid) == min(nb_trials, total)
    chosen = generate_trials("random_search", flat, nb_trials, seed=seed)
    keys = [tuple(item["val"] for item in trial) for trial in chosen]
    assert len(keys) == len(set(keys)) == min(nb_trials, total)
    full_grid = {tuple(item["val"] for item in t) for t in generate_trials("grid_search", flat)}
    assert set(keys) <= full_grid
    assert flat == snapshot


# --- seeding ---------------------------------------------------------------------------


def range_parser(**kwargs: Any) -> HyperOptArgumentParser:
    parser = HyperOptArgumentParser(strategy="random_search", **kwargs)
    parser.opt_range("--lr", low=1e-5, high=1e-1, type=float, log_base=10, nb_samples=5, tunable=True)
    parser.opt_list("--layers", options=[1, 2, 3], type=int, tunable=True)
    return parser


def values(trials: list[HyperOptNamespace]) -> list[tuple[Any, Any]]:
    return [(t.lr, t.layers) for t in trials]


def test_parser_seed_makes_trials_identical() -> None:
    """Two parsers with the same seed produce the same trials, call after call."""
    first = range_parser(seed=7).parse_args([])
    second = range_parser(seed=7).parse_args([])
    assert values(first.generate_trials(8)) == values(second.generate_trials(8))
    assert values(first.generate_trials(8)) == values(first.generate_trials(8))
    assert values(range_parser(seed=8).parse_args([]).generate_trials(8)) != values(
        first.generate_trials(8)
    )


def test_call_seed_overrides_parser_seed() -> None:
    """A seed passed to generate_trials wins over the parser's seed."""
    seeded = range_parser(seed=1).parse_args([])
    unseeded = range_parser().parse_args([])
    assert values(seeded.generate_trials(6, seed=99)) == values(unseeded.generate_trials(6, seed=99))


def test_seed_gives_identical_trials_across_processes() -> None:
    """The same seed yields the same trials in a separate interpreter run."""
    script = (
        "from test_tube.argparse_hopt import HyperOptArgumentParser as P\n"
        "p = P(strategy='random_search', seed=5)\n"
        "p.opt_range('--lr', low=1e-5, high=1e-1, type=float, log_base=10, nb_samples=5, tunable=True)\n"
        "p.opt_range('--units', low=8, high=512, type=int, log_base=2, nb_samples=4, tunable=True)\n"
        "print([(t.lr, t.units) for t in p.parse_args([]).trials(6)])\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    here = HyperOptArgumentParser(strategy="random_search", seed=5)
    here.opt_range("--lr", low=1e-5, high=1e-1, type=float, log_base=10, nb_samples=5, tunable=True)
    here.opt_range("--units", low=8, high=512, type=int, log_base=2, nb_samples=4, tunable=True)
    expected = str([(t.lr, t.units) for t in here.parse_args([]).trials(6)]) + "\n"
    assert runs == [expected, expected]


def test_without_a_seed_draws_follow_the_global_random_state() -> None:
    """Unseeded searches differ between calls but repeat after random.seed(), like the original."""
    hparams = range_parser().parse_args([])
    assert values(hparams.generate_trials(6)) != values(hparams.generate_trials(6))
    state = random.getstate()
    try:
        random.seed(123)
        first = values(hparams.generate_trials(6))
        random.seed(123)
        assert values(hparams.generate_trials(6)) == first
    finally:
        random.setstate(state)


# --- opt_range -------------------------------------------------------------------------


def range_values(**kwargs: Any) -> list[Any]:
    parser = HyperOptArgumentParser(seed=0)
    parser.opt_range("--x", tunable=True, **kwargs)
    return [t.x for t in parser.parse_args([]).trials()]


def test_log_scale_int_range_gives_python_ints() -> None:
    """A log-scale int range gives distinct, sorted Python ints within [low, high) (original bug #72)."""
    drawn = range_values(low=16, high=1024, type=int, log_base=2, nb_samples=6)
    assert len(drawn) == 6
    assert all(type(v) is int for v in drawn)
    assert all(16 <= v < 1024 for v in drawn)
    assert drawn == sorted(set(drawn))


def test_int_range_asking_more_than_exist_gives_all() -> None:
    """An int range with fewer ints than nb_samples gives each int once."""
    assert range_values(low=3, high=7, type=int, nb_samples=10) == [3, 4, 5, 6]
    assert range_values(low=3, high=7, type=int, log_base=10, nb_samples=10) == [3, 4, 5, 6]
    dense = range_values(low=1, high=50, type=int, log_base=10, nb_samples=40)
    assert len(dense) == len(set(dense)) == 40 and all(type(v) is int for v in dense)


def test_float_ranges_stay_within_bounds() -> None:
    """Float ranges, linear or log-scale, give nb_samples floats within [low, high]."""
    for kwargs in ({}, {"log_base": 10}, {"log_base": math.e}):
        drawn = range_values(low=1e-4, high=1e-1, type=float, nb_samples=20, **kwargs)
        assert len(drawn) == 20
        assert all(type(v) is float and 1e-4 <= v <= 1e-1 for v in drawn)


def test_opt_range_converts_command_line_values_with_its_type() -> None:
    """The range's type also converts the value given on the command line."""
    parser = HyperOptArgumentParser()
    parser.opt_range("--units", low=8, high=64, type=int, default=16, tunable=True)
    assert parser.parse_args(["--units", "32"]).units == 32


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"low": 0, "high": 1, "type": str}, TypeError, "type"),
        ({"low": 0.5, "high": 4, "type": int}, TypeError, "low"),
        ({"low": 2, "high": 2, "type": float}, ValueError, "low"),
        ({"low": 0, "high": 1, "type": float, "log_base": 10}, ValueError, "low"),
        ({"low": 1, "high": 2, "type": float, "log_base": 1}, ValueError, "log_base"),
        ({"low": 1, "high": 2, "type": float, "nb_samples": 0}, ValueError, "nb_samples"),
    ],
)
def test_opt_range_rejects_bad_arguments(kwargs: dict[str, Any], error: type[Exception], names: str) -> None:
    """opt_range raises TypeError/ValueError naming the bad argument."""
    with pytest.raises(error, match=names):
        HyperOptArgumentParser().opt_range("--x", **kwargs)


def test_opt_list_rejects_bad_options() -> None:
    """opt_list needs a list of options, non-empty when tunable."""
    parser = HyperOptArgumentParser()
    with pytest.raises(TypeError, match="options"):
        parser.opt_list("--a", options="abc", tunable=True)
    with pytest.raises(ValueError, match="options"):
        parser.opt_list("--b", options=[], tunable=True)


# --- json_config -----------------------------------------------------------------------


def test_json_config_overrides_and_adds_values(tmp_path: Path) -> None:
    """Keys of the JSON file override parsed values and add new ones; tunables still vary."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": "imagenet", "batch_size": 128, "dropout": 0.3}))
    parser = grid_parser()
    parser.json_config("--config")
    hparams = parser.parse_args(["--config", str(config), "--data", "cli"])
    assert (hparams.data, hparams.batch_size, hparams.dropout) == ("imagenet", 128, 0.3)
    trials = hparams.generate_trials()
    assert len(trials) == 6
    assert {(t.data, t.dropout) for t in trials} == {("imagenet", 0.3)}
    assert parser.parse_args([]).data == "mnist"


def test_json_config_errors_are_argparse_errors(tmp_path: Path) -> None:
    """A missing file or a non-object JSON file is reported as an argparse error."""
    parser = HyperOptArgumentParser()
    parser.json_config("--config")
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", str(tmp_path / "missing.json")])
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    strict = HyperOptArgumentParser(exit_on_error=False)
    strict.json_config("--config")
    with pytest.raises(argparse.ArgumentError, match="object"):
        strict.parse_args(["--config", str(listed)])
    with pytest.raises(ValueError, match="json_config"):
        strict.json_config("--other")


# --- Jupyter ---------------------------------------------------------------------------


def test_kernel_launcher_argv_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started by the ipykernel launcher, parse_args() ignores the kernel's flags (original bug #28)."""
    monkeypatch.setattr(
        sys, "argv", ["/opt/venv/lib/python3.11/site-packages/ipykernel_launcher.py", "-f", "/x/kernel-1.json"]
    )
    hparams = grid_parser().parse_args()
    assert (hparams.layers, hparams.data) == (2, "mnist")


def test_imported_ipykernel_means_argv_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ipykernel imported, parse_args() parses no arguments, but explicit args still count."""
    monkeypatch.setattr(sys, "argv", ["python", "--HistoryManager.enabled=False"])
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    parser = grid_parser()
    assert parser.parse_args().data == "mnist"
    assert parser.parse_known_args()[1] == []
    assert parser.parse_args(["--data", "cifar"]).data == "cifar"


def test_outside_a_kernel_sys_argv_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a kernel, parse_args() reads sys.argv[1:] as argparse does."""
    monkeypatch.setattr(sys, "argv", ["train.py", "--data", "svhn"])
    assert grid_parser().parse_args().data == "svhn"


# --- pickling --------------------------------------------------------------------------


def test_trials_pickle_with_their_search_space() -> None:
    """A trial survives pickling, equal and still able to generate trials."""
    trial = grid_parser().parse_args([]).generate_trials()[3]
    copy = pickle.loads(pickle.dumps(trial))
    assert copy == trial
    assert len(copy.generate_trials()) == 6


# --- parallel runners ------------------------------------------------------------------


def score(trial: HyperOptNamespace) -> int:
    return int(trial.layers) * 10 + len(trial.optimizer)


def fail_on_two(trial: HyperOptNamespace) -> int:
    if trial.layers == 2:
        raise ValueError(f"layers={trial.layers} diverged")
    return int(trial.layers)


def die_on_two(trial: HyperOptNamespace) -> int:
    if trial.layers == 2:
        os._exit(3)
    return int(trial.layers)


def visible_devices(trial: HyperOptNamespace, gpu_id: str) -> tuple[str, str | None, int]:
    return gpu_id, os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()


def test_optimize_parallel_cpu_returns_trial_result_pairs_in_order() -> None:
    """Each trial is paired with fn(trial), in trial order."""
    hparams = grid_parser().parse_args([])
    results = hparams.optimize_parallel_cpu(score, nb_trials=6, nb_workers=2, progress=False)
    assert [trial for trial, _ in results] == hparams.generate_trials()
    assert [result for _, result in results] == [score(t) for t in hparams.generate_trials()]


def test_failing_trial_gives_its_error_instead_of_killing_the_search() -> None:
    """A trial that raises yields a TrialError naming it, chained to the original exception."""
    hparams = grid_parser().parse_args([])
    results = hparams.optimize_parallel_cpu(fail_on_two, nb_trials=6, nb_workers=2, progress=False)
    assert [r for t, r in results if t.layers != 2] == [1, 1, 3, 3]
    failures = [r for t, r in results if t.layers == 2]
    assert len(failures) == 2
    for index, error in zip((2, 3), failures):
        assert isinstance(error, TrialError)
        assert error.index == index
        assert error.trial == results[index][0]
        assert isinstance(error.__cause__, ValueError)
        assert "diverged" in str(error.__cause__)
        assert f"trial {index}" in str(error) and "layers=2" in str(error)
        assert error.remote_traceback is not None and "fail_on_two" in error.remote_traceback


def test_dead_worker_fails_only_its_trial() -> None:
    """A worker process that dies gives its trial a TrialError and the search goes on."""
    hparams = grid_parser().parse_args([])
    results = hparams.optimize_parallel_cpu(die_on_two, nb_trials=6, nb_workers=2, progress=False)
    assert [r for t, r in results if t.layers != 2] == [1, 1, 3, 3]
    for trial, result in results:
        if trial.layers == 2:
            assert isinstance(result, TrialError)
            assert "exited with code 3" in str(result.__cause__)


def test_trial_error_pickles() -> None:
    """A TrialError keeps its trial, index and cause through pickling."""
    hparams = grid_parser().parse_args([])
    error = hparams.optimize_parallel_cpu(fail_on_two, 4, nb_workers=2, progress=False)[2][1]
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.index, copy.trial, str(copy)) == (error.index, error.trial, str(error))
    assert isinstance(copy.__cause__, ValueError)


def test_progress_is_a_line_per_finished_trial_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """progress=True writes one stderr line per finished trial; progress=False writes nothing."""
    hparams = grid_parser().parse_args([])
    hparams.optimize_parallel_cpu(fail_on_two, 6, nb_workers=2)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6
    assert sum("failed: ValueError" in line for line in lines) == 2
    assert all(line.startswith("test_tube: trial ") for line in lines)
    assert "(6/6 done, 2 failed)" in lines[-1]
    hparams.optimize_parallel_cpu(score, 6, nb_workers=2, progress=False)
    assert capsys.readouterr().err == ""


def test_runner_arguments_are_checked() -> None:
    """nb_workers, gpu_ids and start_method are validated before any process starts."""
    hparams = grid_parser().parse_args([])
    with pytest.raises(ValueError, match="nb_workers"):
        hparams.optimize_parallel_cpu(score, 2, nb_workers=0)
    with pytest.raises(TypeError, match="gpu_ids"):
        hparams.optimize_parallel_gpu(visible_devices, "0,1")
    with pytest.raises(ValueError, match="gpu_ids"):
        hparams.optimize_parallel_gpu(visible_devices, [])
    with pytest.raises(ValueError, match="start_method"):
        hparams.optimize_parallel_cpu(score, 2, nb_workers=1, start_method="teleport")
    assert hparams.optimize_parallel_cpu(score, 0, nb_workers=2) == []


def test_gpu_runner_sets_cuda_visible_devices_per_worker() -> None:
    """Each worker sets CUDA_VISIBLE_DEVICES to its id before calling fn(trial, gpu_id)."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    hparams = grid_parser().parse_args([])
    results = hparams.optimize_parallel_gpu(visible_devices, ["0", "1,2"], max_nb_trials=5, progress=False)
    assert len(results) == 5
    ids_by_pid: dict[int, set[str]] = {}
    for _, (gpu_id, seen, pid) in results:
        assert seen == gpu_id
        assert gpu_id in {"0", "1,2"}
        ids_by_pid.setdefault(pid, set()).add(gpu_id)
    assert all(len(ids) == 1 for ids in ids_by_pid.values())
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before


def test_unpicklable_fn_with_spawn_is_a_type_error() -> None:
    """With spawn, a function that cannot be pickled raises TypeError naming the start method."""
    hparams = grid_parser().parse_args([])
    with pytest.raises(TypeError, match="spawn"):
        hparams.optimize_parallel_cpu(lambda t: t, 2, nb_workers=1, start_method="spawn")


def test_gpu_runner_accepts_int_ids_and_spawn() -> None:
    """Int ids become strings, and a module-level fn also works with the spawn start method."""
    hparams = grid_parser().parse_args([])
    results = hparams.optimize_parallel_gpu(
        visible_devices, [3], max_nb_trials=2, progress=False, start_method="spawn"
    )
    assert [r[:2] for _, r in results] == [("3", "3"), ("3", "3")]


# --- with Experiment -------------------------------------------------------------------


def read_tags(log_dir: Path) -> dict[str, str]:
    with open(log_dir / "meta_tags.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["key", "value"]
    return {key: value for key, value in rows[1:]}


def log_trial(trial: HyperOptNamespace) -> int:
    from test_tube import Experiment

    exp = Experiment(name="search", save_dir=trial.save_dir)
    exp.argparse(trial)
    version = exp.version
    exp.close()
    return int(version)


def search_parser(save_dir: Path) -> HyperOptArgumentParser:
    parser = grid_parser()
    parser.opt_range("--lr", low=1e-4, high=1e-1, type=float, log_base=10, nb_samples=2, tunable=True)
    parser.add_argument("--save_dir", default=str(save_dir))
    return parser


def test_experiment_argparse_records_trial_values_not_methods(tmp_path: Path) -> None:
    """exp.argparse(trial) writes the trial's hyperparameters, and no methods, to meta_tags.csv."""
    from test_tube import Experiment

    trial = search_parser(tmp_path).parse_args([]).generate_trials(4, seed=0)[3]
    exp = Experiment(name="tags", save_dir=str(tmp_path))
    exp.argparse(trial)
    exp.close()
    tags = read_tags(Path(exp.log_dir))
    assert {k: tags[k] for k in vars(trial)} == {k: str(v) for k, v in vars(trial).items()}
    assert not METHODS & set(tags)
    assert not any(key.startswith("_") for key in tags)


def log_without_close(trial: HyperOptNamespace) -> int:
    from test_tube import Experiment

    exp = Experiment(name="unclosed", save_dir=trial.save_dir)
    exp.log({"loss": trial.layers + 0.5})
    return int(exp.version)


def test_rows_of_a_trial_that_forgets_close_are_flushed(tmp_path: Path) -> None:
    """An Experiment a trial leaves open is flushed when its worker exits, as at the end of a script."""
    hparams = search_parser(tmp_path).parse_args([])
    results = hparams.optimize_parallel_cpu(
        log_without_close, 2, nb_workers=2, progress=False, start_method="spawn"
    )
    for trial, version in results:
        assert isinstance(version, int), version
        metrics = tmp_path / "unclosed" / f"version_{version}" / "metrics.csv"
        assert str(trial.layers + 0.5) in metrics.read_text()


FORKED_UNCLOSED = """
import sys
from pathlib import Path
from test_tube import Experiment
from test_tube.argparse_hopt import HyperOptArgumentParser

def train(trial):
    exp = Experiment(name="unclosed", save_dir=sys.argv[1])
    exp.log({"loss": 0.25})
    return exp.version

parser = HyperOptArgumentParser()
parser.opt_list("--layers", options=[1, 2], tunable=True)
for _, version in parser.parse_args([]).optimize_parallel_cpu(train, 2, 2, progress=False):
    print((Path(sys.argv[1]) / "unclosed" / f"version_{version}" / "metrics.csv").exists())
"""


def test_forked_trial_that_forgets_close_keeps_its_rows(tmp_path: Path) -> None:
    """With fork and no Experiment in the parent, a trial's unclosed Experiment is still flushed."""
    run = subprocess.run(
        [sys.executable, "-c", FORKED_UNCLOSED, str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    assert run.stdout.split() == ["True", "True"]


def test_parallel_trials_get_distinct_versions(tmp_path: Path) -> None:
    """Trials that each create an Experiment with the same name get distinct versions (original #26)."""
    hparams = search_parser(tmp_path).parse_args([])
    results = hparams.optimize_parallel_cpu(log_trial, nb_trials=8, nb_workers=2, progress=False)
    versions = [result for _, result in results]
    assert all(isinstance(v, int) for v in versions), versions
    assert sorted(versions) == list(range(8))
    for trial, version in results:
        tags = read_tags(tmp_path / "search" / f"version_{version}")
        assert (tags["layers"], tags["optimizer"], tags["lr"]) == (
            str(trial.layers), trial.optimizer, str(trial.lr),
        )
