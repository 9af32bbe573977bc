import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from components.features import (
    FEATURE_TYPE_CHOICES,
    ID_LIKE_MIN_ROWS,
    MAX_CATEGORIES,
    MAX_CLASSES_INFERRED,
    TASK_GIVEN,
    Feature,
    FeatureSchema,
    FeatureSchemaError,
    category_value,
    check_feature_types,
    check_task,
    feature_matrix,
    infer_feature_schema,
    read_schema,
    write_schema,
)

LABEL = "y"


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "size": [1.5, np.nan, 3.0, 4.25, 2.0, 1.0],
            "colour": ["red", "blue", None, "red", "green", "blue"],
            "count": [1, 2, 3, 1, 2, 3],
            LABEL: ["a", "b", "a", "b", "a", "b"],
        }
    )


def test_numeric_and_text_columns_get_their_kind_categories_and_nullability():
    schema = infer_feature_schema(mixed_frame(), label_column=LABEL)

    assert schema.names == ["size", "colour", "count"]
    size, colour, count = schema.features
    assert size == Feature(name="size", kind="numeric", nullable=True)
    assert colour == Feature(name="colour", kind="categorical", categories=["blue", "green", "red"], nullable=True)
    assert count == Feature(name="count", kind="numeric", nullable=False)
    assert schema.task == "classification"
    assert schema.class_names == ["a", "b"]
    assert not schema.all_numeric
    assert schema.notes == []


def test_an_all_numeric_complete_frame_is_all_numeric_and_gives_a_float_matrix():
    frame = pd.DataFrame({"a": [0.1, 0.2, 0.3], "b": [1, 2, 3], LABEL: [0, 1, 0]})
    schema = infer_feature_schema(frame, label_column=LABEL)

    matrix = feature_matrix(frame, schema)

    assert schema.all_numeric
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, [[0.1, 1.0], [0.2, 2.0], [0.3, 3.0]])


def test_the_mixed_matrix_holds_floats_and_strings_with_nan_for_missing_in_schema_order():
    frame = mixed_frame()
    schema = infer_feature_schema(frame, label_column=LABEL)
    reordered = frame[[LABEL, "count", "colour", "size"]]  # the matrix follows the schema, not the frame

    matrix = feature_matrix(reordered, schema)

    assert matrix.dtype == object
    assert matrix.shape == (6, 3)
    assert matrix[0].tolist() == [1.5, "red", 1.0]
    assert np.isnan(matrix[1, 0]) and matrix[1, 1] == "blue"
    assert matrix[2, 1] is np.nan or (isinstance(matrix[2, 1], float) and np.isnan(matrix[2, 1]))
    assert all(isinstance(v, float) for v in matrix[:, 2])
    assert all(isinstance(v, str) for i, v in enumerate(matrix[:, 1]) if i != 2)


def test_a_boolean_column_becomes_true_false_categories_with_a_note():
    frame = pd.DataFrame({"member": [True, False, True, False], "x": [1.0, 2.0, 3.0, 4.0], LABEL: [0, 1, 0, 1]})
    schema = infer_feature_schema(frame, label_column=LABEL)

    member = schema.features[0]
    assert member.kind == "categorical"
    assert member.categories == ["false", "true"]
    assert len(schema.notes) == 1 and "'member' is boolean" in schema.notes[0]
    assert feature_matrix(frame, schema)[:, 0].tolist() == ["true", "false", "true", "false"]


def test_a_boolean_column_with_missing_values_from_parquet_is_still_boolean(tmp_path):
    frame = pd.DataFrame({"member": [True, None, False, True], "x": [1.0, 2.0, 3.0, 4.0], LABEL: [0, 1, 0, 1]})
    frame.to_parquet(tmp_path / "d.parquet")
    loaded = pd.read_parquet(tmp_path / "d.parquet")

    member = infer_feature_schema(loaded, label_column=LABEL).features[0]

    assert member == Feature(name="member", kind="categorical", categories=["false", "true"], nullable=True)


@pytest.mark.parametrize(
    ("values", "kind", "declared"),
    [
        ([f"user-{i}" for i in range(ID_LIKE_MIN_ROWS)], "strings", "categorical"),
        (list(range(1000, 1000 + ID_LIKE_MIN_ROWS)), "integers", "numeric"),
    ],
)
def test_an_id_like_column_is_refused_with_how_to_drop_it(values, kind, declared):
    frame = pd.DataFrame({"id": values, "x": np.linspace(0, 1, len(values)), LABEL: [0, 1] * (len(values) // 2)})

    with pytest.raises(FeatureSchemaError, match=rf"'id' looks like an ID \(distinct {kind}") as refused:
        infer_feature_schema(frame, label_column=LABEL)
    assert '{"id": "drop"}' in str(refused.value)

    dropped = infer_feature_schema(frame, label_column=LABEL, feature_types={"id": "drop"})
    assert dropped.names == ["x"]
    assert feature_matrix(frame, dropped).shape == (len(values), 1)
    kept = infer_feature_schema(frame, label_column=LABEL, feature_types={"id": declared})
    assert kept.features[0].kind == declared


def test_distinct_values_in_a_few_rows_or_non_integral_numbers_are_not_ids():
    few = pd.DataFrame({"code": ["a", "b", "c", "d"], "z": [1, 2, 3, 4], LABEL: [0, 1, 0, 1]})
    assert [f.kind for f in infer_feature_schema(few, label_column=LABEL).features] == ["categorical", "numeric"]
    n = ID_LIKE_MIN_ROWS * 2
    measured = pd.DataFrame({"x": np.linspace(0.5, 9.5, n), LABEL: [0, 1] * (n // 2)})
    assert infer_feature_schema(measured, label_column=LABEL).features[0].kind == "numeric"


def test_feature_types_override_the_inferred_kinds():
    frame = pd.DataFrame(
        {
            "zip": [1010, 2020, 1010, 3030],
            "score": ["1.5", "2", None, "4"],
            "note": ["x", "y", "z", "w"],
            LABEL: [0, 1, 0, 1],
        }
    )

    schema = infer_feature_schema(
        frame, label_column=LABEL, feature_types={"zip": "categorical", "score": "numeric", "note": "drop"}
    )

    assert schema.names == ["zip", "score"]
    assert schema.features[0] == Feature(name="zip", kind="categorical", categories=["1010", "2020", "3030"])
    assert schema.features[1] == Feature(name="score", kind="numeric", nullable=True)
    matrix = feature_matrix(frame, schema)
    assert matrix[:, 0].tolist() == ["1010", "2020", "1010", "3030"]
    assert matrix[0, 1] == 1.5 and np.isnan(matrix[2, 1])


def test_integral_floats_of_a_categorical_column_read_like_the_integers_they_were():
    frame = pd.DataFrame({"grade": [1.0, 2.0, np.nan, 2.0], "x": [0.1, 0.2, 0.3, 0.4], LABEL: [0, 1, 0, 1]})
    schema = infer_feature_schema(frame, label_column=LABEL, feature_types={"grade": "categorical"})

    assert schema.features[0] == Feature(name="grade", kind="categorical", categories=["1", "2"], nullable=True)
    assert category_value(2) == category_value(2.0) == category_value(np.int64(2)) == "2"
    assert category_value(np.True_) == category_value(True) == "true"
    assert category_value(2.5) == "2.5"


@pytest.mark.parametrize(
    ("feature_types", "message"),
    [
        ({"nope": "drop"}, "feature_types names columns that are not in the data: nope"),
        ({LABEL: "numeric"}, "names the label column 'y'"),
        ({"size": "text"}, r"feature_types\['size'\] must be one of numeric, categorical, drop, got 'text'"),
        ({"colour": "numeric"}, "'colour' is declared numeric but 5 of its values are not numbers"),
        ({"size": "drop", "colour": "drop", "count": "drop"}, "no feature columns are left besides the label 'y'"),
    ],
)
def test_bad_feature_types_are_refused_naming_the_column(feature_types, message):
    with pytest.raises(FeatureSchemaError, match=message):
        infer_feature_schema(mixed_frame(), label_column=LABEL, feature_types=feature_types)


def test_feature_types_and_task_are_checked_without_data():
    assert check_feature_types(None) == {}
    assert check_feature_types({"a": "drop"}) == {"a": "drop"}
    assert set(FEATURE_TYPE_CHOICES) == {"numeric", "categorical", "drop"}
    with pytest.raises(FeatureSchemaError, match="must be a JSON object"):
        check_feature_types(["a"])  # type: ignore[arg-type]
    with pytest.raises(FeatureSchemaError, match="keys must be column names"):
        check_feature_types({"": "numeric"})
    assert check_task("") == "" and check_task("regression") == "regression"
    with pytest.raises(FeatureSchemaError, match="task must be one of classification, regression or empty"):
        check_task("clustering")


def test_an_all_missing_column_and_too_many_categories_are_refused():
    frame = mixed_frame().assign(empty=np.nan)
    with pytest.raises(FeatureSchemaError, match="'empty' has no values at all"):
        infer_feature_schema(frame, label_column=LABEL)
    n = MAX_CATEGORIES + 1
    wide = pd.DataFrame({"word": [f"w{i % n}" for i in range(2 * n)], "x": [1.0] * (2 * n), LABEL: [0, 1] * n})
    with pytest.raises(FeatureSchemaError, match=f"'word' has {n} distinct values, more than the {MAX_CATEGORIES}"):
        infer_feature_schema(wide, label_column=LABEL)


def test_a_datetime_column_must_be_declared():
    frame = pd.DataFrame({"when": pd.date_range("2026-01-01", periods=4), "x": [1.0] * 4, LABEL: [0, 1, 0, 1]})
    with pytest.raises(FeatureSchemaError, match=r"'when' has type datetime64\[ns\], neither numeric nor text"):
        infer_feature_schema(frame, label_column=LABEL)
    declared = infer_feature_schema(frame, label_column=LABEL, feature_types={"when": "categorical"})
    assert declared.features[0].categories[0].startswith("2026-01-01")


def diabetes_like(rows: int = 100) -> pd.DataFrame:
    # Like scikit-learn's diabetes target: integral floats, far more distinct values than classes would have.
    rng = np.random.default_rng(0)
    return pd.DataFrame({"bmi": rng.normal(size=rows), LABEL: rng.integers(25, 346, size=rows).astype(float)})


def test_an_integral_float_label_with_many_values_is_inferred_regression():
    frame = diabetes_like()
    schema = infer_feature_schema(frame, label_column=LABEL)

    assert frame[LABEL].nunique() > MAX_CLASSES_INFERRED
    assert schema.task == "regression"
    assert "numeric with" in schema.task_reason and f"more than {MAX_CLASSES_INFERRED}" in schema.task_reason
    assert schema.class_names == []


@pytest.mark.parametrize(
    ("label", "task", "reason"),
    [
        ([0.5, 1.25, 2.0, 3.5], "regression", "non-integral numbers"),
        ([0, 1, 2, 1], "classification", "3 distinct values"),
        ([1.0, 2.0, 1.0, 2.0], "classification", "2 distinct values"),
        (["cat", "dog", "cat", "dog"], "classification", "not numeric"),
        ([True, False, True, False], "classification", "not numeric"),
    ],
)
def test_task_inference_says_why(label, task, reason):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], LABEL: label})
    schema = infer_feature_schema(frame, label_column=LABEL)
    assert schema.task == task
    assert reason in schema.task_reason


def test_class_names_are_sorted_by_value_then_written_as_text():
    frame = pd.DataFrame({"x": np.arange(4.0) / 10, LABEL: [10, 9, 2, 10]})
    assert infer_feature_schema(frame, label_column=LABEL).class_names == ["2", "9", "10"]


def test_a_given_task_is_kept_when_the_label_supports_it():
    many_classes = diabetes_like()
    assert infer_feature_schema(many_classes, label_column=LABEL, task="classification").task == "classification"
    few_values = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], LABEL: [0, 1, 0, 1]})
    schema = infer_feature_schema(few_values, label_column=LABEL, task="regression")
    assert (schema.task, schema.task_reason, schema.class_names) == ("regression", TASK_GIVEN, [])


@pytest.mark.parametrize(
    ("label", "task", "message"),
    [
        (["cat", "dog", "cat", "dog"], "regression", "task regression needs a numeric label, but 'y' holds object"),
        ([True, False, True, False], "regression", "task regression needs a numeric label, but 'y' holds bool"),
        (
            [0.5, 1.25, 2.0, 3.5],
            "classification",
            "task classification needs classes, but label 'y' holds non-integral",
        ),
        ([0, 1, 0, 1], "ranking", "task must be one of classification, regression"),
    ],
)
def test_a_given_task_the_label_cannot_support_is_refused(label, task, message):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], LABEL: label})
    with pytest.raises(FeatureSchemaError, match=message):
        infer_feature_schema(frame, label_column=LABEL, task=task)


def test_a_missing_label_column_is_refused():
    with pytest.raises(FeatureSchemaError, match="label column 'target' is not in the data"):
        infer_feature_schema(mixed_frame(), label_column="target")


def test_feature_matrix_names_an_absent_column_and_a_non_number():
    schema = infer_feature_schema(mixed_frame(), label_column=LABEL)
    with pytest.raises(FeatureSchemaError, match="no column for features: colour"):
        feature_matrix(mixed_frame().drop(columns=["colour"]), schema)
    with pytest.raises(FeatureSchemaError, match="numeric feature 'size' holds values that are not numbers"):
        feature_matrix(mixed_frame().assign(size=["1", "x", "2", "3", "4", "5"]), schema)


def test_a_schema_round_trips_through_its_json_file(tmp_path):
    schema = infer_feature_schema(
        pd.DataFrame({"b": [True, False, True, False], "x": [1.0, None, 2.0, 3.0], LABEL: [0, 1, 0, 1]}),
        label_column=LABEL,
    )
    path = tmp_path / "schema.json"

    write_schema(schema, path)

    assert read_schema(path) == schema
    assert json.loads(path.read_text())["features"][1] == {
        "name": "x",
        "kind": "numeric",
        "categories": [],
        "nullable": True,
    }


def test_a_bad_schema_file_is_refused_in_one_line(tmp_path):
    with pytest.raises(FeatureSchemaError, match="cannot read the feature schema"):
        read_schema(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "clustering", "task_reason": "", "label_column": "y", "features": []}))
    with pytest.raises(FeatureSchemaError, match="is not a valid feature schema") as refused:
        read_schema(bad)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Feature(name="a", kind="numeric", categories=["x"]), "numeric feature 'a' cannot list categories"),
        (lambda: Feature(name="a", kind="categorical", categories=["b", "a"]), "must be sorted and distinct"),
        (lambda: Feature(name="a", kind="numeric", extra=1), "Extra inputs are not permitted"),
        (
            lambda: FeatureSchema(task="regression", task_reason="", label_column="y", features=[]),
            "at least one feature",
        ),
        (
            lambda: FeatureSchema(
                task="regression",
                task_reason="",
                label_column="y",
                features=[Feature(name="a", kind="numeric")],
                class_names=["0"],
            ),
            "regression schema has no class names",
        ),
        (
            lambda: FeatureSchema(
                task="classification", task_reason="", label_column="a", features=[Feature(name="a", kind="numeric")]
            ),
            "cannot also be a feature",
        ),
    ],
)
def test_the_models_refuse_inconsistent_schemas(build, message):
    with pytest.raises(ValidationError, match=message):
        build()
