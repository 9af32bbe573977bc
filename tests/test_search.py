"""Search: a search space expands right, bad ones are refused in one line, and the search picks what the data calls
for (a linear model on a linear boundary, a forest on an XOR), by cross-validation on the training split only."""

from __future__ import annotations

import json
import math
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components.constants import MAX_SEARCH_CANDIDATES
from components.features import FeatureSchema, infer_feature_schema
from components.search import (
    SEARCH_SIZE_KEY,
    SearchSpaceError,
    cross_validate_candidate,
    expand_search_space,
    render_search_report,
    search_metrics,
    select_best,
)

REPO = Path(__file__).resolve().parents[1]
LINEAR_OR_FOREST = [
    {"model_family": "logistic_regression", "hyperparameters": {"C": 1.0}},
    {"model_family": "random_forest", "hyperparameters": {"n_estimators": 30, "max_depth": 3}},
]


def expand(space: Any, **kw: Any) -> list[dict[str, Any]]:
    return expand_search_space(space, model_family=kw.pop("model_family", "auto"), hyperparameters={}, **kw)


def configurations(candidates: list[dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(c["candidate_id"], c["model_family"], c["hyperparameters"]) for c in candidates]


# --- expanding --------------------------------------------------------------------------------------------


def test_an_empty_search_space_is_todays_single_training() -> None:
    (only,) = expand_search_space([], model_family="random_forest", hyperparameters={"n_estimators": 50})
    assert only == {
        "candidate_id": 0,
        "model_family": "random_forest",
        "hyperparameters": {"n_estimators": 50},
        SEARCH_SIZE_KEY: 1,
    }


def test_a_grid_expands_to_every_combination_in_sorted_parameter_order() -> None:
    # KFP passes a dict as a protobuf Struct, which keeps no key order: ids must not depend on it.
    grid = {
        "model_family": "svm",
        "grid": {"kernel": ["rbf", "linear"], "C": [0.1, 1.0]},
        "hyperparameters": {"tol": 1e-3},
    }
    candidates = expand([grid])
    assert configurations(candidates) == [
        (0, "svm", {"tol": 1e-3, "C": 0.1, "kernel": "rbf"}),
        (1, "svm", {"tol": 1e-3, "C": 0.1, "kernel": "linear"}),
        (2, "svm", {"tol": 1e-3, "C": 1.0, "kernel": "rbf"}),
        (3, "svm", {"tol": 1e-3, "C": 1.0, "kernel": "linear"}),
    ]
    assert expand([{**grid, "grid": dict(reversed(list(grid["grid"].items())))}]) == candidates
    assert expand(grid) == candidates  # one entry on its own is the same as a list of one
    assert {c[SEARCH_SIZE_KEY] for c in candidates} == {4}


def test_a_list_mixes_configurations_and_grids_and_an_entry_without_a_family_uses_the_runs() -> None:
    space = [
        {"hyperparameters": {"C": 0.5}},
        {"model_family": "random_forest", "grid": {"n_estimators": [10.0, 50.0]}},  # as KFP delivers numbers
    ]
    assert configurations(expand(space, model_family="logistic_regression")) == [
        (0, "logistic_regression", {"C": 0.5}),
        (1, "random_forest", {"n_estimators": 10.0}),
        (2, "random_forest", {"n_estimators": 50.0}),
    ]


def test_candidates_are_checked_as_training_would_when_the_task_is_known() -> None:
    assert len(expand(LINEAR_OR_FOREST, task="classification")) == 2
    with pytest.raises(SearchSpaceError, match=r"^search_space candidate 1: ") as refused:
        expand(
            [{"model_family": "ridge"}, {"model_family": "random_forest", "hyperparameters": {"n_trees": 5}}],
            task="regression",
        )
    assert "n_trees" in str(refused.value)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("random_forest", "search_space must be a list"),
        ([["random_forest"]], r"search_space\[0\] is \[\"random_forest\"\]; each entry is an object"),
        ([{}, {"familly": "svm"}], r"search_space\[1\] has unknown key\(s\) 'familly'"),
        ([{"model_family": ""}], r"search_space\[0\]\.model_family must be a non-empty string"),
        ([{"hyperparameters": [1, 2]}], r"search_space\[0\]\.hyperparameters must be an object"),
        ([{"grid": {"C": 0.1}}], r"search_space\[0\]\.grid\.C must be a non-empty list of values, not 0\.1"),
        ([{"grid": {"C": []}}], r"search_space\[0\]\.grid\.C must be a non-empty list"),
        ([{"grid": {}}], r"search_space\[0\]\.grid must be a non-empty object"),
        ([{"grid": {"C": [1]}, "hyperparameters": {"C": 2}}], r"sets 'C' both in hyperparameters and in grid"),
        (
            [{"hyperparameters": {"C": 1}}, {"grid": {"C": [2, 1]}}],
            r"the same configuration twice \(candidates 0 and 2",
        ),
        (  # 1 and 1.0 are the same once KFP has made every number a double
            [{"hyperparameters": {"C": 1}}, {"hyperparameters": {"C": 1.0}}],
            r"the same configuration twice \(candidates 0 and 1",
        ),
        (
            [{"grid": {"a": list(range(8)), "b": list(range(9))}}],
            rf"expands to 72 candidates; at most {MAX_SEARCH_CANDIDATES}",
        ),
        ([{"hyperparameters": {"C": i}} for i in range(MAX_SEARCH_CANDIDATES + 1)], "expands to 65 candidates"),
    ],
)
def test_bad_search_spaces_are_refused_in_one_line(space: Any, expected: str) -> None:
    with pytest.raises(SearchSpaceError, match=expected) as refused:
        expand(space)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300


def test_the_cap_is_checked_before_a_huge_grid_is_built() -> None:
    huge = {"grid": {name: list(range(100)) for name in "abcdefgh"}}  # 10^16 combinations
    with pytest.raises(SearchSpaceError, match="expands to 10000000000000000 candidates"):
        expand([huge])


# --- selecting --------------------------------------------------------------------------------------------


def scored(candidate_id: Any, mean: float, metric: str = "accuracy") -> dict[str, Any]:
    return {
        "candidate_id": candidate_id,
        "model_family": "x",
        "hyperparameters": {},
        "metric": metric,
        "mean": mean,
        "std": 0.0,
        "folds": [mean, mean],
        "note": "",
    }


def test_select_best_follows_the_metrics_direction_and_ties_go_to_the_lowest_id_in_any_order() -> None:
    accuracy = [scored(0, 0.90), scored(1, 0.95), scored(2, 0.95), scored(3, float("nan"))]
    rmse = [scored(0, 3.0, "rmse"), scored(1, 2.0, "rmse"), scored(2, 2.0, "rmse"), scored(3, 9.0, "rmse")]
    for _ in range(5):
        random.shuffle(accuracy)
        random.shuffle(rmse)
        assert select_best(accuracy, metric="accuracy")["candidate_id"] == 1
        assert select_best(rmse, metric="rmse")["candidate_id"] == 1
    # Ids that crossed KFP as doubles still order and tie-break as integers.
    assert select_best([scored(10.0, 0.5), scored(9.0, 0.5)], metric="accuracy")["candidate_id"] == 9.0


def test_select_best_refuses_what_it_cannot_rank() -> None:
    with pytest.raises(SearchSpaceError, match="no candidate was scored"):
        select_best([], metric="accuracy")
    with pytest.raises(SearchSpaceError, match="candidate 1 was scored on 'f1_macro', not 'accuracy'"):
        select_best([scored(0, 0.9), scored(1, 0.9, "f1_macro")], metric="accuracy")
    with pytest.raises(SearchSpaceError, match="none of the 2 candidates has a finite cross-validated accuracy"):
        select_best([scored(0, float("nan")), scored(1, float("nan"))], metric="accuracy")
    with pytest.raises(SearchSpaceError, match="unknown metric 'precision'"):
        select_best([scored(0, 0.9)], metric="precision")


def test_the_report_and_metrics_list_every_candidate_and_mark_the_winner() -> None:
    scores = [scored(0, 0.91), scored(1, 0.97), scored(2, 0.42)]
    best = select_best(scores, metric="accuracy")
    report = render_search_report(scores, best)
    rows = [line for line in report.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 0", "| 1", "| 2"]
    assert "**selected**" in rows[1] and "**selected**" not in rows[0] + rows[2]
    assert "0.9700" in rows[1] and "0.4200" in rows[2] and "**Selected:** candidate 1" in report
    values = search_metrics(scores, best)
    assert values["selected_candidate"] == 1.0 and values["candidate_2_cv_accuracy_mean"] == 0.42


# --- cross-validating on data whose answer is known --------------------------------------------------------


def frame_of(x: np.ndarray, label: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"] = label
    return frame


def linear_data(rows: int = 240, dims: int = 10) -> pd.DataFrame:
    """A diagonal boundary in 10 dimensions: one weight vector separates it; axis-aligned trees need many cuts."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, dims))
    return frame_of(x, np.where(x.sum(axis=1) > 0, "pos", "neg"))


def xor_data(rows: int = 240) -> pd.DataFrame:
    """The sign of x0 * x1: no line separates it; two cuts of a tree do."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(rows, 2))
    return frame_of(x, np.where(x[:, 0] * x[:, 1] > 0, "same", "different"))


def search(frame: pd.DataFrame, metric: str = "accuracy") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    schema = infer_feature_schema(frame, label_column="label")
    candidates = expand_search_space(LINEAR_OR_FOREST, model_family="auto", hyperparameters={}, task=schema.task)
    scores = [cross_validate_candidate(frame, schema, c, folds=4, seed=0, metric=metric) for c in candidates]
    return select_best(scores, metric=metric), scores


def test_the_search_picks_a_linear_model_for_a_linear_boundary_and_a_forest_for_xor() -> None:
    linear_best, linear_scores = search(linear_data())
    xor_best, xor_scores = search(xor_data())

    assert linear_best["model_family"] == "logistic_regression"
    assert xor_best["model_family"] == "random_forest"
    # Not a near tie: each winner is clearly ahead on its data.
    assert linear_scores[0]["mean"] - linear_scores[1]["mean"] > 0.05
    assert xor_scores[1]["mean"] - xor_scores[0]["mean"] > 0.2


def test_a_score_is_the_mean_of_stratified_folds_and_survives_kfps_doubles() -> None:
    frame = xor_data()
    schema = infer_feature_schema(frame, label_column="label")
    # As a ParallelFor item arrives after KFP: every number a double.
    candidate = {
        "candidate_id": 1.0,
        "model_family": "random_forest",
        "hyperparameters": {"n_estimators": 30.0},
        SEARCH_SIZE_KEY: 2.0,
    }

    result = cross_validate_candidate(frame, schema, candidate, folds=5, seed=0, metric="f1_macro")

    assert result["candidate_id"] == 1 and type(result["candidate_id"]) is int
    assert len(result["folds"]) == 5 and result["mean"] == pytest.approx(np.mean(result["folds"]))
    assert result["std"] == pytest.approx(np.std(result["folds"]))
    assert json.loads(json.dumps(result)) == result  # it crosses KFP as JSON


def test_regression_candidates_are_ranked_lower_is_better_on_rmse() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    frame = frame_of(x, 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(scale=0.1, size=200))
    schema = infer_feature_schema(frame, label_column="label")
    assert schema.task == "regression"
    space = [{"model_family": "ridge"}, {"model_family": "random_forest", "hyperparameters": {"max_depth": 2}}]
    candidates = expand_search_space(space, model_family="auto", hyperparameters={}, task="regression")
    scores = [cross_validate_candidate(frame, schema, c, folds=3, seed=0, metric="rmse") for c in candidates]

    assert select_best(scores, metric="rmse")["model_family"] == "ridge"
    assert scores[0]["mean"] < scores[1]["mean"]


def test_the_only_candidate_is_not_cross_validated() -> None:
    frame = xor_data()
    schema = infer_feature_schema(frame, label_column="label")
    (only,) = expand_search_space([], model_family="random_forest", hyperparameters={})

    result = cross_validate_candidate(frame, schema, only, folds=5, seed=0, metric="accuracy")

    assert result["folds"] == [] and math.isnan(result["mean"]) and "not cross-validated" in result["note"]
    assert select_best([result], metric="accuracy")["candidate_id"] == 0


def test_too_few_rows_of_a_class_for_the_folds_is_refused_naming_the_class() -> None:
    frame = xor_data(rows=40)
    frame.loc[frame.index[:37], "label"] = "common"
    frame.loc[frame.index[37:], "label"] = "rare"
    schema: FeatureSchema = infer_feature_schema(frame, label_column="label")
    candidate = expand(LINEAR_OR_FOREST)[0]
    with pytest.raises(SearchSpaceError, match="cv_folds is 5 but class 'rare' has only 3 rows"):
        cross_validate_candidate(frame, schema, candidate, folds=5, seed=0, metric="accuracy")
    with pytest.raises(SearchSpaceError, match="cv_folds must be an integer of at least 2"):
        cross_validate_candidate(frame, schema, candidate, folds=1, seed=0, metric="accuracy")


# --- the README's commands, run as written -------------------------------------------------------------------


README_BLOCK = re.compile(
    r"a challenger that passes the gate but loses to the live model.*?```bash\n(.*?)```(.*?)\*\*Search\*\*",
    re.S,
)


def readme_expectations() -> tuple[list[str], list[str]]:
    """The commands of the README's search + champion block, and the output lines it shows after them."""
    text = (REPO / "README.md").read_text()
    found = README_BLOCK.search(text)
    assert found, "README lost its 'Choosing and promoting models' commands"
    commands = [line.strip() for line in found[1].splitlines() if line.strip()]
    shown = [line.strip() for line in re.findall(r"```\n(.*?)```", found[2], re.S)[0].splitlines()]
    shown += [line.strip() for line in re.findall(r"```\n(.*?)```", found[2], re.S)[1].splitlines()]
    return commands, [line for line in shown if line and line != "..."]


def as_pattern(line: str) -> str:
    """A README output line as a regex: any version id, and `local_outputs/` under any working directory."""
    pattern = re.escape(line)
    pattern = re.sub(r"[0-9a-f]{12}", "[0-9a-f]{12}", pattern)
    return pattern.replace("local_outputs/", r"\S*local_outputs/")


@pytest.mark.slow
def test_readme_search_and_champion_commands_run_as_written(tmp_path: Path) -> None:
    from components.constants import LOCAL_STORE_DIRNAME
    from components.deploy.local_store import current

    commands, shown = readme_expectations()
    assert len(commands) == 2
    for name in ("pipeline.py", "components", "manifests"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    outputs = []
    live = []
    for command in commands:
        words = shlex.split(command)
        words[0] = sys.executable
        proc = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env, check=False)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
        live.append(current(tmp_path / "local_outputs" / LOCAL_STORE_DIRNAME, "sklearn-iris").version)

    everything = "\n".join(outputs)
    missing = [line for line in shown if not re.search(as_pattern(line), everything)]
    assert not missing, f"README shows lines the runs did not print: {missing}"
    # The search chose the best cross-validated mean (ties: the lowest id) among the candidates it printed.
    means = {
        int(i): float(m) for i, m in re.findall(r"search: candidate (\d+) .*?: accuracy ([\d.]+) \+/-", outputs[0])
    }
    selected = int(re.search(r"select: candidate (\d+) of 4", outputs[0])[1])  # type: ignore[index]
    assert len(means) == 4 and selected == min(i for i, m in means.items() if m == max(means.values()))
    # The losing challenger was not deployed: the live version is still the first run's.
    assert "keep the live model" in outputs[1] and live[0] == live[1]
