"""Hyperparameter search: expand a search space into candidates, cross-validate one, select the best, report.

The pipeline fans the candidates out with `dsl.ParallelFor` (one training task per candidate; parallel pods on a
cluster, one after another under `kfp.local`) and gathers the scores with `dsl.Collected`. Every function here is
plain and typed so the KFP components stay thin, and the scores are JSON-safe dicts because they cross KFP between
tasks (where every number becomes a double: a `candidate_id` of `2` arrives as `2.0`).

Only the training split is touched: each candidate is scored by K-fold cross-validation on it (stratified for
classification), so the test split stays unseen until the winner is evaluated once.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from components.constants import MAX_SEARCH_CANDIDATES

if TYPE_CHECKING:
    import pandas as pd

    from components.features import FeatureSchema

CANDIDATE_KEYS = ("model_family", "hyperparameters")
"""Keys of a search-space entry that is one configuration."""
GRID_KEY = "grid"
"""Key of a search-space entry whose values (lists) are crossed into one candidate per combination."""
SEARCH_SIZE_KEY = "search_size"
"""Every candidate carries the number of candidates: the only candidate of a search is not cross-validated."""
_SHOWN = 60


class SearchSpaceError(ValueError):
    """The search space, or a setting of the search, cannot be used; the one-line message says why."""


def _short(value: Any) -> str:
    """`value` as compact JSON (or repr), cut so that a message stays one short line."""
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _entry_candidates(index: int, entry: Any, *, model_family: str) -> list[dict[str, Any]]:
    """The configurations one entry stands for: itself, or the cartesian product of its grid."""
    where = f"search_space[{index}]"
    if not isinstance(entry, Mapping):
        raise SearchSpaceError(
            f"{where} is {_short(entry)}; each entry is an object like "
            '{"model_family": "random_forest", "hyperparameters": {...}} or {"model_family": ..., "grid": {...}}'
        )
    unknown = sorted(str(key) for key in entry if key not in (*CANDIDATE_KEYS, GRID_KEY))
    if unknown:
        raise SearchSpaceError(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; an entry takes model_family, "
            f"hyperparameters and (optional) {GRID_KEY}"
        )
    family = entry.get("model_family", model_family)
    if not isinstance(family, str) or not family.strip():
        raise SearchSpaceError(f"{where}.model_family must be a non-empty string, not {_short(family)}")
    fixed = entry.get("hyperparameters", {})
    if not isinstance(fixed, Mapping):
        raise SearchSpaceError(f"{where}.hyperparameters must be an object of name -> value, not {_short(fixed)}")
    if GRID_KEY not in entry:
        return [{"model_family": family, "hyperparameters": dict(fixed)}]
    grid = entry[GRID_KEY]
    if not isinstance(grid, Mapping) or not grid:
        raise SearchSpaceError(
            f"{where}.{GRID_KEY} must be a non-empty object of name -> list of values, not {_short(grid)}"
        )
    # Sorted names: a protobuf Struct (how KFP passes a dict) keeps no key order, so ids must not depend on it.
    names = sorted(str(name) for name in grid)
    for name in names:
        values = grid[name]
        if not isinstance(values, list) or not values:
            raise SearchSpaceError(
                f"{where}.{GRID_KEY}.{name} must be a non-empty list of values, not {_short(values)}"
            )
        if name in fixed:
            raise SearchSpaceError(f"{where} sets {name!r} both in hyperparameters and in {GRID_KEY}; keep one")
    # The cap is checked before the product is built, so a huge grid costs nothing.
    size = math.prod(len(grid[name]) for name in names)
    if size > MAX_SEARCH_CANDIDATES:
        raise SearchSpaceError(_too_many(size))
    return [
        {"model_family": family, "hyperparameters": {**fixed, **dict(zip(names, combination, strict=True))}}
        for combination in itertools.product(*(grid[name] for name in names))
    ]


def _too_many(count: int) -> str:
    return (
        f"search_space expands to {count} candidates; at most {MAX_SEARCH_CANDIDATES} are allowed (each one trains "
        "cv_folds times): use fewer grid values or split the search into runs"
    )


def expand_search_space(
    search_space: Sequence[Any] | Mapping[str, Any],
    *,
    model_family: str,
    hyperparameters: Mapping[str, Any],
    task: str = "",
) -> list[dict[str, Any]]:
    """Turn a search space into the list of candidates the pipeline fans out over.

    Args:
        search_space: `[]` for today's single training (the run's `model_family` and `hyperparameters`); or a list
            of entries; or one entry. An entry is one configuration, `{"model_family": ..., "hyperparameters":
            {...}}`, or a grid, `{"model_family": ..., "grid": {"name": [v1, v2], ...}, "hyperparameters": {...}}`
            (one candidate per combination, fixed `hyperparameters` added to each). An entry without
            `model_family` uses the run's; a candidate's hyperparameters override the family's defaults only (the
            run's `hyperparameters` apply to the empty search space alone).
        model_family: The run's model family.
        hyperparameters: The run's hyperparameters.
        task: `classification` or `regression` when known: each candidate's family and hyperparameters are then
            checked as training would check them (empty: the structure only, e.g. in pre-flight before the data).

    Returns:
        Candidates in order, each `{"candidate_id": 0.., "model_family", "hyperparameters", "search_size"}`.

    Raises:
        SearchSpaceError: A malformed entry, a duplicate candidate, more than `MAX_SEARCH_CANDIDATES` candidates or
            (with `task`) a family or hyperparameter training would refuse; one line naming the entry.
    """
    if isinstance(search_space, Mapping):
        entries: list[Any] = [search_space] if search_space else []
    elif isinstance(search_space, list | tuple):
        entries = list(search_space)
    else:
        raise SearchSpaceError(
            f"search_space must be a list of entries (or one entry object), not {type(search_space).__name__}"
        )
    if not entries:
        if not isinstance(hyperparameters, Mapping):
            raise SearchSpaceError(f"hyperparameters must be an object of name -> value, not {_short(hyperparameters)}")
        configurations = [{"model_family": model_family, "hyperparameters": dict(hyperparameters)}]
    else:
        configurations = []
        for index, entry in enumerate(entries):
            configurations += _entry_candidates(index, entry, model_family=model_family)
            if len(configurations) > MAX_SEARCH_CANDIDATES:
                raise SearchSpaceError(_too_many(_count(entries, model_family)))
    seen: dict[str, int] = {}
    for candidate_id, configuration in enumerate(configurations):
        key = json.dumps(_as_doubles(configuration), sort_keys=True, default=repr)
        if key in seen:
            raise SearchSpaceError(
                f"search_space lists the same configuration twice (candidates {seen[key]} and {candidate_id}: "
                f"{_short(configuration)})"
            )
        seen[key] = candidate_id
    if task:
        for candidate_id, configuration in enumerate(configurations):
            _check_candidate(candidate_id, configuration, task)
    return [
        {"candidate_id": candidate_id, **configuration, SEARCH_SIZE_KEY: len(configurations)}
        for candidate_id, configuration in enumerate(configurations)
    ]


def _as_doubles(value: Any) -> Any:
    """`value` with every int a float: what KFP delivers, so `1` and `1.0` count as the same configuration."""
    if isinstance(value, Mapping):
        return {str(k): _as_doubles(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_doubles(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _count(entries: list[Any], model_family: str) -> int:
    """How many candidates well-formed `entries` stand for (for the cap's message)."""
    total = 0
    for entry in entries:
        grid = entry.get(GRID_KEY) if isinstance(entry, Mapping) else None
        total += math.prod(len(v) for v in grid.values() if isinstance(v, list)) if isinstance(grid, Mapping) else 1
    return total


def _check_candidate(candidate_id: int, configuration: Mapping[str, Any], task: str) -> None:
    from components.estimators import check_training_config

    try:
        check_training_config(configuration["model_family"], task, configuration["hyperparameters"])
    except ValueError as exc:
        raise SearchSpaceError(f"search_space candidate {candidate_id}: {exc}") from None


def _candidate_id(candidate: Mapping[str, Any]) -> int:
    """The candidate's id as an int (KFP hands it over as a double)."""
    raw = candidate.get("candidate_id")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not float(raw).is_integer() or raw < 0:
        raise SearchSpaceError(f"a candidate needs a non-negative integer candidate_id, got {_short(raw)}")
    return int(raw)


def _fold_splitter(task: str, y: Any, *, folds: int, seed: int) -> Any:
    """K folds over the training rows: stratified for classification, so every fold sees every class."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise SearchSpaceError(f"cv_folds must be an integer of at least 2, not {folds!r}")
    if folds > len(y):
        raise SearchSpaceError(f"cv_folds is {folds} but the training split has only {len(y)} rows; lower cv_folds")
    if task != "classification":
        return KFold(n_splits=folds, shuffle=True, random_state=seed)
    labels, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
    rarest = int(np.argmin(counts))
    if counts[rarest] < folds:
        raise SearchSpaceError(
            f"cv_folds is {folds} but class {labels[rarest][:40]!r} has only {counts[rarest]} rows in the training "
            f"split; stratified folds need at least cv_folds rows per class: lower cv_folds"
        )
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def cross_validate_candidate(
    train_frame: pd.DataFrame,
    schema: FeatureSchema,
    candidate: Mapping[str, Any],
    *,
    folds: int,
    seed: int,
    metric: str,
) -> dict[str, Any]:
    """Score one candidate by K-fold cross-validation on the training split (the test split is never read).

    Each fold fits exactly what the train step would fit (`components.train.train_model`: the estimator and its
    preprocessing for `schema`) on the other folds, and scores it on the fold with `components.evaluate.score`. The
    only candidate of a search (`search_size` 1, i.e. an empty search space) is not cross-validated: it wins anyway,
    and a large dataset should not pay for `folds` extra fits.

    Args:
        train_frame: The training split (features and label).
        schema: The feature schema of the data step.
        candidate: One item of `expand_search_space`.
        folds: Number of folds (at least 2; at most the rows of the rarest class for classification).
        seed: Seed of the fold shuffle and of the estimator.
        metric: A key of `components.evaluate.GATE_METRICS` valid for the task (e.g. `default_metric(task)`).

    Returns:
        `{"candidate_id", "model_family", "hyperparameters", "metric", "mean", "std", "folds": [score per fold],
        "note"}`; `mean`/`std` are NaN when the candidate was not cross-validated (`note` says why).

    Raises:
        SearchSpaceError: A bad `folds`, too few rows per class, or a malformed candidate.
    """
    import numpy as np

    from components.evaluate import GATE_METRICS

    candidate_id = _candidate_id(candidate)
    family, hyperparameters = candidate.get("model_family"), candidate.get("hyperparameters", {})
    if not isinstance(family, str) or not isinstance(hyperparameters, Mapping):
        raise SearchSpaceError(f"candidate {candidate_id} needs a model_family string and a hyperparameters object")
    if metric not in GATE_METRICS:
        raise SearchSpaceError(f"unknown metric {metric!r}; choose one of: {', '.join(GATE_METRICS)}")
    result: dict[str, Any] = {
        "candidate_id": candidate_id,
        "model_family": family,
        "hyperparameters": dict(hyperparameters),
        "metric": metric,
        "mean": math.nan,
        "std": math.nan,
        "folds": [],
        "note": "",
    }
    if int(candidate.get(SEARCH_SIZE_KEY, 0) or 0) == 1:
        result["note"] = "the only candidate: not cross-validated"
        return result
    from components.evaluate import score
    from components.features import feature_matrix
    from components.train import train_model

    y = train_frame[schema.label_column].to_numpy()
    x = feature_matrix(train_frame, schema)
    splitter = _fold_splitter(schema.task, y, folds=folds, seed=seed)
    scores: list[float] = []
    for fit_rows, held_rows in splitter.split(np.zeros(len(y)), y):
        model = train_model(
            train_frame.iloc[fit_rows],
            schema=schema,
            model_family=family,
            hyperparameters=dict(hyperparameters),
            seed=seed,
        )
        scores.append(float(score(model.estimator, x[held_rows], y[held_rows], metric=metric, task=schema.task)))
    result.update(mean=float(np.mean(scores)), std=float(np.std(scores)), folds=scores)
    return result


def _direction(metric: str) -> str:
    from components.evaluate import GATE_METRICS

    if metric not in GATE_METRICS:
        raise SearchSpaceError(f"unknown metric {metric!r}; choose one of: {', '.join(GATE_METRICS)}")
    return GATE_METRICS[metric]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def select_best(scores: Sequence[Mapping[str, Any]], *, metric: str) -> dict[str, Any]:
    """The candidate with the best mean cross-validation score, in the metric's direction.

    Ties go to the lowest `candidate_id`, so the choice does not depend on the order in which `dsl.Collected`
    hands the scores over. A candidate without a finite mean (not cross-validated, or a metric sklearn could not
    compute) never beats one with a score; it is chosen only when it is the only candidate.

    Args:
        scores: Outputs of `cross_validate_candidate`, in any order.
        metric: The metric they were scored on (`components.evaluate.GATE_METRICS` gives its direction).

    Returns:
        A copy of the winning score dict.

    Raises:
        SearchSpaceError: No scores, scores on another metric, or several candidates and none with a score.
    """
    direction = _direction(metric)
    if not scores:
        raise SearchSpaceError("no candidate was scored: the search space expanded to nothing")
    ordered = sorted(scores, key=_candidate_id)
    other = [s for s in ordered if s.get("metric") != metric]
    if other:
        raise SearchSpaceError(
            f"candidate {_candidate_id(other[0])} was scored on {other[0].get('metric')!r}, not {metric!r}"
        )
    if len(ordered) == 1:
        return dict(ordered[0])
    scored = [s for s in ordered if _finite(s.get("mean"))]
    if not scored:
        raise SearchSpaceError(f"none of the {len(ordered)} candidates has a finite cross-validated {metric}")
    sign = 1.0 if direction == "higher" else -1.0
    best = scored[0]
    for entry in scored[1:]:
        if sign * float(entry["mean"]) > sign * float(best["mean"]):  # strictly better: ties keep the lower id
            best = entry
    return dict(best)


def _number(value: Any) -> str:
    return f"{float(value):.4f}" if _finite(value) else "n/a"


def render_search_report(scores: Sequence[Mapping[str, Any]], best: Mapping[str, Any]) -> str:
    """A Markdown report for KFP's viewer: every candidate, its cross-validation scores, and the winner.

    Args:
        scores: Outputs of `cross_validate_candidate`, any order.
        best: What `select_best` returned.
    """
    metric = str(best.get("metric", ""))
    best_id = _candidate_id(best)
    ordered = sorted(scores, key=_candidate_id)
    direction = _direction(metric) if metric else "higher"
    lines = ["# Model search", ""]
    folds = max((len(s.get("folds") or []) for s in ordered), default=0)
    how = f"{folds}-fold cross-validation on the training split" if folds else "not cross-validated"
    lines += [
        f"{len(ordered)} candidate(s), {how}; metric **{metric}** ({direction} is better).",
        "",
        f"**Selected:** candidate {best_id}, {best.get('model_family')} {_short(best.get('hyperparameters', {}))}"
        + (f", mean {metric} {_number(best.get('mean'))}" if _finite(best.get("mean")) else ""),
        "",
        "| candidate | model family | hyperparameters | mean | std | folds | |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in ordered:
        candidate_id = _candidate_id(entry)
        per_fold = ", ".join(_number(v) for v in entry.get("folds") or []) or str(entry.get("note") or "")
        params = json.dumps(entry.get("hyperparameters", {}), sort_keys=True).replace("|", "\\|")
        mark = "**selected**" if candidate_id == best_id else ""
        lines.append(
            f"| {candidate_id} | {entry.get('model_family')} | `{params}` | {_number(entry.get('mean'))} | "
            f"{_number(entry.get('std'))} | {per_fold} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def search_metrics(scores: Sequence[Mapping[str, Any]], best: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics for KFP's `Metrics` artifact: every candidate's mean and std, and the selected id."""
    metric = str(best.get("metric", ""))
    values: dict[str, float] = {"selected_candidate": float(_candidate_id(best))}
    for entry in sorted(scores, key=_candidate_id):
        candidate_id = _candidate_id(entry)
        for stat in ("mean", "std"):
            if _finite(entry.get(stat)):
                values[f"candidate_{candidate_id}_cv_{metric}_{stat}"] = float(entry[stat])
    return values
