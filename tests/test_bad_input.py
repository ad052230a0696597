"""Hostile and broken peer inputs: each fails with one clear line (issue 6).

Every message here is sent to the server as the peer's error reply, so the
tests also check that no cell value or ID leaks into it.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from vfl_embed.data.tables import PeerTable, read_table
from vfl_embed.errors import PeerDataError
from vfl_embed.peer.preprocessing import Preprocessor

SECRET = "S3CRET-for-bad-input-tests"  # a marker cell value that must never reach a message


def _csv(tmp_path, text: str, name: str = "alice.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _table(rows: int = 12, **columns) -> str:
    """CSV text: an 'id' column, 'x' (numbers) and 'city', plus ``columns``."""
    cells = {"id": [f"e{i}" for i in range(rows)], "x": [str(i * 1.5) for i in range(rows)],
             "city": ["Lyon", "Porto", "Oslo"] * (rows // 3)} | columns
    lines = [",".join(cells)] + [",".join(values) for values in zip(*cells.values(),
                                                                     strict=True)]
    return "\n".join(lines) + "\n"


def _message(path, id_column: str = "id", label_column: str = "") -> str:
    with pytest.raises(PeerDataError) as err:
        PeerTable.from_file(path, id_column, "alice", label_column)
    message = str(err.value)
    assert message.startswith("alice: data file ")
    assert str(path) in message
    assert "\n" not in message and SECRET not in message
    return message


# ---------------------------------------------------------------- 1. files
def test_missing_file(tmp_path) -> None:
    path = tmp_path / "gone.csv"
    assert _message(path) == f"alice: data file '{path}' does not exist"


def test_directory_instead_of_file(tmp_path) -> None:
    path = tmp_path / "folder.csv"
    path.mkdir()
    assert _message(path) == f"alice: data file '{path}' is a directory, not a file"


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet"])
def test_empty_file(tmp_path, name: str) -> None:
    path = _csv(tmp_path, "", name)
    assert _message(path) == f"alice: data file '{path}' is empty (0 bytes)"


def test_blank_csv_has_no_header(tmp_path) -> None:
    path = _csv(tmp_path, "\n \r\n")
    assert _message(path).endswith("is empty (no header line)")


@pytest.mark.parametrize("suffix", [".xlsx", ".txt", ""])
def test_unsupported_suffix(tmp_path, suffix: str) -> None:
    path = _csv(tmp_path, _table(), f"alice{suffix}")
    assert _message(path).endswith(f"has suffix '{suffix}'; expected .csv, .parquet "
                                   "or .pq")


def test_binary_bytes_named_csv(tmp_path) -> None:
    path = tmp_path / "alice.csv"
    path.write_bytes(b"id,x\n1,2\n" + bytes(range(256)))
    assert "is not CSV text: line 3 holds a NUL byte" in _message(path)


def test_utf16_csv_is_not_utf8(tmp_path) -> None:
    path = _csv(tmp_path, _table(), encoding="utf-16")
    assert "save it as UTF-8" in _message(path)


def test_parquet_named_csv(tmp_path) -> None:
    path = tmp_path / "alice.csv"
    pd.read_csv(_csv(tmp_path, _table(), "t.csv")).to_parquet(path)
    assert _message(path).endswith("is a Parquet file, not CSV; rename it to .parquet")


def test_csv_named_parquet(tmp_path) -> None:
    path = _csv(tmp_path, _table(), "alice.parquet")
    assert _message(path).endswith("is not a Parquet file; if it holds CSV text, "
                                   "rename it to .csv")


def test_damaged_parquet(tmp_path) -> None:
    path = tmp_path / "alice.parquet"
    pd.read_csv(_csv(tmp_path, _table(), "t.csv")).to_parquet(path)
    path.write_bytes(path.read_bytes()[:40])
    assert "is not a readable Parquet file (" in _message(path)


# ---------------------------------------------------------- 2. ID column
@pytest.mark.parametrize(("header", "hint"), [("Id", "Id"), (" ID ", "ID"),
                                              ("ids", "ids"), ("key", "")])
def test_renamed_id_column_is_named_with_a_hint(tmp_path, caplog, header, hint) -> None:
    path = _csv(tmp_path, _table().replace("id,", f"{header},", 1))
    message = _message(path)
    assert message.endswith("ID column 'id' not found among the 3 column names (the peer's "
                            "log lists them)")
    # The names and the hint go to the peer's own log only.
    logged = f"{message.split(': ID')[0]}: ID column 'id' not found; columns are ["
    assert logged in caplog.text and "'x', 'city']" in caplog.text
    assert (f"; did you mean '{hint}'?" in caplog.text) == bool(hint)


def test_id_column_with_spaces_is_accepted(tmp_path) -> None:
    path = _csv(tmp_path, _table().replace("id,x,city", " id ,x , city"))
    table = PeerTable.from_file(path, "id", "alice")
    assert list(table.features.columns) == ["x", "city"]


def test_header_line_missing(tmp_path) -> None:
    path = _csv(tmp_path, _table().split("\n", 1)[1])
    message = _message(path)
    assert message.endswith("; some are numbers: the first line must name the columns")
    assert "e0" not in message


def test_blank_first_line_is_refused_without_the_line_after_it(tmp_path) -> None:
    # With the header line blank, pandas would read the first data row as the
    # column names, and "columns are [...]" would send that row to the server.
    path = _csv(tmp_path, "\ne0,Lyon\ne1,Porto\n")
    message = _message(path)
    assert message.endswith("starts with 1 blank line(s); the first line must name the "
                            "columns")
    assert "e0" not in message and "Lyon" not in message


def test_missing_label_column_gets_a_hint(tmp_path, caplog) -> None:
    path = _csv(tmp_path, _table(Price=[str(i) for i in range(12)]))
    assert _message(path, label_column="price").endswith(
        "label column 'price' not found among the 4 column names (the peer's log lists them)")
    assert ("label column 'price' not found; columns are ['id', 'x', 'city', 'Price']; "
            "did you mean 'Price'?") in caplog.text


def test_headerless_text_row_stays_in_the_peer(tmp_path, caplog) -> None:
    # A file without its header line: its first row is read as the names.
    rows = "".join(f"e{i},Porto,Oslo\n" for i in range(1, 6))
    for first in ("e0,Lyon,Oslo", "e0,Lyon,Lyon"):  # no ID column; a repeated name
        assert "Lyon" not in _message(_csv(tmp_path, f"{first}\n{rows}"))
    assert "columns are ['e0', 'Lyon', 'Oslo']" in caplog.text
    assert "column name(s) ['Lyon'] appear more than once" in caplog.text


def test_repeated_column_names(tmp_path, caplog) -> None:
    path = _csv(tmp_path, _table().replace("x,city", "x,x "))
    assert _message(path).endswith("1 column name(s) appear more than once (after trimming "
                                   "spaces; the peer's log names them); give each column "
                                   "its own name")
    assert "column name(s) ['x'] appear more than once" in caplog.text


# ------------------------------------------------- 3. missing and duplicate IDs
def test_missing_ids_name_count_and_lines(tmp_path) -> None:
    text = _table().replace("e3,", ",").replace("e7,", "NA,").replace("e9,", "  ,")
    assert _message(_csv(tmp_path, text)).endswith(
        "ID column 'id' has 3 missing IDs (line 5, line 9, line 11); give every row "
        "an ID")


def test_duplicate_ids_name_lines_not_ids(tmp_path) -> None:
    text = _table().replace("e5,", "e1,").replace("e8,", "e1,").replace("e9,", "e2,")
    text = text.replace("e10,", "e1,")
    assert _message(_csv(tmp_path, text)).endswith(
        "ID column 'id' has 4 duplicate IDs: line 7 repeats line 3, line 10 repeats "
        "line 3, line 11 repeats line 4, ...")


def test_line_numbers_count_quoted_newlines_and_blank_lines(tmp_path) -> None:
    text = 'id,x,note\r\ne0,1,"two\r\nlines"\r\n\r\ne1,2,plain\r\ne0,3,x\r\n'
    text += "".join(f"e{i},{i},n\r\n" for i in range(2, 9))
    assert _message(_csv(tmp_path, text)).endswith(
        "ID column 'id' has 1 duplicate IDs: line 6 repeats line 2")


# ---------------------------------------------------------- 4. ID normalization
def _ids(tmp_path, frame: pd.DataFrame, name: str) -> list[str]:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return list(PeerTable.from_file(path, "id", "alice").ids)


def test_csv_and_parquet_peers_agree_on_ids(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=4)
    csv_ids = _ids(tmp_path, pd.DataFrame({"id": ["7", "007", " 8 ", "9"], "x": x}),
                   "a.csv")
    parquet_ids = _ids(tmp_path, pd.DataFrame({"id": [7, 10, 8, 9], "x": x}), "b.parquet")
    float_ids = _ids(tmp_path, pd.DataFrame({"id": [7.0, 10.0, 8.0, 9.0], "x": x}),
                     "c.parquet")
    assert csv_ids == ["7", "007", "8", "9"]
    assert parquet_ids == float_ids == ["7", "10", "8", "9"]
    assert "7" in csv_ids and "007" not in parquet_ids


def test_unicode_ids_are_nfc_normalized() -> None:
    composed, decomposed = "Jos\u00e9", "Jose\u0301"
    frame = pd.DataFrame({"id": [decomposed, "b", "c"], "x": [1.0, 2.0, 3.0]})
    assert PeerTable(frame, "id", "alice").ids[0] == composed
    frame.loc[1, "id"] = composed
    with pytest.raises(PeerDataError, match="1 duplicate IDs: row 2 repeats row 1"):
        PeerTable(frame, "id", "alice")


@pytest.mark.parametrize(("ids", "refused"), [
    ([1.0, 2.0, 3.5], "1 IDs that are neither text nor whole numbers (row 3)"),
    ([True, False, True], "3 IDs that are neither text nor whole numbers (row 1, row 2, "
                          "row 3)"),
    ([1, "b", 2.5], "1 IDs that are neither text nor whole numbers (row 3)"),
], ids=["fraction", "bool", "mixed"])
def test_fractional_and_boolean_ids_are_refused(ids, refused: str) -> None:
    frame = pd.DataFrame({"id": ids, "x": [1.0, 2.0, 3.0]})
    with pytest.raises(PeerDataError) as err:
        PeerTable(frame, "id", "alice")
    assert str(err.value) == (f"alice: ID column 'id' has {refused}; use text or "
                              "integer IDs")


def test_empty_string_ids_are_missing() -> None:
    frame = pd.DataFrame({"id": ["a", "", " "], "x": [1.0, 2.0, 3.0]})
    with pytest.raises(PeerDataError, match=r"2 missing IDs \(row 2, row 3\)"):
        PeerTable(frame, "id", "alice")


# ---------------------------------------------------------- 5. inf and NaN
def test_infinite_values_name_column_count_and_line(tmp_path) -> None:
    text = _table().replace("\ne4,6.0,", "\ne4,inf,").replace("\ne6,9.0,", "\ne6,-inf,")
    assert _message(_csv(tmp_path, text)).endswith(
        "column 'x' has 2 infinite values (line 6, line 8); replace them with numbers "
        "or leave the cells empty")


def test_missing_numbers_stay_missing(tmp_path) -> None:
    text = _table().replace("\ne4,6.0,", "\ne4,,").replace("\ne6,9.0,", "\ne6,NA,")
    table = PeerTable.from_file(_csv(tmp_path, text), "id", "alice")
    assert table.features["x"].isna().sum() == 2
    x = Preprocessor().fit(table.features).transform(table.features)
    assert np.isfinite(x).all()


# ------------------------------------------------ 6. empty and constant columns
def test_column_without_values_names_the_file(tmp_path) -> None:
    path = _csv(tmp_path, _table(blank=[""] * 12))
    assert _message(path).endswith("column(s) ['blank'] have no usable values; drop them "
                                   "or fill them in")


def test_single_valued_columns_are_dropped_with_a_warning(tmp_path, caplog) -> None:
    path = _csv(tmp_path, _table(same=["1"] * 12, flag=["y"] * 12))
    table = PeerTable.from_file(path, "id", "alice")
    assert list(table.features.columns) == ["x", "city"]
    for column in ("same", "flag"):
        assert (f"alice: data file '{path}': column '{column}' has a single value; it is "
                "dropped") in caplog.text


def test_no_feature_left_after_dropping(tmp_path) -> None:
    path = _csv(tmp_path, "id,same\n" + "".join(f"e{i},1\n" for i in range(5)))
    assert _message(path).endswith(
        "no feature columns besides 'id' (single-valued, dropped: ['same'])")


def test_constant_in_training_rows_is_dropped_naming_the_file(tmp_path, caplog) -> None:
    path = _csv(tmp_path, _table(late=["0"] * 8 + ["1", "2", "3", "4"]))
    table = PeerTable.from_file(path, "id", "alice")
    pre = Preprocessor(peer="alice", source=table.source).fit(table.features.iloc[:8])
    assert pre.dropped_columns_ == ["late"]
    assert (f"alice: data file '{path}': column 'late' is constant in the training rows; "
            "it is dropped") in caplog.text


# -------------------------------------------------- 7. many categorical levels
def test_identifier_like_column_is_dropped_quickly(caplog) -> None:
    n = 60_000
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "id": np.arange(n),
        "code": [f"c{k}" for k in rng.integers(0, 50_000, n)],  # ~35,000 levels
        "zip": [f"z{k}" for k in rng.integers(0, 40, n)],
        "x": rng.normal(size=n),
    })
    started = time.perf_counter()
    features = PeerTable(frame, "id", "alice").features
    pre = Preprocessor(peer="alice").fit(features)
    x = pre.transform(features)
    assert time.perf_counter() - started < 20.0
    assert pre.dropped_columns_ == ["code"]
    assert x.shape == (n, 1 + 40 + 1)  # x, 40 zip levels, (rare)
    assert "column 'code' has no level in 1% of the training rows: it looks like an " \
           "identifier; it is dropped" in caplog.text


def test_many_levels_with_a_frequent_one_stay_bounded() -> None:
    n = 60_000
    codes = np.where(np.arange(n) % 5 == 0, "common", [f"c{k}" for k in range(n)])
    frame = pd.DataFrame({"code": codes, "x": np.arange(n, dtype=float)})
    pre = Preprocessor().fit(frame)
    assert pre.transform(frame).shape == (n, 1 + 2)  # x, 'common', (rare)


# ------------------------------------------------------ 8. text among numbers
def test_text_in_a_numeric_column_is_refused_without_values(tmp_path) -> None:
    x = [str(i) for i in range(30)]
    x[4], x[20] = SECRET, "12a"
    text = _table(30, x=x)
    assert _message(_csv(tmp_path, text)).endswith(
        "column 'x' has 2 non-numeric values among 28 numbers (line 6, line 22); "
        "correct them or leave the cells empty")


def test_missing_markers_are_not_text(tmp_path) -> None:
    x = [str(i) for i in range(12)]
    x[3], x[5] = "n/a", "NaN"
    table = PeerTable.from_file(_csv(tmp_path, _table(x=x)), "id", "alice")
    assert pd.api.types.is_float_dtype(table.features["x"])
    assert table.features["x"].isna().sum() == 2


def test_categorical_column_with_some_numbers_stays_categorical(tmp_path) -> None:
    grade = ["A", "B", "1", "2", "C", "3"] * 2
    table = PeerTable.from_file(_csv(tmp_path, _table(grade=grade)), "id", "alice")
    assert list(table.features["grade"]) == grade
    assert Preprocessor().fit(table.features).categorical_columns_ == ["city", "grade"]


# ---------------------------------------------------------- 9. transposed
def test_transposed_file(tmp_path) -> None:
    frame = pd.read_csv(_csv(tmp_path, _table(), "t.csv")).set_index("id").T
    path = tmp_path / "alice.csv"
    frame.to_csv(path, index_label="id")
    message = _message(path)
    assert message.endswith("the table has 2 rows but 13 columns; is it transposed? Each "
                            "row must be one entity, each column one feature")
    assert "e1" not in message


# ---------------------------------------------------------- 10. CSV oddities
@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_delimiters_line_endings_bom_and_quotes(tmp_path, delimiter, newline) -> None:
    rows = [["id", " Straße ", "note", "x"],
            ["é1", "Köln", f'"a{delimiter}b"', "1.5"],
            ["e2", "Zürich", '"two' + newline + 'lines"', "2.5"],
            ["e3", "Kraków", '"say ""hi"""', "-3"],
            ["e4", "Kraków", "plain", ""]]
    text = newline.join(delimiter.join(row) for row in rows) + newline
    path = _csv(tmp_path, "\ufeff" + text)
    table = PeerTable.from_file(path, "id", "alice")
    assert list(table.ids) == ["é1", "e2", "e3", "e4"]
    assert list(table.features.columns) == ["Straße", "note", "x"]
    assert list(table.features["note"]) == [f"a{delimiter}b", f"two{newline}lines",
                                            'say "hi"', "plain"]
    np.testing.assert_array_equal(table.features["x"], [1.5, 2.5, -3.0, np.nan])
    assert list(table.features["Straße"]) == ["Köln", "Zürich", "Kraków", "Kraków"]


def test_latin1_file_names_the_line(tmp_path) -> None:
    path = _csv(tmp_path, _table().replace("Oslo", "Malmö"), encoding="latin-1")
    assert _message(path).endswith("is not UTF-8 (line 4); save it as UTF-8")


def test_row_with_extra_fields_names_the_line(tmp_path) -> None:
    text = _table().replace("\ne5,7.5,Oslo\n", f"\ne5,7.5,Oslo,{SECRET}\n")
    assert _message(_csv(tmp_path, text)).endswith(
        "line 7 has 4 fields but the header has 3; check the delimiter and quote "
        "fields that contain it")


def test_first_row_with_extra_fields_is_not_an_index(tmp_path) -> None:
    text = _table().replace("\ne0,0.0,Lyon\n", f"\ne0,0.0,Lyon,{SECRET}\n")
    assert "line 2 has 4 fields but the header has 3" in _message(_csv(tmp_path, text))


def test_unclosed_quote(tmp_path) -> None:
    text = _table().replace("\ne5,7.5,Oslo\n", f'\ne5,7.5,"Oslo {SECRET}\n')
    assert _message(_csv(tmp_path, text)).endswith("the quote opened on line 7 is never "
                                                   "closed")


def test_read_table_returns_csv_cells_as_text(tmp_path) -> None:
    frame = read_table(_csv(tmp_path, _table()), owner="alice")
    assert frame["id"].iloc[0] == "e0" and frame["x"].iloc[1] == "1.5"


def test_label_column_cannot_be_the_id_column(tmp_path) -> None:
    assert _message(_csv(tmp_path, _table()), label_column="id").endswith(
        "'id' cannot be both the ID and the label column")
