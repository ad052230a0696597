"""Tests of vfl_embed.data.tables: peer tables, file loading and preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl_embed.data.tables import PeerTable, read_table
from vfl_embed.errors import PeerDataError
from vfl_embed.peer.preprocessing import Preprocessor


@pytest.fixture
def frame() -> pd.DataFrame:
    """A small peer table: an ID column, two numeric and two categorical columns."""
    rng = np.random.default_rng(0)
    n = 200
    age = rng.normal(40.0, 12.0, n).round(1)
    age[[3, 17, 44]] = np.nan
    return pd.DataFrame({
        "key": [f"e-{k:04d}" for k in rng.permutation(n)],
        "age": age,
        "income": rng.lognormal(10.0, 0.5, n).round(2),
        "city": rng.choice(["Berlin", "Lyon", "Porto"], size=n, p=[0.5, 0.3, 0.2]),
        "member": rng.choice([True, False], size=n),
        "y": rng.normal(size=n),
    })


@pytest.fixture
def categorical() -> pd.DataFrame:
    """One numeric column and one categorical column with a rare level and NaN."""
    city = ["a"] * 120 + ["b"] * 74 + ["c"] * 2 + [None] * 4
    return pd.DataFrame({"x": np.arange(200, dtype=float), "city": city})


# ------------------------------------------------------------------- PeerTable
def test_peer_table_splits_ids_features_and_labels(frame: pd.DataFrame) -> None:
    table = PeerTable(frame, "key", "alice", label_column="y")
    assert len(table) == 200
    assert table.ids.dtype == object
    assert list(table.ids) == list(frame["key"])
    assert list(table.features.columns) == ["age", "income", "city", "member"]
    assert table.labels is not None
    np.testing.assert_array_equal(table.labels.to_numpy(), frame["y"].to_numpy())


def test_peer_table_without_label_column_has_no_labels(frame: pd.DataFrame) -> None:
    table = PeerTable(frame, "key", "alice")
    assert table.labels is None
    assert "y" in table.features.columns


def test_peer_table_ids_become_strings() -> None:
    table = PeerTable(pd.DataFrame({"id": [3, 1, 2], "v": [0.1, 0.2, 0.3]}), "id", "p")
    assert list(table.ids) == ["3", "1", "2"]


def test_peer_table_keeps_row_order_after_filtering(frame: pd.DataFrame) -> None:
    subset = frame.iloc[[5, 2, 9, 40, 7, 13, 1, 0]]  # more rows than columns
    table = PeerTable(subset, "key", "alice")
    assert list(table.features.index) == list(range(8))
    np.testing.assert_array_equal(table.features["age"], subset["age"])


def test_missing_id_column_names_peer_and_column(frame: pd.DataFrame, caplog) -> None:
    with pytest.raises(PeerDataError, match="alice") as err:
        PeerTable(frame, "customer_id", "alice")
    assert "'customer_id'" in str(err.value)
    assert "'age'" in caplog.text  # the peer's log lists the columns there are


def test_duplicate_ids_name_peer_column_and_rows(frame: pd.DataFrame) -> None:
    frame.loc[7, "key"] = frame.loc[3, "key"]
    with pytest.raises(PeerDataError, match="alice") as err:
        PeerTable(frame, "key", "alice")
    message = str(err.value)
    assert "'key'" in message
    assert "1 duplicate IDs: row 8 repeats row 4" in message
    assert frame.loc[3, "key"] not in message  # the message goes to the server


def test_ids_equal_as_strings_are_duplicates() -> None:
    with pytest.raises(PeerDataError, match="duplicate"):
        PeerTable(pd.DataFrame({"id": [1, "1"], "v": [0.0, 1.0]}), "id", "bob")


def test_missing_ids_name_peer_and_column(frame: pd.DataFrame) -> None:
    frame.loc[[4, 8], "key"] = None
    with pytest.raises(PeerDataError, match="alice") as err:
        PeerTable(frame, "key", "alice")
    assert "'key'" in str(err.value)
    assert "2 missing" in str(err.value)


def test_missing_label_column_names_peer_and_column(frame: pd.DataFrame) -> None:
    with pytest.raises(PeerDataError, match="alice") as err:
        PeerTable(frame, "key", "alice", label_column="price")
    assert "label column 'price'" in str(err.value)


def test_no_feature_columns_names_peer(frame: pd.DataFrame) -> None:
    with pytest.raises(PeerDataError, match="alice.*no feature columns"):
        PeerTable(frame[["key"]], "key", "alice")


def test_no_feature_columns_names_the_id_column(frame: pd.DataFrame) -> None:
    with pytest.raises(PeerDataError, match="alice") as err:
        PeerTable(frame[["key", "y"]], "key", "alice", label_column="y")
    assert "'key'" in str(err.value)


def test_label_file_needs_no_features(frame: pd.DataFrame) -> None:
    table = PeerTable(frame[["key", "y"]], "key", "labels", label_column="y",
                      require_features=False)
    assert table.features.shape == (200, 0)
    assert table.labels is not None and len(table.labels) == 200


def test_all_missing_column_names_peer_and_column(frame: pd.DataFrame) -> None:
    frame["blank"] = np.nan
    with pytest.raises(PeerDataError, match="alice") as err:
        PeerTable(frame, "key", "alice")
    assert "'blank'" in str(err.value)
    assert "'age'" not in str(err.value)


def test_empty_table_names_peer() -> None:
    empty = pd.DataFrame({"id": pd.Series([], dtype=str),
                          "v": pd.Series([], dtype=float)})
    with pytest.raises(PeerDataError, match="carol: the table has no rows"):
        PeerTable(empty, "id", "carol")


# ----------------------------------------------------------------- file loading
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq", ".CSV"])
def test_from_file_reads_csv_and_parquet(
    frame: pd.DataFrame, tmp_path, suffix: str
) -> None:
    path = tmp_path / f"alice{suffix}"
    if suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    table = PeerTable.from_file(path, "key", "alice", label_column="y")
    assert len(table) == len(frame)
    assert list(table.ids) == list(frame["key"])
    assert list(table.features.columns) == ["age", "income", "city", "member"]
    np.testing.assert_allclose(table.features["income"], frame["income"])
    np.testing.assert_array_equal(table.features["age"].isna(), frame["age"].isna())
    assert list(table.features["city"]) == list(frame["city"])


def test_from_file_accepts_a_string_path(frame: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "alice.csv"
    frame.to_csv(path, index=False)
    assert len(PeerTable.from_file(str(path), "key", "alice")) == 200


def test_missing_file_names_peer_and_file(tmp_path) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(PeerDataError, match="alice") as err:
        PeerTable.from_file(path, "id", "alice")
    assert str(path) in str(err.value)
    assert "does not exist" in str(err.value)


def test_a_directory_is_not_a_data_file(tmp_path) -> None:
    with pytest.raises(PeerDataError, match="server.*is a directory, not a file"):
        read_table(tmp_path, owner="server")


@pytest.mark.parametrize("suffix", [".xlsx", ".json", ""])
def test_unsupported_suffix_names_peer_file_and_suffix(tmp_path, suffix: str) -> None:
    path = tmp_path / f"alice{suffix}"
    path.write_text("id,v\n1,2\n")
    with pytest.raises(PeerDataError, match="alice") as err:
        read_table(path, owner="alice")
    message = str(err.value)
    assert str(path) in message
    assert f"suffix '{suffix}'" in message
    assert ".csv, .parquet or .pq" in message


# ---------------------------------------------------------------- Preprocessor
def test_preprocessor_learns_from_the_given_rows_only(frame: pd.DataFrame) -> None:
    features = PeerTable(frame, "key", "alice", label_column="y").features
    train = np.arange(200) < 150
    features.loc[~train, "income"] = 1e9  # held-out rows must not move the scales
    pre = Preprocessor(peer="alice").fit(features[train])
    assert pre.numeric_columns_ == ["age", "income"]
    assert pre.categorical_columns_ == ["city", "member"]
    train_age = features.loc[train, "age"]
    assert pre.medians_["age"] == pytest.approx(train_age.median())
    imputed = train_age.fillna(train_age.median())
    assert pre.means_["age"] == pytest.approx(imputed.mean())
    assert pre.means_["income"] == pytest.approx(features.loc[train, "income"].mean())
    assert pre.stds_["income"] < 1e5

    x = pre.transform(features)
    assert x.dtype == np.float32
    # Training rows are standardized: mean 0, standard deviation 1.
    np.testing.assert_allclose(x[train, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[train, :2].std(axis=0), 1.0, atol=1e-5)
    assert (x[~train, 1] > 1e3).all()


def test_missing_numbers_take_the_training_median(frame: pd.DataFrame) -> None:
    features = frame.drop(columns=["key", "y"])
    pre = Preprocessor().fit(features)
    x = pre.transform(features)
    median = features["age"].median()
    expected = (median - pre.means_["age"]) / pre.stds_["age"]
    np.testing.assert_allclose(x[[3, 17, 44], 0], expected, rtol=1e-5)


def test_output_width_is_numeric_plus_one_hot_levels(frame: pd.DataFrame) -> None:
    features = frame.drop(columns=["key", "y"])
    pre = Preprocessor().fit(features)
    x = pre.transform(features)
    # 2 numeric + city (3 levels + rare) + member (2 levels + rare)
    assert x.shape == (200, 2 + 4 + 3)
    assert len(pre.feature_names_) == x.shape[1]
    assert pre.feature_names_[:2] == ["age", "income"]
    assert "city=Berlin" in pre.feature_names_
    assert "member=True" in pre.feature_names_
    assert pre.categorical_blocks() == [slice(2, 6), slice(6, 9)]
    for block in pre.categorical_blocks():
        np.testing.assert_array_equal(x[:, block].sum(axis=1), 1.0)


def test_rare_levels_are_grouped(categorical: pd.DataFrame) -> None:
    pre = Preprocessor(min_level_fraction=0.02).fit(categorical)
    assert pre.levels_["city"] == ["(missing)", "a", "b", "(rare)"]
    x = pre.transform(categorical)
    assert x.shape == (200, 1 + 4)
    block = x[:, 1:]
    np.testing.assert_array_equal(block[194:196], [[0, 0, 0, 1]] * 2)  # "c"
    np.testing.assert_array_equal(block[196:], [[1, 0, 0, 0]] * 4)  # missing
    np.testing.assert_array_equal(block.sum(axis=0), [4, 120, 74, 2])


def test_rare_threshold_zero_keeps_every_level(categorical: pd.DataFrame) -> None:
    pre = Preprocessor(min_level_fraction=0.0).fit(categorical)
    assert pre.levels_["city"] == ["(missing)", "a", "b", "c", "(rare)"]


def test_unseen_levels_map_to_rare(categorical: pd.DataFrame) -> None:
    pre = Preprocessor(min_level_fraction=0.02).fit(categorical)
    new = pd.DataFrame({"x": [1.0, 2.0, 3.0], "city": ["zzz", "a", "c"]})
    x = pre.transform(new)
    np.testing.assert_array_equal(
        x[:, 1:], [[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1]]
    )


def test_column_without_usable_values_is_named() -> None:
    frame = pd.DataFrame({
        "x": [1.0, 2.0, 3.0, 4.0],
        "empty_num": [np.nan] * 4,
        "empty_cat": pd.Series([None] * 4, dtype=object),
    })
    with pytest.raises(PeerDataError, match="bob") as err:
        Preprocessor(peer="bob").fit(frame)
    assert "'empty_num'" in str(err.value)
    assert "'empty_cat'" in str(err.value)
    assert "'x'" not in str(err.value)


def test_column_empty_in_training_rows_only_is_refused() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0],
                          "late": [np.nan, np.nan, 5.0, 6.0]})
    with pytest.raises(PeerDataError, match="'late'"):
        Preprocessor(peer="bob").fit(frame.iloc[:2])


def test_transform_before_fit_raises(frame: pd.DataFrame) -> None:
    pre = Preprocessor()
    with pytest.raises(RuntimeError, match="not fitted"):
        pre.transform(frame)
    with pytest.raises(RuntimeError, match="not fitted"):
        pre.numeric_to_original(np.zeros((2, 2)))
    with pytest.raises(RuntimeError, match="not fitted"):
        pre.categorical_blocks()


def test_transform_needs_the_fitted_columns(frame: pd.DataFrame) -> None:
    features = frame.drop(columns=["key", "y"])
    pre = Preprocessor(peer="alice").fit(features)
    with pytest.raises(PeerDataError, match="alice: columns missing.*'city'"):
        pre.transform(features.drop(columns=["city"]))


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_invalid_min_level_fraction(frame: pd.DataFrame, fraction: float) -> None:
    with pytest.raises(ValueError, match="min_level_fraction"):
        Preprocessor(min_level_fraction=fraction).fit(frame)


def test_numeric_to_original_inverts_scaling(frame: pd.DataFrame) -> None:
    features = frame.drop(columns=["key", "y"])
    pre = Preprocessor().fit(features.iloc[:120])
    x = pre.transform(features)
    original = pre.numeric_to_original(x)
    expected = features[["age", "income"]].fillna(pre.medians_).to_numpy()
    assert original.shape == (200, 2)
    np.testing.assert_allclose(original, expected, rtol=1e-5)


def test_constant_columns_are_dropped_with_a_warning(caplog) -> None:
    frame = pd.DataFrame({"c": [7.0] * 5, "v": [1.0, 2.0, 3.0, 4.0, 5.0],
                          "k": ["a"] * 5})
    pre = Preprocessor(peer="bob", source="bob.csv").fit(frame)
    assert pre.numeric_columns_ == ["v"]
    assert pre.categorical_columns_ == []
    assert pre.dropped_columns_ == ["c", "k"]
    assert pre.transform(frame).shape == (5, 1)
    assert "bob: data file 'bob.csv': column 'c' is constant in the training rows; " \
           "it is dropped" in caplog.text
    assert "column 'k' is constant" in caplog.text


def test_no_varying_column_is_an_error() -> None:
    frame = pd.DataFrame({"c": [7.0] * 5, "v": [1.0, 1.0, 1.0, 4.0, 5.0]})
    with pytest.raises(PeerDataError, match="bob: no column varies in the training"):
        Preprocessor(peer="bob").fit(frame.iloc[:3])


def test_only_categorical_columns(categorical: pd.DataFrame) -> None:
    pre = Preprocessor(min_level_fraction=0.02).fit(categorical[["city"]])
    x = pre.transform(categorical[["city"]])
    assert x.shape == (200, 4)
    assert pre.numeric_to_original(x).shape == (200, 0)
