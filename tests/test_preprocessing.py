import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from components.constants import FINAL_STEP_NAME, MISSING_CATEGORY
from components.estimators import FAMILIES, build_estimator, resolve_estimator, resolve_hyperparameters
from components.features import Feature, FeatureSchema
from components.preprocessing import (
    CATEGORICAL_BLOCK,
    NUMERIC_BLOCK,
    PREPROCESS_STEP_NAME,
    UNKNOWN_CATEGORY_CODE,
    build_pipeline,
    encoded_categories,
)

COLOURS = ["blue", "green", "red"]


def _schema(task="classification", *, nullable=True):
    return FeatureSchema(
        task=task,
        task_reason="given",
        label_column="y",
        features=[
            Feature(name="size", kind="numeric", nullable=nullable),
            Feature(name="colour", kind="categorical", categories=COLOURS, nullable=nullable),
            Feature(name="weight", kind="numeric"),
        ],
        class_names=["0", "1"] if task == "classification" else [],
    )


def _data(rows=120, seed=0):
    """Mixed rows in the feature_matrix representation: the label depends on the colour and on size."""
    rng = np.random.default_rng(seed)
    size = rng.normal(size=rows)
    colour = rng.choice(COLOURS, size=rows)
    weight = rng.normal(10, 3, size=rows)
    x = np.empty((rows, 3), dtype=object)
    x[:, 0], x[:, 1], x[:, 2] = size, colour, weight
    x[::10, 0] = np.nan  # a few missing values in each nullable column
    x[5::10, 1] = np.nan
    y_class = ((colour == "red") | (size > 1.0)).astype(int)
    y_value = 3.0 * (colour == "red") + size + 0.1 * weight
    return x, y_class, y_value


NUMERIC_SCHEMA = FeatureSchema(
    task="classification",
    task_reason="given",
    label_column="y",
    features=[Feature(name=n, kind="numeric") for n in ("a", "b")],
    class_names=["0", "1"],
)


def test_an_all_numeric_schema_keeps_the_plain_pipeline_with_scaling_only_where_needed():
    linear = build_pipeline(NUMERIC_SCHEMA, LogisticRegression())
    assert [name for name, _ in linear.steps] == ["scale", FINAL_STEP_NAME]
    assert isinstance(linear.steps[0][1], StandardScaler)
    forest = build_pipeline(NUMERIC_SCHEMA, RandomForestClassifier())
    assert [name for name, _ in forest.steps] == [FINAL_STEP_NAME]


def test_mixed_columns_are_addressed_by_index_with_one_hot_for_linear_models():
    pipeline = build_pipeline(_schema(), LogisticRegression())
    assert [name for name, _ in pipeline.steps] == [PREPROCESS_STEP_NAME, FINAL_STEP_NAME]
    transformer = pipeline.named_steps[PREPROCESS_STEP_NAME]
    assert isinstance(transformer, ColumnTransformer)
    blocks = {name: (step, columns) for name, step, columns in transformer.transformers}
    assert blocks[NUMERIC_BLOCK][1] == [0, 2] and blocks[CATEGORICAL_BLOCK][1] == [1]
    assert [name for name, _ in blocks[NUMERIC_BLOCK][0].steps] == ["impute", "scale"]
    encoder = blocks[CATEGORICAL_BLOCK][0].named_steps["encode"]
    assert isinstance(encoder, OneHotEncoder) and encoder.categories == [[*COLOURS, MISSING_CATEGORY]]


def test_trees_get_ordinal_codes_and_no_scaling():
    pipeline = build_pipeline(_schema(), RandomForestClassifier())
    blocks = {name: step for name, step, _ in pipeline.named_steps[PREPROCESS_STEP_NAME].transformers}
    assert [name for name, _ in blocks[NUMERIC_BLOCK].steps] == ["impute"]
    assert isinstance(blocks[CATEGORICAL_BLOCK].named_steps["encode"], OrdinalEncoder)


def test_hist_gradient_boosting_is_told_which_columns_are_categories():
    pipeline = build_pipeline(_schema(), HistGradientBoostingClassifier())
    # Output order: the numeric block (size, weight), then the categorical block (colour).
    assert pipeline.named_steps[FINAL_STEP_NAME].categorical_features == [False, False, True]
    # A category count above max_bins would be refused by HGB: that column stays ordinal-numeric.
    few_bins = build_pipeline(_schema(), HistGradientBoostingClassifier(max_bins=3))
    assert few_bins.named_steps[FINAL_STEP_NAME].categorical_features == [False, False, False]
    x, y, _ = _data()
    few_bins.fit(x, y)
    # A choice the run made itself is kept.
    chosen = build_pipeline(_schema(), HistGradientBoostingClassifier(categorical_features=None))
    assert chosen.named_steps[FINAL_STEP_NAME].categorical_features is None


def test_a_missing_category_is_a_category_of_its_own_only_when_the_feature_is_nullable():
    assert encoded_categories(_schema().features[1]) == [*COLOURS, MISSING_CATEGORY]
    assert encoded_categories(_schema(nullable=False).features[1]) == COLOURS


FAMILY_TASKS = [
    (family, task)
    for family, paths in FAMILIES.items()
    for task, path in zip(("classification", "regression"), paths, strict=True)
    if path is not None
]


@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_every_family_serves_unknown_categories_and_nulls_at_predict_time(family, task):
    x, y_class, y_value = _data()
    schema = _schema(task)
    choice = resolve_estimator(family, task)
    params = resolve_hyperparameters(family, task, {"n_estimators": 10} if "forest" in family else {})
    pipeline = build_pipeline(schema, build_estimator(choice, params, seed=0))
    pipeline.fit(x, y_class if task == "classification" else y_value)
    served = np.array(
        [
            [0.5, "purple", 9.0],  # a colour never seen in training
            [np.nan, np.nan, 11.0],  # nulls in both nullable features
            [0.5, "red", 9.0],
        ],
        dtype=object,
    )
    predictions = pipeline.predict(served)
    assert len(predictions) == 3
    if task == "regression":
        assert np.isfinite(predictions.astype(float)).all()
    else:
        assert set(predictions) <= {0, 1}
        assert np.allclose(pipeline.predict_proba(served).sum(axis=1), 1.0)


def test_an_unknown_category_is_encoded_as_no_known_category():
    x, y, _ = _data()
    linear = build_pipeline(_schema(), LogisticRegression()).fit(x, y)
    row = np.array([[0.5, "purple", 9.0]], dtype=object)
    one_hot = linear.named_steps[PREPROCESS_STEP_NAME].transform(row)
    assert one_hot.shape == (1, 2 + len(COLOURS) + 1)
    assert one_hot[0, 2:].tolist() == [0.0] * (len(COLOURS) + 1)  # no colour column lights up, not even "missing"
    forest = build_pipeline(_schema(), RandomForestClassifier(n_estimators=5)).fit(x, y)
    codes = forest.named_steps[PREPROCESS_STEP_NAME].transform(row)
    assert codes[0, 2] == UNKNOWN_CATEGORY_CODE


def test_nulls_become_the_training_median_and_the_missing_category():
    x, y, _ = _data()
    forest = build_pipeline(_schema(), RandomForestClassifier(n_estimators=5)).fit(x, y)
    transformed = forest.named_steps[PREPROCESS_STEP_NAME].transform(np.array([[np.nan, np.nan, 9.0]], dtype=object))
    sizes = np.array([v for v in x[:, 0] if not (isinstance(v, float) and np.isnan(v))], dtype=float)
    assert transformed[0, 0] == pytest.approx(np.median(sizes))
    assert transformed[0, 2] == [*COLOURS, MISSING_CATEGORY].index(MISSING_CATEGORY)


def test_a_linear_model_learns_the_categorical_signal():
    x, y, y_value = _data(rows=300)
    test_x, test_y, test_value = _data(rows=200, seed=1)
    classifier = build_pipeline(_schema(), LogisticRegression(max_iter=1000)).fit(x, y)
    assert (classifier.predict(test_x) == test_y).mean() > 0.85
    regressor = build_pipeline(_schema("regression"), Ridge()).fit(x, y_value)
    residual = regressor.predict(test_x) - test_value
    assert np.mean(residual**2) < 0.2 * np.var(test_value)
