"""Which scikit-learn estimator a `model_family` names, with what hyperparameters, checked before any data is read.

`model_family` is a pipeline parameter, so whoever starts a run chooses it. It is either a short name of
`FAMILIES`, `auto`, or the public import path of a scikit-learn classifier or regressor
(`sklearn.ensemble.ExtraTreesClassifier`). A path is looked up in the table `sklearn.utils.all_estimators` builds
from scikit-learn's own modules, and the class comes from that table: the string itself is never imported, so a
parameter can never load other code (`os.system`, a module with import-time effects). Estimators that need another
estimator as an argument (voting, stacking, one-vs-rest ...) or predict several targets at once are refused too:
a JSON hyperparameter cannot build them and the serving contract has one target.

Importing this module is cheap (no scikit-learn): pre-flight checks import it before any step runs.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.features import Task

AUTO_FAMILY = "auto"
"""The default `model_family`: `AUTO_FAMILIES[task]`."""
FAMILIES: dict[str, tuple[str | None, str | None]] = {
    "logistic_regression": ("sklearn.linear_model.LogisticRegression", None),
    "linear_regression": (None, "sklearn.linear_model.LinearRegression"),
    "ridge": (None, "sklearn.linear_model.Ridge"),
    "svm": ("sklearn.svm.SVC", "sklearn.svm.SVR"),
    "knn": ("sklearn.neighbors.KNeighborsClassifier", "sklearn.neighbors.KNeighborsRegressor"),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor"),
    "extra_trees": ("sklearn.ensemble.ExtraTreesClassifier", "sklearn.ensemble.ExtraTreesRegressor"),
    "gradient_boosting": (
        "sklearn.ensemble.GradientBoostingClassifier",
        "sklearn.ensemble.GradientBoostingRegressor",
    ),
    "hist_gradient_boosting": (
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.ensemble.HistGradientBoostingRegressor",
    ),
}
"""Short name -> (classifier import path, regressor import path); None where the family has no such estimator.

Every classifier here has `predict_proba`, so a served classification model can always answer probabilities
(which is why `ridge` has no classifier: `RidgeClassifier` has none; its path is still accepted)."""
AUTO_FAMILIES: dict[str, str] = {"classification": "logistic_regression", "regression": "ridge"}
"""What `auto` means per task: fast, robust linear baselines that ONNX reproduces exactly."""

_FOREST_DEFAULTS: dict[str, Any] = {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1, "n_jobs": 1}
ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "sklearn.linear_model.LogisticRegression": {"C": 1.0, "max_iter": 1000},
    "sklearn.linear_model.Ridge": {"alpha": 1.0},
    "sklearn.svm.SVC": {"C": 1.0, "kernel": "rbf", "probability": True},
    "sklearn.svm.SVR": {"C": 1.0, "kernel": "rbf"},
    "sklearn.neighbors.KNeighborsClassifier": {"n_neighbors": 5},
    "sklearn.neighbors.KNeighborsRegressor": {"n_neighbors": 5},
    "sklearn.ensemble.RandomForestClassifier": _FOREST_DEFAULTS,
    "sklearn.ensemble.RandomForestRegressor": _FOREST_DEFAULTS,
    "sklearn.ensemble.ExtraTreesClassifier": _FOREST_DEFAULTS,
    "sklearn.ensemble.ExtraTreesRegressor": _FOREST_DEFAULTS,
    "sklearn.ensemble.GradientBoostingClassifier": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3},
    "sklearn.ensemble.GradientBoostingRegressor": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3},
    "sklearn.ensemble.HistGradientBoostingClassifier": {"max_iter": 100, "learning_rate": 0.1},
    "sklearn.ensemble.HistGradientBoostingRegressor": {"max_iter": 100, "learning_rate": 0.1},
}
"""Hyperparameters an estimator starts from, by import path (so a short name and its path train alike); the run's
`hyperparameters` override them. Forests use one core (`n_jobs=1`: steps share the node), logistic regression gets
room to converge, SVC computes probabilities so they can be served."""

_SCALE_FREE_MODULES = ("sklearn.tree", "sklearn.ensemble", "sklearn.naive_bayes", "sklearn.dummy")
"""Estimators from these packages compare a feature only with itself (splits, counts): scaling changes nothing."""
_ROLE = {"classification": "classifier", "regression": "regressor"}


class TrainingConfigError(ValueError):
    """The model family or a hyperparameter is not valid; the message names it and what is allowed."""


@dataclass(frozen=True)
class EstimatorChoice:
    """A resolved `model_family`: what to record, what to build."""

    family: str
    """The short name (`auto` resolved) or the import path as given: recorded as the card's `model_family`."""
    path: str
    """Public import path of the estimator class, e.g. `sklearn.ensemble.RandomForestClassifier`."""
    cls: Any
    """The estimator class."""
    task: str

    @property
    def needs_scaling(self) -> bool:
        """Whether the estimator compares features with each other (linear, SVM, KNN, MLP ...), so scale matters."""
        return needs_scaling(self.cls)

    @property
    def defaults(self) -> dict[str, Any]:
        """The project's starting hyperparameters for this estimator (may be empty: sklearn's own defaults)."""
        return dict(ESTIMATOR_DEFAULTS.get(self.path, {}))


def needs_scaling(estimator: Any) -> bool:
    """Whether an estimator (class or instance) needs standardized inputs: all but trees, naive Bayes and dummies.

    Also decides the categorical encoding (`components.preprocessing`): what needs scaling gets one-hot columns,
    since an ordinal code would be read as a distance; trees get one ordinal column per feature.
    """
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return not _public_module(cls.__module__).startswith(_SCALE_FREE_MODULES)


def short_names(task: str) -> list[str]:
    """The short names that have an estimator for `task` ("" = for any task)."""
    index = {"classification": 0, "regression": 1}
    return [
        name for name, paths in FAMILIES.items() if (paths[index[task]] if task in index else any(paths)) is not None
    ]


def resolve_estimator(model_family: str, task: Task) -> EstimatorChoice:
    """The estimator `model_family` names for `task`.

    Args:
        model_family: `auto`, a short name of `FAMILIES`, or the public import path of a scikit-learn classifier
            (task classification) or regressor (task regression).
        task: `classification` or `regression`.

    Raises:
        TrainingConfigError: Anything else, in one line that says what is allowed.
    """
    if task not in _ROLE:
        raise TrainingConfigError(f"task must be classification or regression, got {task!r}")
    if not isinstance(model_family, str) or not model_family:
        raise TrainingConfigError(f"model_family must be a non-empty string; {_allowed(task)}")
    family = AUTO_FAMILIES[task] if model_family == AUTO_FAMILY else model_family
    if family in FAMILIES:
        path = FAMILIES[family][0 if task == "classification" else 1]
        if path is None:
            raise TrainingConfigError(
                f"model_family '{family}' has no {_ROLE[task]}, and the task is {task}; {_allowed(task)}"
            )
        # Our own constant, never the parameter: importing it cannot run anything a user chose.
        module, _, name = path.rpartition(".")
        return EstimatorChoice(family=family, path=path, cls=getattr(importlib.import_module(module), name), task=task)
    if not family.startswith("sklearn."):
        raise TrainingConfigError(f"unknown model_family {_shown(family)}; {_allowed(task)}")
    return EstimatorChoice(family=family, path=family, cls=_sklearn_class(family, task), task=task)


def _shown(value: str) -> str:
    return repr(value[:80] + ("..." if len(value) > 80 else ""))


def _type_filter(task: str) -> str:
    return f"type_filter='{_ROLE[task]}'" if task in _ROLE else ""


def _allowed(task: str) -> str:
    role = _ROLE.get(task, "classifier or regressor")
    example = (
        "sklearn.ensemble.ExtraTreesRegressor" if task == "regression" else "sklearn.ensemble.ExtraTreesClassifier"
    )
    return (
        f"choose {AUTO_FAMILY}, one of {', '.join(short_names(task))}, or the public import path of a scikit-learn "
        f"{role} such as {example} (the list: sklearn.utils.all_estimators({_type_filter(task)}))"
    )


@functools.cache
def sklearn_estimators() -> dict[str, tuple[str, Any]]:
    """Public import path -> (role, class) of every scikit-learn classifier and regressor this project can train.

    Built from `sklearn.utils.all_estimators`, which imports only scikit-learn's own modules. The public path is the
    estimator's module with its private parts (`_forest`) cut off, kept only when that public module exports the
    very same class. Left out (see `_unsupported_reason`): meta-estimators whose constructor requires another
    estimator, and multi-target ones.
    """
    return {path: (role, cls) for path, (role, cls, reason) in _sklearn_table().items() if not reason}


@functools.cache
def _sklearn_table() -> dict[str, tuple[str, Any, str]]:
    """Public path -> (role, class, why it cannot be trained here or "")."""
    import warnings

    from sklearn.utils import all_estimators

    table: dict[str, tuple[str, Any, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated estimators warn when instantiated for their tags
        for role in ("classifier", "regressor"):
            for name, cls in all_estimators(type_filter=role):
                public = _public_module(cls.__module__)
                if getattr(importlib.import_module(public), name, None) is cls:
                    table[f"{public}.{name}"] = (role, cls, _unsupported_reason(cls))
    return table


def _unsupported_reason(cls: Any) -> str:
    required = _required_arguments(cls)
    if required:
        return f"it needs {', '.join(required)} (other estimators), which a JSON hyperparameter cannot give"
    try:
        single = bool(cls().__sklearn_tags__().target_tags.single_output)
    except Exception:  # an estimator that cannot even describe itself unconfigured cannot be trained from JSON
        return "it cannot be built from JSON hyperparameters alone"
    return "" if single else "it predicts several targets at once; the pipeline has one label"


def _public_module(module: str) -> str:
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join(parts[:index])
    return module


def _required_arguments(cls: Any) -> list[str]:
    """Constructor arguments without a default (an inner estimator, which no JSON value can be)."""
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in skip and p.default is inspect.Parameter.empty
    ]


def _sklearn_class(path: str, task: str) -> Any:
    """The class of a public sklearn path, from `sklearn_estimators()`, or a one-line refusal.

    `task` "" (not known yet): a classifier or a regressor.
    """
    table = _sklearn_table()
    if path not in table:
        trainable = [p for p, (_, _, reason) in table.items() if not reason]
        near = difflib.get_close_matches(path, trainable, n=1, cutoff=0.8)
        hint = f"did you mean {near[0]}? " if near else ""
        raise TrainingConfigError(
            f"model_family {_shown(path)} is not a scikit-learn classifier or regressor; {hint}{_allowed(task)}"
        )
    found_role, cls, reason = table[path]
    if reason:
        raise TrainingConfigError(f"model_family {path} cannot be trained by this pipeline: {reason}; {_allowed(task)}")
    if task and found_role != _ROLE[task]:
        counterpart = _counterpart(path, _ROLE[task], sklearn_estimators())
        hint = f"use {counterpart}, or " if counterpart else ""
        raise TrainingConfigError(
            f"model_family {path} is a {found_role}, but the task is {task}: {hint}{_allowed(task)}"
        )
    return cls


def _counterpart(path: str, role: str, table: Mapping[str, tuple[str, Any]]) -> str:
    """`...ForestRegressor` for `...ForestClassifier` and the like, when it exists in the wanted role."""
    swaps = [("Classifier", "Regressor"), ("Regressor", "Classifier"), ("SVC", "SVR"), ("SVR", "SVC")]
    for old, new in swaps:
        other = path.replace(old, new)
        if other != path and table.get(other, ("",))[0] == role:
            return other
    return ""


def resolve_hyperparameters(model_family: str, task: Task, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge `overrides` onto the estimator's defaults, typed and checked as the estimator's constraints say.

    A `dict` pipeline parameter crosses KFP as a protobuf `Struct`, whose numbers are doubles: `{"n_estimators":
    200}` reaches the step as `200.0`. So an integral float becomes an `int` wherever the estimator's own
    `_parameter_constraints` accept the int and not the float (`n_estimators`, `max_depth`, `max_iter`, ...), and
    stays a float where the float means something (`max_features=1.0` is "all features").

    Args:
        model_family: As `resolve_estimator` takes it.
        task: `classification` or `regression`.
        overrides: The run's `hyperparameters` (JSON values).

    Returns:
        The hyperparameters the estimator is built with (without `random_state`: the run's seed sets it).

    Raises:
        TrainingConfigError: An unknown family, a key the estimator does not take, or a value its constraints
            refuse (one line naming the parameter).
    """
    choice = resolve_estimator(model_family, task)
    return _checked(choice, overrides)


def _checked(choice: EstimatorChoice, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TrainingConfigError(f"hyperparameters must be a JSON object, got {type(overrides).__name__}")
    merged = {**choice.defaults, **(overrides or {})}
    accepted = set(choice.cls().get_params(deep=False))
    unknown = sorted(str(key) for key in set(merged) - accepted)
    if unknown:
        raise TrainingConfigError(
            f"{choice.family} does not take hyperparameter(s) {', '.join(unknown)}; it takes: "
            f"{', '.join(sorted(accepted))}"
        )
    constraints = getattr(choice.cls, "_parameter_constraints", {})
    typed = {name: _as_constrained_int(value, constraints.get(name, [])) for name, value in merged.items()}
    _check_constraints(choice, typed)
    return typed


def _as_constrained_int(value: Any, constraints: list[Any]) -> Any:
    """`value` as an int if it is an integral float that only an integer constraint of the parameter accepts."""
    if not isinstance(value, float) or not value.is_integer():
        return value
    from sklearn.utils._param_validation import make_constraint

    checks = [make_constraint(constraint) for constraint in constraints]
    wants_int = any(check.is_satisfied_by(int(value)) for check in checks)
    takes_float = any(check.is_satisfied_by(value) for check in checks)
    return int(value) if wants_int and not takes_float else value


def _check_constraints(choice: EstimatorChoice, params: Mapping[str, Any]) -> None:
    """Check `params` as `fit` would (the estimator's own validation), before any data is read."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        choice.cls(**params)._validate_params()
    except (InvalidParameterError, TypeError, ValueError) as exc:
        # sklearn's message names the parameter and the accepted range; keep it to one line.
        raise TrainingConfigError(
            f"invalid hyperparameters for {choice.family}: {' '.join(str(exc).split())}"
        ) from None


def check_training_config(model_family: str, task: str, hyperparameters: Mapping[str, Any] | None) -> None:
    """Pre-flight: refuse a family, path or hyperparameter that training would refuse, before any step runs.

    Args:
        model_family: As `resolve_estimator` takes it.
        task: `classification`, `regression`, or "" when the data step will infer it: then the family must have an
            estimator for some task whose constraints accept `hyperparameters` (training checks the task it gets).
        hyperparameters: The run's overrides.

    Raises:
        TrainingConfigError: One line naming what is wrong and what is allowed.
    """
    if task:
        resolve_hyperparameters(model_family, task, hyperparameters)  # type: ignore[arg-type]
        return
    problems: list[TrainingConfigError] = []
    for candidate in _tasks_of(model_family):
        try:
            resolve_hyperparameters(model_family, candidate, hyperparameters)  # type: ignore[arg-type]
            return
        except TrainingConfigError as exc:
            problems.append(exc)
    raise problems[0]


def _tasks_of(model_family: str) -> list[str]:
    """The tasks `model_family` has an estimator for, refusing (one line) what names no estimator at all."""
    if model_family == AUTO_FAMILY:
        return list(AUTO_FAMILIES)
    if model_family in FAMILIES:
        return [task for task, path in zip(_ROLE, FAMILIES[model_family], strict=True) if path is not None]
    if not isinstance(model_family, str) or not model_family.startswith("sklearn."):
        shown = _shown(model_family) if isinstance(model_family, str) else type(model_family).__name__
        raise TrainingConfigError(f"unknown model_family {shown}; {_allowed('')}")
    _sklearn_class(model_family, "")
    role = sklearn_estimators()[model_family][0]
    return [task for task, wanted in _ROLE.items() if wanted == role]


def build_estimator(choice: EstimatorChoice, hyperparameters: Mapping[str, Any], *, seed: int) -> Any:
    """An unfitted estimator with `hyperparameters` (already resolved) and the seed as `random_state` if it has one."""
    params = dict(hyperparameters)
    if "random_state" in choice.cls().get_params(deep=False):
        params.setdefault("random_state", seed)
    return choice.cls(**params)


def accepts_sparse(estimator: Any) -> bool:
    """Whether the estimator's `fit` takes a sparse matrix (one-hot output stays sparse only then)."""
    try:
        return bool(estimator.__sklearn_tags__().input_tags.sparse)
    except Exception:  # no tags: be safe, give it dense input
        return False
