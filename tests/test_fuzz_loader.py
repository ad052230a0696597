"""Fuzzing a peer's input loading: random CSV files and random DataFrames.

Whatever the input, ``PeerTable`` and ``Preprocessor`` either succeed (unique,
non-empty, normalized IDs; a finite float32 matrix) or raise
``PeerDataError`` with one line that quotes no cell value. The number of
examples comes from the Hypothesis profile in conftest.py (``VFL_FUZZ=long``).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from vfl_embed.data.tables import PeerTable
from vfl_embed.errors import PeerDataError
from vfl_embed.peer.preprocessing import Preprocessor

MARK = "\u00a4"  # every generated text cell starts with it; no message may hold it
BOM = "\ufeff".encode()

names = st.sampled_from(["x", "y", "Straße", "1", " x ", "Id", "ids"]) | st.text(
    st.characters(categories=["L", "N"]) | st.sampled_from(" _-."), min_size=1,
    max_size=6).filter(lambda name: name.strip() and name.strip() != "id")
# Any text, with the characters that break CSV files made likely.
texts = st.text(st.characters(codec="utf-8", exclude_characters=MARK + "\x00")
                | st.sampled_from(',;|\t"\n\r '), max_size=6).map(MARK.__add__)
numbers = (st.integers(-10**20, 10**20).map(str) | st.floats().map(repr)
           | st.sampled_from(["inf", "-inf", "1e400", "", "NA", "n/a", " 3 ", "-0", "7",
                              "007", "7.0", "1e-320"]))
id_cells = st.integers(0, 40).map(str) | numbers | texts


def _sometimes(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws (Hypothesis favours the ends of a range)."""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


def _header(draw) -> list[str]:
    """'id' and up to four other names, sometimes one of them twice."""
    header = ["id", *draw(st.lists(names, max_size=4, unique_by=str.strip))]
    if _sometimes(draw, 10):
        header.append(draw(st.sampled_from(header)))
    return draw(st.permutations(header))


@st.composite
def csv_files(draw) -> tuple[bytes, list[str]]:
    """A CSV file's bytes, possibly broken, and its column names."""
    n_rows = draw(st.integers(0, 25))
    header = _header(draw)
    columns = []
    for name in header:
        if name == "id" and not _sometimes(draw, 3):
            columns.append([f"e{i}" for i in range(n_rows)])  # clean IDs: go deeper
            continue
        kind = draw(st.sampled_from([numbers, texts, numbers | texts, id_cells]))
        if _sometimes(draw, 6):
            kind = st.just(draw(kind))  # a single-valued column
        columns.append(draw(st.lists(kind, min_size=n_rows, max_size=n_rows)))
    rows = [header] + [list(row) for row in zip(*columns, strict=True)]
    if _sometimes(draw, 8):  # a ragged row, or header
        at = draw(st.integers(0, len(rows) - 1))
        extra = draw(names if at == 0 else numbers | texts)
        rows[at] = rows[at][:-1] if draw(st.booleans()) else [*rows[at], extra]
    quoting = draw(st.sampled_from(["minimal", "minimal", "all", "none", "raw"]))
    text = _render(rows, draw(st.sampled_from(",;\t|")),
                   draw(st.sampled_from(["\n", "\r\n"])), quoting)
    data = (BOM if draw(st.booleans()) else b"") + text.encode()
    if _sometimes(draw, 16):  # stray bytes: not UTF-8, NUL, binary
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(min_size=1, max_size=4)) + data[cut:]
    return data, header


def _render(rows: list[list[str]], delimiter: str, newline: str, quoting: str) -> str:
    out = io.StringIO()
    mode = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL,
            "none": csv.QUOTE_NONE}.get(quoting)
    try:
        csv.writer(out, delimiter=delimiter, lineterminator=newline, quoting=mode,
                   escapechar="\\").writerows(rows)
        return out.getvalue()
    except (csv.Error, TypeError):  # "raw", or what QUOTE_NONE cannot write
        # No quoting at all: delimiters and newlines in cells break the rows.
        return "".join(delimiter.join(row) + newline for row in rows)


cells = st.none() | st.booleans() | st.integers() | st.floats() | texts
column_kinds = st.sampled_from(["float", "int", "bool", "text", "category", "object", "none"])


@st.composite
def frames(draw) -> pd.DataFrame:
    """A DataFrame with an 'id' column and columns of any dtype and value."""
    n_rows = draw(st.integers(0, 20))
    header = _header(draw)
    data = {}
    for i, name in enumerate(header):
        kind = draw(column_kinds)
        values = {
            "float": st.floats(), "int": st.integers(-2**63, 2**63 - 1),
            "bool": st.booleans(), "text": texts, "category": texts, "object": cells,
            "none": st.none(),
        }[kind]
        column = draw(st.lists(values, min_size=n_rows, max_size=n_rows))
        if name == "id" and not _sometimes(draw, 3):  # clean IDs: go deeper
            kind, column = draw(st.sampled_from([
                ("int", list(range(n_rows))), ("float", [i + 0.0 for i in range(n_rows)]),
                ("text", [f"e{i}" for i in range(n_rows)])]))
        dtype = {"float": float, "int": np.int64, "bool": bool, "category": "category",
                 "text": "str"}.get(kind, object)
        data[i] = pd.Series(column, dtype=dtype)
    frame = pd.DataFrame(data, index=range(n_rows))
    frame.columns = header  # repeated names are allowed here
    return frame


def _check(load, half: bool) -> None:
    """Run ``load`` and check its table and encoding, or its error.

    With ``half``, the encoding is fitted on the first half of the rows only,
    as a peer fits on its training rows and encodes all of them.
    """
    try:
        table = load()
        ids = list(table.ids)
        assert all(isinstance(i, str) and i for i in ids)
        assert all(i == i.strip() == unicodedata.normalize("NFC", i) for i in ids)
        assert len(set(ids)) == len(ids)
        if table.features.shape[1]:
            train = table.features.iloc[:(len(ids) + 1) // 2] if half else table.features
            x = Preprocessor(peer="fuzz").fit(train).transform(table.features)
            assert x.dtype == np.float32
            assert x.shape[0] == len(ids)
            assert np.isfinite(x).all()
        event("loaded and encoded" if table.features.shape[1] else "loaded, no features")
    except PeerDataError as err:
        message = str(err)
        assert message.startswith("fuzz: ")
        assert "\n" not in message
        assert MARK not in message
        # What went wrong, for --hypothesis-show-statistics: the message's first words.
        what = re.sub(r"^fuzz: (data file '[^']*':? )?", "", message)
        event(" ".join(re.sub(r"'[^']*'|\d+", "_", what).split()[:4]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@given(file=csv_files(), label=st.booleans(), half=st.booleans())
def test_random_csv_files(folder, file, label: bool, half: bool) -> None:
    data, header = file
    path = folder / "peer.csv"
    path.write_bytes(data)
    others = [name.strip() for name in header if name != "id"]
    label_column = others[-1] if label and len(others) > 1 else ""
    _check(lambda: PeerTable.from_file(path, "id", "fuzz", label_column), half)


@given(frame=frames(), half=st.booleans())
def test_random_frames(frame: pd.DataFrame, half: bool) -> None:
    _check(lambda: PeerTable(frame, "id", "fuzz"), half)


@given(frame=frames(), half=st.booleans())
def test_random_parquet_files(folder, frame: pd.DataFrame, half: bool) -> None:
    path = folder / "peer.parquet"
    try:
        frame.to_parquet(path)
    except Exception:  # noqa: BLE001 (pyarrow cannot store every frame)
        event("pyarrow cannot write it")
        return
    _check(lambda: PeerTable.from_file(path, "id", "fuzz"), half)
