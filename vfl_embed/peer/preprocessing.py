"""A peer's preprocessing: impute, scale and one-hot encode its own columns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.tables import DataSource, as_levels, check_finite, check_usable, is_number, preview

__all__ = ["Preprocessor"]

# A held-out value this many training standard deviations out is an error in
# the data; clipping keeps the float32 matrix finite.
_Z_LIMIT = 1e6


class Preprocessor:
    """Impute, scale and one-hot encode one peer's columns.

    Numeric columns are median-imputed and standardized; categorical columns
    (any other dtype, such as text, category or bool) get missing values as
    their own level, levels rarer than ``min_level_fraction`` grouped into
    one ``"(rare)"`` level, and one-hot encoding. Fitted on training rows
    only. Columns that say nothing in the training rows are dropped with a
    warning: constant ones, and categorical ones none of whose levels is
    frequent (identifiers, free text), which would encode as one level.

    Parameters
    ----------
    min_level_fraction : float (default: 0.01)
        Levels seen in fewer than this share of training rows are grouped.
    peer : str (default: "peer")
        Name used in error messages.
    source : str | Path | None (default: None)
        The peer's data file, named in messages.
    """

    RARE = "(rare)"

    def __init__(
        self, min_level_fraction: float = 0.01, peer: str = "peer",
        source: str | Path | None = None,
    ) -> None:
        self.min_level_fraction = min_level_fraction
        self.peer = peer
        self.source = source

    def fit(self, frame: pd.DataFrame) -> Preprocessor:
        """Learn imputation values, scales and category levels from ``frame``."""
        if not 0.0 <= self.min_level_fraction < 1.0:
            raise ValueError(
                f"min_level_fraction must be in [0, 1), got {self.min_level_fraction}"
            )
        source = self._source()
        check_usable(frame, self.peer, " in the training rows", self.source)
        check_finite(frame, source)
        numeric = [c for c in frame.columns if is_number(frame[c])]
        values = frame[numeric].astype(float)
        medians = values.median()
        filled = values.fillna(medians)
        # Scale by the largest magnitude first: sums of huge values overflow.
        scale = filled.abs().max()
        scale = scale.where(scale > 0, 1.0)
        means = (filled / scale).mean() * scale
        stds = (filled / scale).std(ddof=0) * scale
        levels = {c: self._frequent_levels(frame[c]) for c in frame.columns
                  if c not in numeric}
        self.dropped_columns_ = self._drop_uninformative(frame, stds, levels, source)
        self.numeric_columns_ = [c for c in numeric if c not in self.dropped_columns_]
        self.categorical_columns_ = [c for c in levels if c not in self.dropped_columns_]
        if not self.numeric_columns_ + self.categorical_columns_:
            raise source.error("no column varies in the training rows; nothing to encode")
        self.medians_ = medians[self.numeric_columns_]
        self.means_ = means[self.numeric_columns_]
        self.stds_ = stds[self.numeric_columns_]
        self.levels_ = {c: levels[c] for c in self.categorical_columns_}
        self.feature_names_ = _feature_names(self.numeric_columns_, self.levels_)
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the encoded matrix (float32) for the rows of ``frame``."""
        self._check_fitted()
        missing = [
            c for c in self.numeric_columns_ + self.categorical_columns_
            if c not in frame.columns
        ]
        if missing:
            raise self._source().error(f"columns missing: {preview(missing)}")
        numeric = frame[self.numeric_columns_]
        check_finite(numeric, self._source())
        values = numeric.astype(float).fillna(self.medians_).to_numpy()
        with np.errstate(over="ignore"):  # a far-out value; clipped below
            scaled = (values - self.means_.to_numpy()) / self.stds_.to_numpy()
        blocks = [np.clip(scaled, -_Z_LIMIT, _Z_LIMIT).astype(np.float32)]
        for column in self.categorical_columns_:
            values = as_levels(frame[column])
            levels = self.levels_[column]
            values = values.where(values.isin(levels), self.RARE)
            codes = pd.Categorical(values, categories=levels).codes
            blocks.append(np.eye(len(levels), dtype=np.float32)[codes])
        return np.concatenate(blocks, axis=1)

    def numeric_to_original(self, encoded: np.ndarray) -> np.ndarray:
        """Map the numeric block of an encoded matrix back to original units."""
        self._check_fitted()
        width = len(self.numeric_columns_)
        return encoded[:, :width] * self.stds_.to_numpy() + self.means_.to_numpy()

    def categorical_blocks(self) -> list[slice]:
        """Column slices of each categorical column's one-hot block."""
        self._check_fitted()
        start = len(self.numeric_columns_)
        slices = []
        for column in self.categorical_columns_:
            width = len(self.levels_[column])
            slices.append(slice(start, start + width))
            start += width
        return slices

    def get_state(self) -> dict:
        """Return the fitted state as JSON-ready values (see :meth:`from_state`).

        Floats are kept exactly: JSON writes the shortest text that reads
        back to the same double.
        """
        self._check_fitted()
        return {
            "min_level_fraction": self.min_level_fraction,
            "numeric_columns": list(self.numeric_columns_),
            "medians": self.medians_.tolist(),
            "means": self.means_.tolist(),
            "stds": self.stds_.tolist(),
            "levels": [[column, self.levels_[column]] for column in self.categorical_columns_],
            "dropped_columns": list(self.dropped_columns_),
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, object], peer: str = "peer",
        source: str | Path | None = None,
    ) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`get_state`'s output."""
        fitted = cls(float(state["min_level_fraction"]), peer, source)
        numeric = [str(c) for c in state["numeric_columns"]]
        fitted.numeric_columns_ = numeric
        for name in ("medians", "means", "stds"):
            values = pd.Series(state[name], index=numeric, dtype=float)
            setattr(fitted, f"{name}_", values)
        fitted.levels_ = {str(column): [str(v) for v in levels]
                          for column, levels in state["levels"]}
        fitted.categorical_columns_ = list(fitted.levels_)
        fitted.dropped_columns_ = [str(c) for c in state["dropped_columns"]]
        fitted.feature_names_ = _feature_names(numeric, fitted.levels_)
        return fitted

    def _frequent_levels(self, column: pd.Series) -> list[str]:
        counts = as_levels(column).value_counts(normalize=True)
        frequent = sorted(counts[counts >= self.min_level_fraction].index)
        return frequent + [self.RARE]

    def _drop_uninformative(
        self, frame: pd.DataFrame, stds: pd.Series, levels: dict[str, list[str]],
        source: DataSource,
    ) -> list[str]:
        """Warn about and return the columns the encoding would make constant."""
        reasons = {c: "is constant in the training rows" for c in stds.index[stds == 0]}
        for column, kept in levels.items():
            if len(kept) == 1:  # only "(rare)" is left
                reasons[column] = (
                    f"has no level in {100 * self.min_level_fraction:g}% of the "
                    "training rows: it looks like an identifier"
                )
            elif as_levels(frame[column]).nunique() <= 1:
                reasons[column] = "is constant in the training rows"
        for column, reason in reasons.items():
            source.warn(f"column '{column}' {reason}; it is dropped")
        return list(reasons)

    def _source(self) -> DataSource:
        return DataSource.of(self.peer, self.source, rows_are_records=False)

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("Preprocessor is not fitted; call fit() first")



def _feature_names(numeric: list[str], levels: Mapping[str, list[str]]) -> list[str]:
    return list(numeric) + [f"{c}={level}" for c, kept in levels.items() for level in kept]


