"""The preprocessing in front of every estimator: imputation, scaling and encoding chosen from the feature schema.

The pipeline takes `features.feature_matrix` output, the one model input representation train, evaluate, the ONNX
check and the server share: a float64 matrix when every feature is numeric and never missing, otherwise an object
matrix (floats and strings, `np.nan` where missing). Columns are addressed by INDEX in schema order, because a
served row arrives as a list of values, not as a named frame.

All-numeric schema (what the pipeline did before typed features, so ONNX export and the forest rebuild see the
same shapes): `StandardScaler` where the estimator needs it, then the estimator. Otherwise a `ColumnTransformer`:

- numeric columns: `SimpleImputer(median)` (a value missing at serve time becomes the training median), then
  `StandardScaler` where the estimator needs it;
- categorical columns: `SimpleImputer(constant=MISSING_CATEGORY)` (missing is a category of its own), then
  one-hot for estimators that need scaling (linear, SVM, KNN, MLP: an ordinal code would read as a distance) or one
  ordinal column for trees and the rest. `HistGradientBoosting*` is told which columns are categorical.

Unknown-category policy (the README says the same): the encoders know exactly the schema's categories (plus
`MISSING_CATEGORY` when the feature is nullable). A category never seen in training is served, not refused, and is
encoded as "no known category": all zeros in the one-hot columns (only the other features and the intercept
speak), and -1 in the ordinal column, which trees send down the side of their splits that holds the lowest codes
and `HistGradientBoosting*` treats as missing. Monitoring counts unseen categories, so a flood of them shows up as
drift instead of silently degrading answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from components.constants import FINAL_STEP_NAME, MISSING_CATEGORY
from components.estimators import accepts_sparse, needs_scaling

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from components.features import Feature, FeatureSchema

PREPROCESS_STEP_NAME = "pre"
"""The `ColumnTransformer` step of a pipeline over a schema that is not all numeric."""
SCALE_STEP_NAME = "scale"
NUMERIC_BLOCK = "numeric"
CATEGORICAL_BLOCK = "categorical"
UNKNOWN_CATEGORY_CODE = -1
"""Ordinal code of a category not seen in training (`HistGradientBoosting*` reads negative codes as missing)."""
SPARSE_THRESHOLD = 0.3
"""ColumnTransformer's default: one-hot output stays sparse below this density, if the estimator takes sparse."""
_HGB_CATEGORICAL_PARAM = "categorical_features"
_HGB_DEFAULT_CATEGORICAL = "from_dtype"


def encoded_categories(feature: Feature) -> list[str]:
    """The categories an encoder knows for `feature`: the schema's, plus `MISSING_CATEGORY` when it is nullable."""
    return [*feature.categories, MISSING_CATEGORY] if feature.nullable else list(feature.categories)


def build_pipeline(schema: FeatureSchema, estimator: Any) -> Pipeline:
    """The unfitted preprocessing + `estimator` pipeline for `schema` (final step named `constants.FINAL_STEP_NAME`).

    Args:
        schema: The feature schema; its feature order is the column order of the matrices the pipeline sees.
        estimator: An unfitted scikit-learn classifier or regressor. A `HistGradientBoosting*` left at its default
            `categorical_features` is set to the ordinal columns whose category count fits its `max_bins`.

    Returns:
        `Pipeline([("scale", StandardScaler())?, ("model", estimator)])` for an all-numeric schema, otherwise
        `Pipeline([("pre", ColumnTransformer), ("model", estimator)])`.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    scale = needs_scaling(estimator)
    if schema.all_numeric:
        steps: list[tuple[str, Any]] = [(SCALE_STEP_NAME, StandardScaler())] if scale else []
        return Pipeline([*steps, (FINAL_STEP_NAME, estimator)])
    numeric = [i for i, f in enumerate(schema.features) if f.kind == "numeric"]
    categorical = [i for i, f in enumerate(schema.features) if f.kind == "categorical"]
    blocks: list[tuple[str, Any, list[int]]] = []
    if numeric:
        blocks.append((NUMERIC_BLOCK, _numeric_block(scale=scale), numeric))
    if categorical:
        known = [encoded_categories(schema.features[i]) for i in categorical]
        blocks.append((CATEGORICAL_BLOCK, _categorical_block(known, one_hot=scale), categorical))
        if not scale:
            _mark_hgb_categorical(estimator, n_numeric=len(numeric), known=known)
    from sklearn.compose import ColumnTransformer

    sparse = SPARSE_THRESHOLD if scale and accepts_sparse(estimator) else 0.0
    transformer = ColumnTransformer(blocks, remainder="drop", sparse_threshold=sparse)
    return Pipeline([(PREPROCESS_STEP_NAME, transformer), (FINAL_STEP_NAME, estimator)])


def _numeric_block(*, scale: bool) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # keep_empty_features: a column missing on every training row still has a column (filled with 0), so the
    # matrix keeps the schema's shape.
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    if scale:
        steps.append((SCALE_STEP_NAME, StandardScaler()))
    return Pipeline(steps)


def _categorical_block(known: list[list[str]], *, one_hot: bool) -> Any:
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    impute = SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, missing_values=np.nan)
    encode: Any
    if one_hot:
        encode = OneHotEncoder(categories=known, handle_unknown="ignore")
    else:
        encode = OrdinalEncoder(
            categories=known, handle_unknown="use_encoded_value", unknown_value=UNKNOWN_CATEGORY_CODE
        )
    return Pipeline([("impute", impute), ("encode", encode)])


def _mark_hgb_categorical(estimator: Any, *, n_numeric: int, known: list[list[str]]) -> None:
    """Tell a HistGradientBoosting estimator which encoded columns are categories (it bins them natively then)."""
    params = estimator.get_params(deep=False)
    if params.get(_HGB_CATEGORICAL_PARAM) != _HGB_DEFAULT_CATEGORICAL or "max_bins" not in params:
        return  # not HGB, or the run chose categorical_features itself
    # HGB refuses a categorical column with more categories than max_bins: such a column stays ordinal-numeric.
    mask = [False] * n_numeric + [len(categories) <= params["max_bins"] for categories in known]
    estimator.set_params(**{_HGB_CATEGORICAL_PARAM: mask})


def final_estimator(pipeline: Any) -> Any:
    """The estimator at the end of a pipeline (a bare estimator is its own final step)."""
    return pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
