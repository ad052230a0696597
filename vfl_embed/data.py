"""Peer tables: loading, validation and per-peer preprocessing.

Everything here runs inside a peer. A peer's raw columns and raw IDs never
leave this module's callers; only matrices derived from them do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["PeerDataError", "PeerTable", "Preprocessor", "read_table"]


class PeerDataError(ValueError):
    """Input data of one peer is unusable; the message names the peer and why."""


def read_table(path: str | Path, *, owner: str) -> pd.DataFrame:
    """Read a CSV or Parquet file, failing with a message that names ``owner``.

    Parameters
    ----------
    path : str | Path
        File to read; ``.csv``, ``.parquet`` or ``.pq``.
    owner : str
        Who reads it (a peer name or ``"server"``), used in error messages.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PeerDataError(f"{owner}: data file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise PeerDataError(
        f"{owner}: data file '{path}' has suffix '{suffix}'; "
        "expected .csv, .parquet or .pq"
    )


class PeerTable:
    """The rows one peer holds, keyed by a unique entity ID.

    Parameters
    ----------
    frame : pandas.DataFrame
        The peer's table, including the ID column.
    id_column : str
        Name of the column holding entity IDs.
    peer : str
        Name of the peer, used in every error message.
    label_column : str (default: "")
        Column holding the label on a label-holding peer; it is kept apart
        from the features and never encoded.
    require_features : bool (default: True)
        False for a label file, which holds only IDs and labels.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        id_column: str,
        peer: str,
        label_column: str = "",
        require_features: bool = True,
    ) -> None:
        self.peer = peer
        if id_column not in frame.columns:
            raise PeerDataError(
                f"{peer}: ID column '{id_column}' not found; columns are "
                f"{_preview(frame.columns)}"
            )
        ids = frame[id_column]
        if ids.isna().any():
            raise PeerDataError(
                f"{peer}: ID column '{id_column}' has {int(ids.isna().sum())} "
                "missing values"
            )
        ids = ids.astype(str)
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            raise PeerDataError(
                f"{peer}: ID column '{id_column}' has {len(duplicated)} duplicate "
                f"IDs, e.g. {_preview(duplicated.unique())}"
            )
        if label_column and label_column not in frame.columns:
            raise PeerDataError(
                f"{peer}: label column '{label_column}' not found; columns are "
                f"{_preview(frame.columns)}"
            )
        drop = [id_column] + ([label_column] if label_column else [])
        self.ids: np.ndarray = ids.to_numpy(dtype=object)
        self.features: pd.DataFrame = frame.drop(columns=drop).reset_index(drop=True)
        self.labels: pd.Series | None = (
            frame[label_column].reset_index(drop=True) if label_column else None
        )
        if len(self.ids) == 0:
            raise PeerDataError(f"{peer}: the table has no rows")
        check_usable(self.features, peer)
        if require_features and self.features.shape[1] == 0:
            set_apart = f"'{id_column}'" + (f" and '{label_column}'" if label_column else "")
            raise PeerDataError(f"{peer}: no feature columns besides {set_apart}")

    @classmethod
    def from_file(
        cls, path: str | Path, id_column: str, peer: str, label_column: str = ""
    ) -> PeerTable:
        """Load a peer table from a CSV or Parquet file."""
        return cls(read_table(path, owner=peer), id_column, peer, label_column)

    def __len__(self) -> int:
        return len(self.ids)


class Preprocessor:
    """Impute, scale and one-hot encode one peer's columns.

    Numeric columns are median-imputed and standardized; categorical columns
    (object, category or bool dtype) get missing values as their own level,
    levels rarer than ``min_level_fraction`` grouped into one ``"(rare)"``
    level, and one-hot encoding. Fitted on training rows only.

    Parameters
    ----------
    min_level_fraction : float (default: 0.01)
        Levels seen in fewer than this share of training rows are grouped.
    peer : str (default: "peer")
        Name used in error messages.
    """

    RARE = "(rare)"

    def __init__(self, min_level_fraction: float = 0.01, peer: str = "peer") -> None:
        self.min_level_fraction = min_level_fraction
        self.peer = peer

    def fit(self, frame: pd.DataFrame) -> Preprocessor:
        """Learn imputation values, scales and category levels from ``frame``."""
        if not 0.0 <= self.min_level_fraction < 1.0:
            raise ValueError(
                f"min_level_fraction must be in [0, 1), got {self.min_level_fraction}"
            )
        self.numeric_columns_ = [
            c
            for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]
        self.categorical_columns_ = [
            c for c in frame.columns if c not in self.numeric_columns_
        ]
        check_usable(frame, self.peer, where=" in the training rows")
        numeric = frame[self.numeric_columns_].astype(float)
        self.medians_ = numeric.median()
        self.means_ = numeric.fillna(self.medians_).mean()
        stds = numeric.fillna(self.medians_).std(ddof=0)
        self.stds_ = stds.where(stds > 0, 1.0)
        self.levels_ = {
            c: self._frequent_levels(frame[c]) for c in self.categorical_columns_
        }
        self.feature_names_ = list(self.numeric_columns_) + [
            f"{c}={level}" for c in self.categorical_columns_ for level in self.levels_[c]
        ]
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the encoded matrix (float32) for the rows of ``frame``."""
        self._check_fitted()
        missing = [
            c for c in self.numeric_columns_ + self.categorical_columns_
            if c not in frame.columns
        ]
        if missing:
            raise PeerDataError(f"{self.peer}: columns missing: {_preview(missing)}")
        numeric = frame[self.numeric_columns_].astype(float).fillna(self.medians_)
        blocks = [((numeric - self.means_) / self.stds_).to_numpy(dtype=np.float32)]
        for column in self.categorical_columns_:
            values = self._as_levels(frame[column])
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

    def _frequent_levels(self, column: pd.Series) -> list[str]:
        counts = self._as_levels(column).value_counts(normalize=True)
        frequent = sorted(counts[counts >= self.min_level_fraction].index)
        return frequent + [self.RARE]

    @staticmethod
    def _as_levels(column: pd.Series) -> pd.Series:
        return column.astype(object).where(column.notna(), "(missing)").astype(str)

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("Preprocessor is not fitted; call fit() first")


def check_usable(frame: pd.DataFrame, peer: str, where: str = "") -> None:
    """Raise :class:`PeerDataError` naming the columns of ``frame`` with no values."""
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise PeerDataError(
            f"{peer}: column(s) {_preview(empty)} have no usable values{where}; "
            "drop them or fill them in"
        )


def _preview(values: object, limit: int = 5) -> str:
    items = [str(v) for v in list(values)]  # type: ignore[call-overload]
    shown = ", ".join(repr(v) for v in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"
