"""The typed feature schema: which columns are features, of what kind, and what task the label asks for.

The data step infers a `FeatureSchema` from the whole dataset and writes it as JSON; train, evaluate, search,
champion and the server read it back and build the model's input with `feature_matrix`, so every step sees the
same columns in the same order with the same representation. Refusals raise `FeatureSchemaError` with one line
that names the column and says what to do, because the reader is looking at a failed step, not at this code.

Importing this module is cheap (pydantic only); pandas and NumPy are imported by the functions that need them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ValidationError, model_validator

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Task = Literal["classification", "regression"]
FeatureKind = Literal["numeric", "categorical"]
TASKS: tuple[str, ...] = get_args(Task)
FEATURE_KINDS: tuple[str, ...] = get_args(FeatureKind)
FEATURE_TYPE_DROP = "drop"
"""A `feature_types` value that leaves the column out of the model (IDs, free text, leaks of the label)."""
FEATURE_TYPE_CHOICES: tuple[str, ...] = (*FEATURE_KINDS, FEATURE_TYPE_DROP)
TASK_GIVEN = "given"
"""`FeatureSchema.task_reason` when the task was a parameter, not inferred."""
MAX_CLASSES_INFERRED = 20
"""A numeric label with more distinct values than this is inferred to be a regression target."""
MAX_CATEGORIES = 1000
"""Most distinct values a categorical feature may have: each one is listed in the schema and the model card."""
ID_LIKE_MIN_ROWS = 20
"""Below this many rows a column of distinct values says nothing about being an ID, so it is not refused."""
BOOL_CATEGORIES = ("false", "true")
"""How a boolean value is written as a category, in training data and in requests alike."""


class FeatureSchemaError(ValueError):
    """The schema cannot be inferred or used as asked; the message names the column or parameter at fault."""


class Feature(BaseModel, frozen=True, extra="forbid"):
    """One model input column."""

    name: str
    kind: FeatureKind
    categories: list[str] = []
    """Categorical only: the categories seen in the training data, as strings (`category_value`), sorted."""
    nullable: bool = False
    """The training data had missing values in this column, so null is allowed at serve time."""

    @model_validator(mode="after")
    def _categories_fit_the_kind(self) -> Feature:
        if self.kind == "numeric" and self.categories:
            raise ValueError(f"numeric feature '{self.name}' cannot list categories")
        if self.categories != sorted(set(self.categories)):
            raise ValueError(f"categories of feature '{self.name}' must be sorted and distinct")
        return self


class FeatureSchema(BaseModel, frozen=True, extra="forbid"):
    """The model's inputs in order, the task and the label: what the data step hands every later step."""

    task: Task
    task_reason: str
    """`given`, or why the task was inferred from the label (shown in the run's output)."""
    label_column: str
    features: list[Feature]
    class_names: list[str] = []
    """Classification only: the label's classes as strings, sorted by their original values."""
    notes: list[str] = []
    """Things the inference decided that a person should know (a boolean column read as categories)."""

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSchema:
        if not self.features:
            raise ValueError("a feature schema needs at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be distinct")
        if self.label_column in names:
            raise ValueError(f"the label column '{self.label_column}' cannot also be a feature")
        if self.task == "regression" and self.class_names:
            raise ValueError("a regression schema has no class names")
        return self

    @property
    def names(self) -> list[str]:
        """Feature names in model input order."""
        return [f.name for f in self.features]

    @property
    def all_numeric(self) -> bool:
        """Every feature is numeric and never missing: the model takes one float64 matrix (the pre-schema case)."""
        return all(f.kind == "numeric" and not f.nullable for f in self.features)


def category_value(value: Any) -> str:
    """The text a categorical value is known by, in training data and in requests alike.

    Booleans are `true`/`false`; integral numbers have no decimal part (`3.0` -> `3`, since a column of integers
    with a missing value is read as floats); other values are their `str`.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):  # NumPy's bool is `bool` in NumPy 2
        return BOOL_CATEGORIES[int(bool(value))]
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    if type(value).__name__.startswith(("int", "uint")):
        return str(int(value))
    return str(value)


def check_task(task: str) -> str:
    """Refuse a task that is neither empty (infer) nor one of `TASKS`; return it."""
    if task != "" and task not in TASKS:
        raise FeatureSchemaError(
            f"task must be one of {', '.join(TASKS)} or empty (infer it from the label), got {task!r}"
        )
    return task


def check_feature_types(feature_types: Mapping[str, str] | None) -> dict[str, str]:
    """Refuse a `feature_types` mapping whose keys or values are not what is allowed (no data needed: pre-flight).

    Returns:
        The mapping as a plain dict (empty when None).
    """
    if feature_types is None:
        return {}
    if not isinstance(feature_types, Mapping):
        raise FeatureSchemaError(
            f'feature_types must be a JSON object like {{"column": "categorical"}}, got {type(feature_types).__name__}'
        )
    checked: dict[str, str] = {}
    for column, kind in feature_types.items():
        if not isinstance(column, str) or not column:
            raise FeatureSchemaError("feature_types keys must be column names (non-empty strings)")
        if kind not in FEATURE_TYPE_CHOICES:
            raise FeatureSchemaError(
                f"feature_types['{column}'] must be one of {', '.join(FEATURE_TYPE_CHOICES)}, got {kind!r}"
            )
        checked[column] = kind
    return checked


def infer_feature_schema(
    frame: pd.DataFrame,
    *,
    label_column: str,
    task: str = "",
    feature_types: Mapping[str, str] | None = None,
) -> FeatureSchema:
    """Infer each feature's kind and the task from `frame` (label included); `feature_types` overrides the kinds.

    Numeric columns are numeric; text columns and booleans (as `true`/`false`, with a note) are categorical. A column
    of distinct integers or strings (an ID) is refused: drop it, or declare its kind if it is a real feature. The task
    is classification unless the label is numeric with non-integral values or more than `MAX_CLASSES_INFERRED`
    distinct values; a given task the label cannot support is refused.

    Args:
        frame: The whole dataset, label included (missing values allowed in features).
        label_column: The label column; it must be in `frame`.
        task: `classification`, `regression`, or "" to infer it from the label.
        feature_types: `{"column": "numeric" | "categorical" | "drop"}` for the columns whose inferred kind is wrong.

    Returns:
        The schema, features in the frame's column order.

    Raises:
        FeatureSchemaError: An unknown task or kind, a column in `feature_types` that is not in the data, an ID-like,
            all-missing or otherwise unusable column, no features left, or a label the task cannot use.
    """
    check_task(task)
    overrides = check_feature_types(feature_types)
    if label_column not in frame.columns:
        raise FeatureSchemaError(f"label column '{label_column}' is not in the data")
    columns = [str(c) for c in frame.columns]
    unknown = [c for c in overrides if c not in columns]
    if unknown:
        raise FeatureSchemaError(f"feature_types names columns that are not in the data: {', '.join(unknown)}")
    if label_column in overrides:
        raise FeatureSchemaError(f"feature_types names the label column '{label_column}'; it is not a feature")
    notes: list[str] = []
    features = [
        _infer_feature(frame[column], column, overrides.get(column), notes)
        for column in columns
        if column != label_column and overrides.get(column) != FEATURE_TYPE_DROP
    ]
    if not features:
        raise FeatureSchemaError(f"no feature columns are left besides the label '{label_column}'")
    chosen, reason = _infer_task(frame[label_column], label_column, task)
    return FeatureSchema(
        task=chosen,
        task_reason=reason,
        label_column=label_column,
        features=features,
        class_names=_class_names(frame[label_column]) if chosen == "classification" else [],
        notes=notes,
    )


def _is_bool_column(column: pd.Series) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return True
    if column.dtype != object:
        return False
    present = column.dropna()
    return len(present) > 0 and all(isinstance(v, bool) or type(v).__name__ in ("bool", "bool_") for v in present)


def _infer_feature(column: pd.Series, name: str, override: str | None, notes: list[str]) -> Feature:
    import pandas as pd

    nullable = bool(column.isna().any())
    present = column.dropna()
    if present.empty:
        raise FeatureSchemaError(f"feature column '{name}' has no values at all (all missing): drop it")
    is_bool = _is_bool_column(column)
    if override == "numeric":
        if is_bool:
            return Feature(name=name, kind="numeric", nullable=nullable)
        numbers = pd.to_numeric(present, errors="coerce")
        bad = int(numbers.isna().sum())
        if bad:
            raise FeatureSchemaError(
                f"feature column '{name}' is declared numeric but {bad} of its values are not numbers"
            )
        return Feature(name=name, kind="numeric", nullable=nullable)
    if override is None:
        if is_bool:
            notes.append(f"feature '{name}' is boolean: used as categorical with categories 'false'/'true'")
        elif pd.api.types.is_numeric_dtype(column):
            _refuse_id_like(present, name, len(column), numeric=True)
            return Feature(name=name, kind="numeric", nullable=nullable)
        elif pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            _refuse_id_like(present, name, len(column), numeric=False)
        elif isinstance(column.dtype, pd.CategoricalDtype):
            pass
        else:
            raise FeatureSchemaError(
                f"feature column '{name}' has type {column.dtype}, neither numeric nor text: declare it in "
                f'feature_types ({{"{name}": "categorical"}}) or drop it ({{"{name}": "drop"}})'
            )
    categories = sorted({category_value(v) for v in pd.unique(present.to_numpy(dtype=object))})
    if len(categories) > MAX_CATEGORIES:
        raise FeatureSchemaError(
            f"feature column '{name}' has {len(categories)} distinct values, more than the {MAX_CATEGORIES} a "
            f'categorical feature may have: drop it ({{"{name}": "drop"}}) or, if it is a number, declare it numeric'
        )
    return Feature(name=name, kind="categorical", categories=categories, nullable=nullable)


def _refuse_id_like(present: pd.Series, name: str, rows: int, *, numeric: bool) -> None:
    """Refuse a column holding a distinct integer or string on every row: an ID teaches the model nothing."""
    import numpy as np

    if rows < ID_LIKE_MIN_ROWS or len(present) != rows:
        return
    if numeric:
        values = present.to_numpy(dtype=float)
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            return
    if present.nunique() == rows:
        kind = "integers" if numeric else "strings"
        raise FeatureSchemaError(
            f"feature column '{name}' looks like an ID (distinct {kind} on every row): drop it with feature_types "
            f'{{"{name}": "drop"}}, or give its kind there ("numeric" or "categorical") if it is a real feature'
        )


def _infer_task(label: pd.Series, name: str, task: str) -> tuple[Task, str]:
    import numpy as np
    import pandas as pd

    present = label.dropna()
    numeric = pd.api.types.is_numeric_dtype(label) and not pd.api.types.is_bool_dtype(label)
    integral = True
    if numeric:
        values = present.to_numpy(dtype=float)
        integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    distinct = int(present.nunique())
    if task == "regression":
        if not numeric:
            raise FeatureSchemaError(
                f"task regression needs a numeric label, but '{name}' holds {label.dtype} values: "
                "use task classification or another label column"
            )
        return "regression", TASK_GIVEN
    if task == "classification":
        if not integral:
            raise FeatureSchemaError(
                f"task classification needs classes, but label '{name}' holds non-integral numbers: "
                "use task regression (or leave task empty to infer it)"
            )
        return "classification", TASK_GIVEN
    if not numeric:
        return "classification", f"label '{name}' is not numeric ({distinct} classes)"
    if not integral:
        return "regression", f"label '{name}' holds non-integral numbers"
    if distinct > MAX_CLASSES_INFERRED:
        return (
            "regression",
            f"label '{name}' is numeric with {distinct} distinct values (more than {MAX_CLASSES_INFERRED})",
        )
    return "classification", f"label '{name}' has {distinct} distinct values (at most {MAX_CLASSES_INFERRED})"


def _class_names(label: pd.Series) -> list[str]:
    values = list(label.dropna().unique())
    try:
        values.sort()
    except TypeError:  # mixed types (numbers and text) cannot be ordered by value; order them as text
        values.sort(key=str)
    return [str(v) for v in values]


def feature_matrix(frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    """The model input for `frame`: the schema's columns in order, other columns (label, dropped) left out.

    All-numeric schema: one float64 array. Otherwise dtype=object, numeric columns as floats and categorical ones
    as `category_value` strings, `np.nan` where a value is missing.

    Raises:
        FeatureSchemaError: A feature column is missing from `frame`, or a numeric one holds something not a number.
    """
    import numpy as np
    import pandas as pd

    absent = [name for name in schema.names if name not in frame.columns]
    if absent:
        raise FeatureSchemaError(f"the data has no column for features: {', '.join(absent)}")
    if schema.all_numeric:
        return np.asarray(frame[schema.names].to_numpy(dtype=np.float64))
    out = np.empty((len(frame), len(schema.features)), dtype=object)
    for index, feature in enumerate(schema.features):
        column = frame[feature.name]
        if feature.kind == "numeric":
            numbers = pd.to_numeric(column, errors="coerce")
            if int(numbers.isna().sum()) != int(column.isna().sum()):
                raise FeatureSchemaError(f"numeric feature '{feature.name}' holds values that are not numbers")
            out[:, index] = numbers.to_numpy(dtype=np.float64)
        else:
            # Convert each distinct value once: a million-row column has few categories.
            codes, uniques = pd.factorize(column, use_na_sentinel=True)
            texts = np.array([category_value(v) for v in uniques] + [np.nan], dtype=object)
            out[:, index] = texts[codes]  # code -1 (missing) picks the trailing nan
    return out


def write_schema(schema: FeatureSchema, path: str | Path) -> None:
    """Write `schema` as JSON to `path`."""
    Path(path).write_text(schema.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_schema(path: str | Path) -> FeatureSchema:
    """Read a schema written by `write_schema`.

    Raises:
        FeatureSchemaError: The file is missing or is not a valid schema.
    """
    try:
        return FeatureSchema.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FeatureSchemaError(f"cannot read the feature schema '{path}': {exc.strerror}") from None
    except ValidationError as exc:
        raise FeatureSchemaError(f"'{path}' is not a valid feature schema: {exc.errors()[0]['msg']}") from None
