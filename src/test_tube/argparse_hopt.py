"""HyperOptArgumentParser: an ``argparse`` parser that also defines a hyperparameter search.

Declare tunable arguments with :meth:`HyperOptArgumentParser.opt_list` and
:meth:`HyperOptArgumentParser.opt_range`; :meth:`~HyperOptArgumentParser.parse_args`
then returns a :class:`HyperOptNamespace` that can enumerate trials or run them
in parallel worker processes::

    parser = HyperOptArgumentParser(strategy="random_search", seed=0)
    parser.opt_list("--layers", options=[1, 2, 4], type=int, default=2, tunable=True)
    parser.opt_range("--lr", low=1e-4, high=1e-1, type=float, log_base=10, tunable=True)
    hparams = parser.parse_args()
    for trial in hparams.trials(5):
        train(trial)

The module path is the one the original test-tube used, so existing imports
keep working.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar, overload

from ._hyperopt._hyperopt_pool import TrialError, run_trials
from ._hyperopt._hyperopt_space import OptList, OptRange, SearchSpace, Tunable
from .hyper_opt_utils import strategies

__all__ = ["HyperOptArgumentParser", "HyperOptNamespace", "TrialError"]

_N = TypeVar("_N")

# Attribute names that would hide the namespace's methods if an argument or a
# JSON key used them.
_NAMESPACE_METHODS = frozenset(
    {"trials", "generate_trials", "optimize_parallel_cpu", "optimize_parallel_gpu"}
)

# The file names under which a Jupyter/IPython kernel starts Python.
_KERNEL_LAUNCHERS = frozenset({"ipykernel_launcher.py", "ipykernel_launcher"})


def _running_in_ipykernel() -> bool:
    """Return True inside a Jupyter/IPython kernel, whose ``sys.argv`` holds its own flags."""
    if "ipykernel" in sys.modules:
        return True
    argv = getattr(sys, "argv", None) or [""]
    launcher = argv[0].replace("\\", "/")
    return (
        os.path.basename(launcher) in _KERNEL_LAUNCHERS
        or launcher.endswith("ipykernel/__main__.py")
    )


def _warn_if_reserved(name: str, what: str) -> None:
    if name in _NAMESPACE_METHODS:
        warnings.warn(
            f"{what} {name!r} hides HyperOptNamespace.{name}() on the parsed namespace; "
            f"give it another name (for an argument, pass dest=...)",
            UserWarning,
            stacklevel=3,
        )


def _check_strategy(strategy: str) -> str:
    if strategy not in strategies.STRATEGIES:
        raise ValueError(
            "strategy must be one of "
            f"{', '.join(map(repr, strategies.STRATEGIES))}, got {strategy!r}"
        )
    return strategy


def _check_seed(seed: int | None) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return seed


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class HyperOptNamespace(argparse.Namespace):
    """The parsed arguments, plus methods that enumerate and run the search.

    Its attributes are exactly the parsed values (``vars()`` shows nothing
    else), so ``Experiment.argparse()`` records every hyperparameter and none
    of the methods. Each trial is itself a ``HyperOptNamespace``: the parsed
    values with the tunable arguments set to one combination. Trials pickle
    (when their values do), so they can be sent to other processes.
    """

    # A slot, not an instance attribute: keeps the search space out of vars(),
    # repr() and ==, while still pickling with the namespace.
    __slots__ = ("_hyperopt_space",)
    _hyperopt_space: SearchSpace

    def __str__(self) -> str:
        """The table test-tube 0.7.5 printed: a rule, ``Hyperparameters:``, one ``name: value`` line each.

        ``repr()`` stays argparse's ``HyperOptNamespace(a=1, ...)``.
        """
        lines = ["-" * 100, "Hyperparameters:"]
        lines += [f"{name:20}: {value}" for name, value in vars(self).items()]
        return "\n".join(lines) + "\n"

    def _space(self) -> SearchSpace:
        try:
            return self._hyperopt_space
        except AttributeError:
            raise RuntimeError(
                "this namespace has no search space: get it from "
                "HyperOptArgumentParser.parse_args()"
            ) from None

    def _trial(
        self, base: dict[str, Any], combination: Sequence[dict[str, Any]]
    ) -> HyperOptNamespace:
        trial = HyperOptNamespace(**base)
        trial._hyperopt_space = self._hyperopt_space
        for item in combination:
            setattr(trial, item["name"], item["val"])
        return trial

    def _describe(self, trial: Any) -> str:
        names = [tunable.dest for tunable in self._space().tunables]
        if not names:
            return "no tunable hyperparameters"
        return ", ".join(f"{name}={getattr(trial, name, None)!r}" for name in names)

    def trials(
        self, nb_trials: int | None = None, *, seed: int | None = None
    ) -> Iterator[HyperOptNamespace]:
        """Yield trial namespaces, one per combination chosen by the parser's strategy.

        Grid search yields every combination (the last tunable argument varies
        fastest), or the first ``nb_trials``. Random search yields
        ``min(nb_trials, number of combinations)`` distinct combinations and
        needs ``nb_trials`` (``TypeError`` without it). ``seed`` overrides the
        parser's seed; with neither, the draw follows Python's global
        :mod:`random` state. ``opt_range`` candidates are drawn anew from the
        same generator on every call, so a seed fixes them too.

        Non-tunable arguments keep their parsed value in every trial; values
        are shared, not copied, between trials.
        """
        space = self._space()
        rng = space.rng(_check_seed(seed))
        combinations = strategies.iter_trials(
            space.strategy, space.flat_params(rng), nb_trials, seed=rng
        )
        base = dict(vars(self))
        return (self._trial(base, combination) for combination in combinations)

    def generate_trials(
        self, nb_trials: int | None = None, *, seed: int | None = None
    ) -> list[HyperOptNamespace]:
        """Return :meth:`trials` as a list."""
        return list(self.trials(nb_trials, seed=seed))

    def optimize_parallel_cpu(
        self,
        fn: Callable[[HyperOptNamespace], Any],
        nb_trials: int | None,
        nb_workers: int = 4,
        *,
        seed: int | None = None,
        progress: bool = True,
        start_method: str | None = None,
    ) -> list[list[Any]]:
        """Run ``fn(trial)`` for each of ``nb_trials`` trials in ``nb_workers`` processes.

        Blocks until every trial has finished and returns ``[[trial, result],
        ...]`` in trial order. A trial that raises (or whose worker process
        dies) does not stop the search: its result is a :class:`TrialError`
        that names the trial and chains the original exception. ``fn`` and the
        results must be picklable under the chosen start method; ``fn`` may
        start processes of its own.

        ``progress`` writes one line per finished trial to stderr.
        ``start_method`` is a :mod:`multiprocessing` start method; the default
        is ``'fork'`` on Linux (so functions defined in notebooks or unguarded
        scripts work) and the platform default elsewhere. Use ``'spawn'`` or
        ``'forkserver'`` when the calling process runs threads or has already
        initialised CUDA.
        """
        workers = _check_count("nb_workers", nb_workers, 1)
        trials = self.generate_trials(nb_trials, seed=seed)
        return run_trials(
            fn,
            trials,
            worker_ids=[None] * workers,
            pass_worker_id=False,
            progress=bool(progress),
            start_method=start_method,
            describe=self._describe,
        )

    def optimize_parallel_gpu(
        self,
        fn: Callable[[HyperOptNamespace, str], Any],
        gpu_ids: Sequence[str | int],
        max_nb_trials: int | None = None,
        *,
        seed: int | None = None,
        progress: bool = True,
        start_method: str | None = None,
    ) -> list[list[Any]]:
        """Run ``fn(trial, gpu_id)`` for each trial, one worker process per entry of ``gpu_ids``.

        Each entry is a ``CUDA_VISIBLE_DEVICES`` value (``'0'``, or ``'1,2'``
        for a worker that uses two GPUs); an int is turned into its string.
        Every worker sets ``CUDA_VISIBLE_DEVICES`` to its id before it runs any
        trial, and passes the same string to ``fn``. ``max_nb_trials`` limits
        the number of trials (required for random search). Results, failures,
        ``progress`` and ``start_method`` work as in :meth:`optimize_parallel_cpu`;
        with CUDA, the calling process must not have initialised it before a
        ``'fork'`` start.
        """
        if isinstance(gpu_ids, (str, bytes)) or not isinstance(gpu_ids, Sequence):
            raise TypeError(
                "gpu_ids must be a list of CUDA_VISIBLE_DEVICES strings such as ['0', '1,2'], "
                f"got {type(gpu_ids).__name__}"
            )
        ids: list[str | None] = []
        for gpu_id in gpu_ids:
            if isinstance(gpu_id, bool) or not isinstance(gpu_id, (str, int)):
                raise TypeError(f"each gpu_ids entry must be a str or int, got {gpu_id!r}")
            if str(gpu_id) == "":
                raise ValueError("gpu_ids entries must not be empty strings")
            ids.append(str(gpu_id))
        if not ids:
            raise ValueError("gpu_ids must name at least one GPU")
        trials = self.generate_trials(max_nb_trials, seed=seed)
        return run_trials(
            fn,
            trials,
            worker_ids=ids,
            pass_worker_id=True,
            progress=bool(progress),
            start_method=start_method,
            describe=self._describe,
        )


class HyperOptArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that also declares a hyperparameter search.

    ``strategy`` is ``'grid_search'`` (every combination of the tunable
    arguments' candidates) or ``'random_search'`` (distinct random
    combinations); anything else raises ``ValueError``. ``seed`` (an int)
    makes the random parts of the search repeatable across runs; a seed passed
    to ``trials()`` and the runners overrides it. Every other keyword goes to
    :class:`argparse.ArgumentParser`, and all of argparse keeps working.
    Subparsers are HyperOptArgumentParsers too, but only this parser's tunable
    arguments enter the search.
    """

    def __init__(
        self, strategy: str = "grid_search", *, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.strategy = strategy
        self.seed = seed
        self._tunables: dict[str, Tunable] = {}
        self._json_action: argparse.Action | None = None

    @property
    def strategy(self) -> str:
        """The search strategy: ``'grid_search'`` or ``'random_search'``."""
        return self._strategy

    @strategy.setter
    def strategy(self, value: str) -> None:
        self._strategy = _check_strategy(value)

    @property
    def seed(self) -> int | None:
        """The default seed of the search, or ``None`` for a fresh draw each time."""
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        self._seed = _check_seed(value)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add an argument exactly as :meth:`argparse.ArgumentParser.add_argument` does.

        Warns when the argument's ``dest`` would hide a method of the parsed
        namespace (``trials``, ``generate_trials``, ``optimize_parallel_*``).
        """
        action = super().add_argument(*args, **kwargs)
        if isinstance(action.dest, str):
            _warn_if_reserved(action.dest, "argument dest")
        return action

    def opt_list(
        self,
        *name_or_flags: str,
        options: Sequence[Any],
        tunable: bool = False,
        **kwargs: Any,
    ) -> argparse.Action:
        """Add an argument whose candidate values are ``options``.

        With ``tunable=True`` the search tries each option, in the order
        given; otherwise the argument keeps its parsed value in every trial
        (``tunable`` defaults to ``False``, as in the original). Other keywords
        (``type``, ``default``, ``help``...) go to :meth:`add_argument`; the
        options are used as given, not converted by ``type``.
        """
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
            raise TypeError(
                f"options must be a list or tuple of values, got {type(options).__name__}"
            )
        if not isinstance(tunable, bool):
            raise TypeError(f"tunable must be a bool, got {type(tunable).__name__}")
        if tunable and len(options) == 0:
            raise ValueError("options must not be empty for a tunable argument")
        action = self.add_argument(*name_or_flags, **kwargs)
        self._register(action, OptList(dest=action.dest, options=tuple(options)), tunable)
        return action

    def opt_range(
        self,
        *name_or_flags: str,
        low: float,
        high: float,
        type: builtins.type[int] | builtins.type[float],
        nb_samples: int = 10,
        tunable: bool = False,
        log_base: float | None = None,
        **kwargs: Any,
    ) -> argparse.Action:
        """Add an argument whose candidates are ``nb_samples`` values drawn from a range.

        ``type=int`` draws distinct ints from ``low`` to ``high - 1`` (like
        :func:`range`; at most all of them); ``type=float`` draws from
        ``[low, high]``. With ``log_base`` the draw is uniform on a log scale
        (``low`` must be > 0), and ``type=int`` still gives ints. Candidates
        are sorted ascending and drawn each time trials are generated, from
        the search's random generator. ``type`` is also passed to
        :meth:`add_argument` to convert a command-line value.
        """
        kind = type
        if kind is not int and kind is not float:
            raise TypeError(f"type must be int or float, got {kind!r}")
        for name, bound in (("low", low), ("high", high)):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise TypeError(f"{name} must be a number, got {builtins.type(bound).__name__}")
            if kind is int and not isinstance(bound, int):
                raise TypeError(f"{name} must be an int when type=int, got {bound!r}")
        if not low < high:
            raise ValueError(f"low must be less than high, got low={low!r}, high={high!r}")
        _check_count("nb_samples", nb_samples, 1)
        if not isinstance(tunable, bool):
            raise TypeError(f"tunable must be a bool, got {builtins.type(tunable).__name__}")
        if log_base is not None:
            if isinstance(log_base, bool) or not isinstance(log_base, (int, float)):
                raise TypeError(
                    f"log_base must be a number or None, got {builtins.type(log_base).__name__}"
                )
            if log_base <= 0 or log_base == 1:
                raise ValueError(f"log_base must be > 0 and != 1, got {log_base!r}")
            if low <= 0:
                raise ValueError(f"low must be > 0 for a log-scale range, got {low!r}")
        action = self.add_argument(*name_or_flags, type=kind, **kwargs)
        spec = OptRange(
            dest=action.dest,
            low=low,
            high=high,
            kind=kind,
            nb_samples=nb_samples,
            log_base=log_base,
        )
        self._register(action, spec, tunable)
        return action

    def _register(self, action: argparse.Action, spec: Tunable, tunable: bool) -> None:
        if tunable:
            self._tunables[action.dest] = spec
        else:
            # A redefinition as non-tunable takes the argument out of the search.
            self._tunables.pop(action.dest, None)

    def json_config(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action:
        """Add an argument naming a JSON file whose keys override or add to the parsed values.

        The file must hold one JSON object; each key becomes (or replaces) an
        attribute of the namespace, with the value as JSON typed it, after the
        command line is parsed. Tunable arguments are still varied by the
        search. An unreadable or invalid file is reported like any argparse
        error. One per parser (``ValueError`` on a second call).
        """
        if self._json_action is not None:
            raise ValueError(
                f"json_config() was already called for {self._json_action.dest!r}; "
                "a parser takes one JSON config argument"
            )
        kwargs.setdefault("default", None)
        kwargs.setdefault("metavar", "JSON_FILE")
        kwargs.setdefault("help", "JSON file whose keys override the parsed arguments")
        action = self.add_argument(*name_or_flags, **kwargs)
        self._json_action = action
        return action

    def _apply_json(self, namespace: argparse.Namespace) -> None:
        action = self._json_action
        if action is None:
            return
        source = getattr(namespace, action.dest, None)
        if source is None or source == "":
            return
        try:
            if hasattr(source, "read"):  # e.g. type=argparse.FileType('r')
                config = json.load(source)
            else:
                with open(os.fspath(source), encoding="utf-8") as handle:
                    config = json.load(handle)
        except (OSError, TypeError, ValueError) as exc:  # ValueError covers bad JSON/UTF-8
            self._fail(action, f"cannot read JSON config {source!r}: {exc}")
        if not isinstance(config, dict):
            self._fail(
                action,
                f"JSON config {source!r} must hold an object, got {builtins.type(config).__name__}",
            )
        for key, value in config.items():
            _warn_if_reserved(key, "JSON config key")
            setattr(namespace, key, value)

    def _fail(self, action: argparse.Action, message: str) -> NoReturn:
        error = argparse.ArgumentError(action, message)
        if not self.exit_on_error:
            raise error
        self.error(str(error))

    def _finish(self, namespace: Any) -> None:
        self._apply_json(namespace)
        if isinstance(namespace, HyperOptNamespace):
            namespace._hyperopt_space = SearchSpace(
                strategy=self.strategy, seed=self.seed, tunables=tuple(self._tunables.values())
            )

    @staticmethod
    def _prepare(args: Sequence[str] | None, namespace: Any) -> tuple[Sequence[str] | None, Any]:
        if args is None and _running_in_ipykernel():
            # sys.argv holds the kernel's own flags (-f kernel.json), not the user's.
            args = []
        if namespace is None:
            namespace = HyperOptNamespace()
        return args, namespace

    @overload  # type: ignore[override]
    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> tuple[HyperOptNamespace, list[str]]: ...
    @overload
    def parse_known_args(
        self, args: Sequence[str] | None, namespace: _N
    ) -> tuple[_N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """Parse like argparse, returning a :class:`HyperOptNamespace` and the leftover strings.

        Inside a Jupyter/IPython kernel (``ipykernel`` imported, or started by
        its launcher) ``args=None`` parses ``[]`` instead of ``sys.argv[1:]``.
        A JSON config, if declared, is applied to the result. A namespace you
        pass in is filled as argparse would; it carries the search methods
        only if it is a ``HyperOptNamespace``.
        """
        args, namespace = self._prepare(args, namespace)
        parsed, extras = super().parse_known_args(args, namespace)
        self._finish(parsed)
        return parsed, extras

    @overload  # type: ignore[override]
    def parse_args(
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> HyperOptNamespace: ...
    @overload
    def parse_args(self, args: Sequence[str] | None, namespace: _N) -> _N: ...
    @overload
    def parse_args(self, *, namespace: _N) -> _N: ...

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        """Parse ``args`` (``sys.argv[1:]`` by default) into a :class:`HyperOptNamespace`.

        Same rules as :meth:`parse_known_args`; unknown arguments are an
        error, as in argparse. The result has ``trials()``,
        ``generate_trials()``, ``optimize_parallel_cpu()`` and
        ``optimize_parallel_gpu()``.
        """
        return super().parse_args(args, namespace)

    def parse_known_intermixed_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """Parse like argparse's intermixed parsing, with the rules of :meth:`parse_known_args`."""
        args, namespace = self._prepare(args, namespace)
        parsed, extras = super().parse_known_intermixed_args(args, namespace)
        self._finish(parsed)
        return parsed, extras

