"""The private upstream API under the `gon_optuna` sweeper, checked against what is installed.

hydra_plugins/gon_sweeper subclasses hydra-optuna-sweeper's private
`hydra_plugins.hydra_optuna_sweeper._impl.OptunaSweeperImpl`, calls its private methods and
reads the attributes its __init__ and setup leave behind; gon_sweeper.py swaps the upstream
OptunaSweeper's `.sweeper`; gon/app/sweep_trials.py and ResumableSweep._run write through
Optuna's private `study._storage` by `trial._trial_id`. None of this is public API, so an
upgrade (pyproject.toml allows optuna up to < 6) can move it without a deprecation. ITEMS
below is the single list of what the plugin relies on, one row per item, each saying where
our code uses it. A row checks that its item still exists; for a callable, that it still
takes the parameters we pass (by name, or in order where we pass them by position) and wants
no new required one; for an attribute of a live object (a real in-memory study, a trial
from study.ask(), a constructed OptunaSweeperImpl), that it holds the expected kind of value.

A failing row prints one line: the upstream item, what changed, what the version this was
written against had, the installed versions, and where our code relies on it, e.g.

    hydra_plugins.hydra_optuna_sweeper._impl.OptunaSweeperImpl._get_directions: gone
    (hydra-optuna-sweeper 1.4.0rc3 had it; installed: hydra-optuna-sweeper 1.5.0,
    optuna 5.0.0); gon_sweeper/_impl.py: ResumableSweep._sweep calls it

Fix the named place in our code for the new upstream (or pin the old one), then update the
row and BASELINE.

$ python -m pytest -q tests/test_sweeper_contract.py
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, MutableMapping
from typing import Any
from unittest import mock

import optuna
import pytest
from omegaconf import OmegaConf

HOS, OPTUNA, JOBLIB = "hydra-optuna-sweeper", "optuna", "hydra-joblib-launcher"
# the versions these rows were written against (pinned in pyproject.toml's [app] extra)
BASELINE = {HOS: "1.4.0rc3", OPTUNA: "5.0.0", JOBLIB: "1.4.0rc3"}
IMPL = "hydra_plugins.hydra_optuna_sweeper._impl"
SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
CONF = "hydra_plugins.hydra_optuna_sweeper.config"
# what gon_sweeper.py passes, by position, to OptunaSweeper.__init__ and OptunaSweeperImpl's
INIT = ("sampler", "direction", "storage", "study_name", "n_trials", "n_jobs",
        "max_failure_rate", "custom_search_space", "params")


class Gone(Exception):
    """The item no longer exists; the message, if any, names the missing module or class."""


@dataclasses.dataclass(frozen=True)
class Expect:
    """What a value must be: a test and its description (`is now X, not <text>`)."""

    test: Callable[[Any], bool]
    text: str


def instance_of(load: Callable[[], type | tuple[type, ...]], text: str) -> Expect:
    return Expect(lambda v: isinstance(v, load()), text)


def equal_to(value: Any, text: str) -> Expect:
    return Expect(lambda v: v is value or v == value, text)


@dataclasses.dataclass(frozen=True)
class Item:
    """One upstream item we rely on. Without `get`, `name` is its import path."""

    name: str  # the upstream item (a live object's attribute: how to reach it)
    package: str  # the distribution that provides it
    used: str  # where our code relies on it
    params: tuple[str, ...] | None = None  # a callable: the parameters we pass or rely on
    positional: bool = False  # ... passed by position, so their order matters
    exact: bool = False  # ... and it must take no others (each one is passed to us)
    get: Callable[[], Any] | None = None  # a live object's attribute: reads it
    expect: Expect | None = None  # what the value must be


def _load(dotted: str) -> Any:
    """The object at an import path; Gone names the first part that is missing."""
    return _resolve(dotted)[2]


def _resolve(dotted: str) -> tuple[Any, str, Any]:
    """(owner, last name, value) of a dotted import path."""
    parts = dotted.split(".")
    obj: Any = None
    i = 0
    while i < len(parts):  # import the longest module prefix there is
        name = ".".join(parts[: i + 1])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise  # the module is there but one of its imports is not
            if obj is None:
                raise Gone(f"no module {name}") from None
            break
        i += 1
    owner, last = obj, parts[-1]
    for j in range(i, len(parts)):
        if not hasattr(obj, parts[j]):
            where = ".".join(parts[:j])
            raise Gone("" if j == len(parts) - 1 else f"{where} has no {parts[j]}")
        owner, obj = obj, getattr(obj, parts[j])
    return owner, last, obj


def attr(build: Callable[[], Any], name: str) -> Callable[[], Any]:
    """A getter for attribute `name` of the live object `build()` makes."""

    def get() -> Any:
        obj = build()
        if not hasattr(obj, name):
            raise Gone()
        return getattr(obj, name)

    return get


# ---------------------------------------------------------------- live objects (built once)
SAMPLER = optuna.samplers.RandomSampler(seed=0)
PARAMS = OmegaConf.create({"x": "choice(1,2)"})
ARGS = (SAMPLER, "minimize", "sqlite:///contract.db", "contract", 7, 3, 0.25, None, PARAMS)
CONFIG = OmegaConf.create({"hydra": {"sweep": {"dir": "sweeps/contract"}}})
CONTEXT, TASK, LAUNCHER = object(), object(), object()


@functools.cache
def _study() -> optuna.Study:
    return optuna.create_study()


@functools.cache
def _trial() -> optuna.trial.Trial:
    return _study().ask()


@functools.cache
def _frozen_trial() -> optuna.trial.FrozenTrial:
    number = _trial().number
    return next(t for t in _study().get_trials(deepcopy=False) if t.number == number)


@functools.cache
def _impl() -> Any:
    """An OptunaSweeperImpl made as ResumableSweep.__init__ makes itself (ARGS by position)."""
    return _load(f"{IMPL}.OptunaSweeperImpl")(*ARGS)


@functools.cache
def _impl_set_up() -> Any:
    """An OptunaSweeperImpl after setup(), with Hydra's launcher factory stubbed."""
    impl = _load(f"{IMPL}.OptunaSweeperImpl")(*ARGS)
    with mock.patch(f"{IMPL}.Plugins") as plugins:
        plugins.instance.return_value.instantiate_launcher.return_value = LAUNCHER
        impl.setup(hydra_context=CONTEXT, task_function=TASK, config=CONFIG)
    return impl


def _optuna_sweeper() -> Any:
    """An upstream OptunaSweeper made as GonOptunaSweeper.__init__ calls super().__init__."""
    sampler = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 0})
    return _load(SWEEPER)(sampler, "minimize", None, None, 7, 1, 0.25, None, None)


def _forwarded(method: str) -> Callable[[], list[str]]:
    """A getter: the methods of `.sweeper` that OptunaSweeper.<method>() calls."""

    def get() -> list[str]:
        sweeper = _optuna_sweeper()
        if not hasattr(type(sweeper), method):
            raise Gone()
        sweeper.sweeper = mock.Mock()
        if method == "setup":
            sweeper.setup(hydra_context=CONTEXT, task_function=TASK, config=CONFIG)
        else:
            sweeper.sweep(["x=1"])
        return [name for name, _, _ in sweeper.sweeper.method_calls]

    return get


@functools.cache
def _joblib_launcher() -> Any:
    return _load("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")(n_jobs=2)


def _is_impl(v: Any) -> bool:
    return isinstance(v, _load(f"{IMPL}.OptunaSweeperImpl"))


def _is_storage(v: Any) -> bool:
    return isinstance(v, optuna.storages.BaseStorage)


# ---------------------------------------------------------------- the table
ITEMS: list[Item] = [
    # --- hydra-optuna-sweeper: the private _impl module
    # gon_sweeper/_impl.py: `class ResumableSweep(OptunaSweeperImpl)`
    Item(f"{IMPL}.OptunaSweeperImpl", HOS, "gon_sweeper/_impl.py: ResumableSweep subclasses it",
         expect=Expect(inspect.isclass, "a class")),
    # gon_sweeper/_impl.py ResumableSweep.__init__: `super().__init__(*args)`, the nine
    # arguments gon_sweeper.py's GonOptunaSweeper.__init__ passes by position
    Item(f"{IMPL}.OptunaSweeperImpl.__init__", HOS,
         "gon_sweeper/_impl.py: ResumableSweep.__init__ calls it with gon_sweeper.py's "
         "nine positional arguments", params=INIT, positional=True),
    # gon_sweeper/_impl.py ResumableSweep.sweep(self, arguments) overrides it; upstream
    # OptunaSweeper.sweep calls `self.sweeper.sweep(arguments)`
    Item(f"{IMPL}.OptunaSweeperImpl.sweep", HOS,
         "gon_sweeper/_impl.py: ResumableSweep.sweep overrides it", params=("arguments",),
         positional=True),
    # gon_sweeper/_impl.py ResumableSweep._search_space: `self._process_searchspace_config()`
    Item(f"{IMPL}.OptunaSweeperImpl._process_searchspace_config", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._search_space calls it", params=()),
    # gon_sweeper/_impl.py ResumableSweep._search_space: `self._parse_sweeper_params_config()`
    Item(f"{IMPL}.OptunaSweeperImpl._parse_sweeper_params_config", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._search_space calls it", params=()),
    # gon_sweeper/_impl.py ResumableSweep._search_space: `self._to_grid_sampler_choices(d)`
    Item(f"{IMPL}.OptunaSweeperImpl._to_grid_sampler_choices", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._search_space calls it for a GridSampler",
         params=("distribution",), positional=True),
    # gon_sweeper/_impl.py ResumableSweep._sweep: `directions = self._get_directions()`
    Item(f"{IMPL}.OptunaSweeperImpl._get_directions", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._sweep calls it", params=()),
    # gon_sweeper/_impl.py ResumableSweep._run:
    # `self._configure_trials(trials, space, fixed, fixed_overrides)`
    Item(f"{IMPL}.OptunaSweeperImpl._configure_trials", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._run calls it",
         params=("trials", "search_space_distributions", "fixed_params", "fixed_overrides"),
         positional=True),
    # gon_sweeper/_impl.py: `from hydra_plugins.hydra_optuna_sweeper._impl import
    # create_params_from_overrides`; ResumableSweep._search_space calls it with one list
    Item(f"{IMPL}.create_params_from_overrides", HOS,
         "gon_sweeper/_impl.py imports it; ResumableSweep._search_space calls it",
         params=("arguments",), positional=True),
    # --- hydra-optuna-sweeper: what OptunaSweeperImpl.__init__ leaves on self
    # gon_sweeper/_impl.py _search_space: `self.sampler.func is GridSampler`,
    # `self.sampler = self.sampler(grid)`; _open_study: `sampler=self.sampler`
    Item(f"{IMPL}.OptunaSweeperImpl(...).sampler", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._search_space and _open_study read it",
         get=attr(_impl, "sampler"), expect=equal_to(SAMPLER, "the sampler passed to it")),
    # gon_sweeper/_impl.py _open_study: `sw.resolve_storage(sweep_dir, self.storage)`
    Item(f"{IMPL}.OptunaSweeperImpl(...).storage", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._open_study reads it",
         get=attr(_impl, "storage"), expect=equal_to(ARGS[2], "the storage passed to it")),
    # gon_sweeper/_impl.py _open_study: `sw.recorded_study(..., self.study_name, ...)`
    Item(f"{IMPL}.OptunaSweeperImpl(...).study_name", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._open_study reads it",
         get=attr(_impl, "study_name"), expect=equal_to(ARGS[3], "the study_name passed to it")),
    # gon_sweeper/_impl.py _search_space: `n_trials = self.n_trials`
    Item(f"{IMPL}.OptunaSweeperImpl(...).n_trials", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._search_space reads it",
         get=attr(_impl, "n_trials"), expect=equal_to(ARGS[4], "the n_trials passed to it")),
    # gon_sweeper/_impl.py _batch_size: `elif self.n_jobs: n = self.n_jobs`
    Item(f"{IMPL}.OptunaSweeperImpl(...).n_jobs", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._batch_size reads it",
         get=attr(_impl, "n_jobs"), expect=equal_to(ARGS[5], "the n_jobs passed to it")),
    # gon_sweeper/_impl.py _sweep: `int(self.max_failure_rate * n_trials)`
    Item(f"{IMPL}.OptunaSweeperImpl(...).max_failure_rate", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._sweep reads it",
         get=attr(_impl, "max_failure_rate"),
         expect=equal_to(ARGS[6], "the max_failure_rate passed to it")),
    # gon_sweeper/_impl.py _sweep: the fingerprint's `(self.params or {}).items()`
    Item(f"{IMPL}.OptunaSweeperImpl(...).params", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._sweep reads it",
         get=attr(_impl, "params"), expect=equal_to(PARAMS, "the params passed to it")),
    # --- hydra-optuna-sweeper: what OptunaSweeperImpl.setup (inherited) leaves on self
    # gon_sweeper/_impl.py: `self.config` in _search_space, _batch_size, _open_study, _sweep
    Item(f"{IMPL}.OptunaSweeperImpl.setup(...).config", HOS,
         "gon_sweeper/_impl.py: ResumableSweep reads it throughout",
         get=attr(_impl_set_up, "config"), expect=equal_to(CONFIG, "the config passed to setup")),
    # gon_sweeper/_impl.py _run: `self.hydra_context.config_loader.load_sweep_config(...)`
    Item(f"{IMPL}.OptunaSweeperImpl.setup(...).hydra_context", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._run reads it",
         get=attr(_impl_set_up, "hydra_context"),
         expect=equal_to(CONTEXT, "the hydra_context passed to setup")),
    # gon_sweeper/_impl.py _run: `self.launcher.launch(...)`; _batch_size: `self.launcher.joblib`
    Item(f"{IMPL}.OptunaSweeperImpl.setup(...).launcher", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._run and _batch_size read it",
         get=attr(_impl_set_up, "launcher"),
         expect=equal_to(LAUNCHER, "the launcher Plugins.instantiate_launcher made")),
    # --- hydra-optuna-sweeper: the OptunaSweeper that GonOptunaSweeper subclasses
    # gon_sweeper.py GonOptunaSweeper.__init__: `super().__init__(sampler, ..., params)`
    Item(f"{SWEEPER}.__init__", HOS,
         "gon_sweeper.py: GonOptunaSweeper.__init__ calls it with nine positional arguments",
         params=INIT, positional=True),
    # gon_sweeper.py GonOptunaSweeper.__init__: `base = self.sweeper`; `self.sweeper = ...`
    Item(f"{SWEEPER}(...).sweeper", HOS,
         "gon_sweeper.py: GonOptunaSweeper.__init__ reads it and puts a ResumableSweep there",
         get=attr(_optuna_sweeper, "sweeper"),
         expect=Expect(_is_impl, "an OptunaSweeperImpl")),
    # gon_sweeper.py GonOptunaSweeper.__init__: `ResumableSweep(base.sampler, ...)`
    Item(f"{SWEEPER}(...).sweeper.sampler", HOS,
         "gon_sweeper.py: GonOptunaSweeper.__init__ hands it (the instantiated sampler config) "
         "to ResumableSweep", get=attr(lambda: _optuna_sweeper().sweeper, "sampler"),
         expect=instance_of(lambda: optuna.samplers.BaseSampler, "an Optuna sampler")),
    # gon_sweeper.py: GonOptunaSweeper inherits setup, which must reach its ResumableSweep
    Item(f"{SWEEPER}.setup(...)->.sweeper.setup", HOS,
         "gon_sweeper.py: GonOptunaSweeper inherits it to set up its ResumableSweep",
         get=_forwarded("setup"), expect=equal_to(["setup"], "a call of self.sweeper.setup")),
    # gon_sweeper.py: GonOptunaSweeper inherits sweep, which must reach ResumableSweep.sweep
    Item(f"{SWEEPER}.sweep(...)->.sweeper.sweep", HOS,
         "gon_sweeper.py: GonOptunaSweeper inherits it to run ResumableSweep.sweep",
         get=_forwarded("sweep"), expect=equal_to(["sweep"], "a call of self.sweeper.sweep")),
    # gon_sweeper.py: `class GonOptunaSweeperConf(OptunaSweeperConf)`; Hydra passes every
    # field but _target_ and defaults to GonOptunaSweeper.__init__, which takes only INIT's
    Item(f"{CONF}.OptunaSweeperConf", HOS,
         "gon_sweeper.py: GonOptunaSweeperConf subclasses it and GonOptunaSweeper.__init__ "
         "takes its fields", params=("_target_", "defaults", *INIT), exact=True),
    # gon_sweeper/_impl.py _search_space: `isinstance(self.sampler, functools.partial) and
    # self.sampler.func is optuna.samplers.GridSampler`
    Item(f"{CONF}.GridSamplerConfig._partial_", HOS,
         "gon_sweeper/_impl.py: ResumableSweep._search_space spots a GridSampler as a partial",
         expect=equal_to(True, "True")),
    # --- optuna: private attributes
    # gon/app/sweep_trials.py requeue: `storage = study._storage`; gon_sweeper/_impl.py _run:
    # `study._storage.get_trial(t._trial_id)`
    Item("optuna.create_study()._storage", OPTUNA,
         "gon/app/sweep_trials.py: requeue writes through it; gon_sweeper/_impl.py: "
         "ResumableSweep._run reads trials by it", get=attr(_study, "_storage"),
         expect=Expect(_is_storage, "an optuna.storages.BaseStorage")),
    # gon_sweeper/_impl.py _run: `study._storage.get_trial(t._trial_id)` (t from study.ask())
    Item("optuna.Study.ask()._trial_id", OPTUNA,
         "gon_sweeper/_impl.py: ResumableSweep._run passes it to study._storage.get_trial",
         get=attr(_trial, "_trial_id"), expect=instance_of(lambda: int, "an int")),
    # gon/app/sweep_trials.py requeue: `storage.set_trial_*(trial._trial_id, ...)` (FrozenTrial)
    Item("optuna.Study.get_trials()[i]._trial_id", OPTUNA,
         "gon/app/sweep_trials.py: requeue passes it to the storage's setters",
         get=attr(_frozen_trial, "_trial_id"), expect=instance_of(lambda: int, "an int")),
    # --- optuna: the storage methods we call through study._storage
    # gon_sweeper/_impl.py _run: `study._storage.get_trial(t._trial_id)`
    Item("optuna.storages.BaseStorage.get_trial", OPTUNA,
         "gon_sweeper/_impl.py: ResumableSweep._run calls it on study._storage",
         params=("trial_id",), positional=True),
    # gon/app/sweep_trials.py requeue: `storage.set_trial_user_attr(trial._trial_id, KEY, v)`
    Item("optuna.storages.BaseStorage.set_trial_user_attr", OPTUNA,
         "gon/app/sweep_trials.py: requeue calls it on study._storage",
         params=("trial_id", "key", "value"), positional=True),
    # gon/app/sweep_trials.py requeue: `storage.set_trial_state_values(trial._trial_id, FAIL)`
    Item("optuna.storages.BaseStorage.set_trial_state_values", OPTUNA,
         "gon/app/sweep_trials.py: requeue calls it on study._storage",
         params=("trial_id", "state"), positional=True),
    # indirect: upstream OptunaSweeperImpl._configure_trials calls
    # `trial._suggest(param_name, distribution)`, and ResumableSweep._run calls that
    Item("optuna.trial.Trial._suggest", OPTUNA,
         "upstream OptunaSweeperImpl._configure_trials calls it for gon_sweeper/_impl.py's "
         "ResumableSweep._run", params=("name", "distribution"), positional=True),
    # --- hydra-joblib-launcher: the launcher's undocumented joblib kwargs
    # gon_sweeper/_impl.py _batch_size: `joblib = getattr(self.launcher, "joblib", None)`,
    # `joblib["n_jobs"] = n`, `joblib.get("n_jobs", -1)`; a rename is silently skipped there
    Item("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher(n_jobs=2).joblib",
         JOBLIB, "gon_sweeper/_impl.py: ResumableSweep._batch_size reads and sets its n_jobs "
         "(and would silently skip a renamed one)", get=attr(_joblib_launcher, "joblib"),
         expect=Expect(lambda v: isinstance(v, MutableMapping) and v.get("n_jobs") == 2,
                       "a mutable mapping of its kwargs ({'n_jobs': 2})")),
]


# ---------------------------------------------------------------- the checks
def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _one_line(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    return f"{_one_line(repr(value), 80)} ({type(value).__qualname__})"


def _parameters(owner: Any, name: str, value: Any) -> list[inspect.Parameter]:
    """The parameters a caller passes: without self where the item is a plain method."""
    params = list(inspect.signature(value).parameters.values())
    if inspect.isclass(owner) and inspect.isfunction(value) and not isinstance(
            inspect.getattr_static(owner, name), staticmethod | classmethod):
        params = params[1:]
    return params


def _format(params: list[inspect.Parameter]) -> str:
    star = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return ", ".join(star.get(p.kind, "") + p.name + ("=..." if p.default is not p.empty else "")
                     for p in params)


def _signature_problem(item: Item, params: list[inspect.Parameter]) -> tuple[str, str] | None:
    """(what changed, what the baseline had) if the callable no longer takes what we pass."""
    want = list(item.params or ())
    by_position = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    names = [p.name for p in params]
    if item.positional:
        positional = [p.name for p in params if p.kind in by_position]
        if positional[: len(want)] != want:
            return (f"takes ({_format(params)}) now; we pass ({', '.join(want)}) by position",
                    "took them in that order")
    else:
        missing = [w for w in want if w not in names]
        if missing and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return (f"lost parameter(s) {', '.join(missing)}; takes ({_format(params)}) now",
                    f"took ({', '.join(want)})")
    if item.exact and (extra := [n for n in names if n not in want]):
        return f"has new parameter(s) {', '.join(extra)}", f"had only ({', '.join(want)})"
    required = [p.name for p in params
                if p.name not in want and p.default is p.empty and p.kind not in variadic]
    if required:
        return (f"has new required parameter(s) {', '.join(required)} that we do not pass",
                f"took ({', '.join(want)})")
    return None


def _problem(item: Item) -> tuple[str, str] | None:
    """(what changed, what the baseline had), or None if the item is as we rely on it."""
    try:
        if item.get is not None:
            owner, name, value = None, "", item.get()
        else:
            owner, name, value = _resolve(item.name)
    except Gone as e:
        return "gone" + (f": {e}" if str(e) else ""), "had it"
    except Exception as e:
        return f"could not be read: {type(e).__name__}: {e}", "had it"
    if item.params is not None:
        if not callable(value):
            return f"is not callable now: {_describe(value)}", "had a callable"
        try:
            params = _parameters(owner, name, value)
        except (TypeError, ValueError) as e:
            return f"has no readable signature now: {e}", "had one"
        if problem := _signature_problem(item, params):
            return problem
    if item.expect is not None:
        try:
            ok = item.expect.test(value)
        except Gone as e:
            return f"could not be checked: {e or 'gone'}", f"gave {item.expect.text}"
        except Exception as e:
            return f"could not be checked: {type(e).__name__}: {e}", f"gave {item.expect.text}"
        if not ok:
            return f"is now {_describe(value)}, not {item.expect.text}", f"gave {item.expect.text}"
    return None


@pytest.mark.parametrize("item", ITEMS, ids=[item.name for item in ITEMS])
def test_upstream_item(item: Item) -> None:
    """The upstream item is still there, as our code uses it (see the module docstring)."""
    found = _problem(item)
    if found is None:
        return
    problem, had = found
    installed = ", ".join(f"{p} {_version(p)}" for p in dict.fromkeys((HOS, OPTUNA, item.package)))
    pytest.fail(_one_line(f"{item.name}: {problem} ({item.package} {BASELINE[item.package]} "
                          f"{had}; installed: {installed}); {item.used}", limit=1000),
                pytrace=False)
