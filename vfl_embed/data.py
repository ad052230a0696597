"""Peer tables: loading, validation and per-peer preprocessing.

Everything here runs inside a peer. A peer's raw columns and raw IDs never
leave this module's callers; only matrices derived from them do. Error
messages do leave: a peer sends them to the server as its error reply, so
they name the peer, the file, columns, lines and counts, never a cell value
or an ID.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import unicodedata
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from logging import WARNING
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.common.logger import log

__all__ = ["PeerDataError", "PeerTable", "Preprocessor", "check_usable", "read_table"]

CSV_DELIMITERS = ",;\t|"
# A text column is numeric when at least this share of its values read as
# numbers; the others are then taken for typos and refused.
NUMERIC_SHARE = 0.9
# The csv sniffer can take time quadratic in its sample: keep it small.
_SNIFF_CHARS = 8 * 1024
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")
_EXACT_INTEGER = 2**53  # floats beyond this are not exact whole numbers
# A held-out value this many training standard deviations out is an error in
# the data; clipping keeps the float32 matrix finite.
_Z_LIMIT = 1e6


class PeerDataError(ValueError):
    """Input data of one peer is unusable; the message names the peer and why."""


@dataclass(frozen=True)
class _Source:
    """Where a table comes from: prefixes messages and names rows in them."""

    peer: str
    path: Path | None = None
    by_line: bool = False  # rows are the records of a CSV file: name file lines

    @classmethod
    def of(cls, peer: str, path: str | Path | None, rows_are_records: bool) -> _Source:
        path = Path(path).expanduser() if path else None
        return cls(peer, path, rows_are_records and bool(path)
                   and path.suffix.lower() == ".csv")

    def error(self, text: str) -> PeerDataError:
        where = f" data file '{self.path}':" if self.path else ""
        return PeerDataError(f"{self.peer}:{where} {text}")

    def file_error(self, text: str) -> PeerDataError:
        return PeerDataError(f"{self.peer}: data file '{self.path}' {text}")

    def warn(self, text: str) -> None:
        log(WARNING, "%s", self.error(text))

    def names(self, positions: np.ndarray) -> list[str]:
        """'line 5' (CSV record start) or 'row 4' (1-based) for frame positions."""
        positions = [int(p) for p in positions]
        lines: list[int] = []
        if self.by_line and positions and self.path:
            text = _csv_text(self.path.read_bytes(), errors="replace")
            records = islice(_csv_records(text, _sniff_delimiter(text)), 1,
                             max(positions) + 2)  # after the header
            lines = [start for start, _ in records]
        return [f"line {lines[p]}" if p < len(lines) else f"row {p + 1}"
                for p in positions]

    def rows(self, positions: np.ndarray, limit: int = 3) -> str:
        """Name the first ``limit`` of ``positions``; '...' if there are more."""
        more = ", ..." if len(positions) > limit else ""
        return ", ".join(self.names(positions[:limit])) + more


# ------------------------------------------------------------------- files
def read_table(path: str | Path, *, owner: str) -> pd.DataFrame:
    """Read a CSV or Parquet file, failing with a message that names ``owner``.

    CSV files must be UTF-8 (a byte-order mark is fine); the delimiter is
    sniffed among ``,`` ``;`` tab and ``|``. Every CSV cell is returned as
    text (empty cells and markers such as ``NA`` as missing):
    :class:`PeerTable` decides which columns hold numbers.

    Parameters
    ----------
    path : str | Path
        File to read; ``.csv``, ``.parquet`` or ``.pq``.
    owner : str
        Who reads it (a peer name or ``"server"``), used in error messages.
    """
    path = Path(path).expanduser()
    source = _Source(owner, path)
    if path.is_dir():
        raise source.file_error("is a directory, not a file")
    if not path.is_file():
        raise source.file_error("does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise source.file_error(f"has suffix '{suffix}'; expected .csv, .parquet or .pq")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise source.file_error(f"cannot be read ({type(err).__name__})") from err
    if not data:
        raise source.file_error("is empty (0 bytes)")
    return _read_csv(data, source) if suffix == ".csv" else _read_parquet(data, source)


def _read_parquet(data: bytes, source: _Source) -> pd.DataFrame:
    if not data.startswith(b"PAR1"):
        raise source.file_error("is not a Parquet file; if it holds CSV text, rename it "
                                "to .csv")
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    # pyarrow raises many types for a damaged file, and their texts may quote
    # its bytes: none of them may reach the server.
    except Exception as err:  # noqa: BLE001
        raise source.file_error(
            f"is not a readable Parquet file ({type(err).__name__})") from err
    # An ID saved as the pandas index comes back as the index: make it a column.
    return frame if frame.index.names == [None] else frame.reset_index(
        allow_duplicates=True)


def _read_csv(data: bytes, source: _Source) -> pd.DataFrame:
    if data.startswith(b"PAR1"):
        raise source.file_error("is a Parquet file, not CSV; rename it to .parquet")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise source.file_error(f"is not CSV text: line {line} holds a NUL byte "
                                "(binary or UTF-16?); save it as UTF-8 CSV")
    try:
        text = _csv_text(data)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise source.file_error(f"is not UTF-8 (line {line}); save it as UTF-8") from err
    delimiter = _sniff_delimiter(text)
    first_line, header = next(_csv_records(text, delimiter), (0, []))
    if not header:
        raise source.file_error("is empty (no header line)")
    if first_line > 1:
        # pandas would take the first line after the blank ones for the header:
        # if that line is data, the column names in later messages would be too.
        raise source.file_error(f"starts with {first_line - 1} blank line(s); the first "
                                "line must name the columns")
    _check_unique_names([_clean_name(name) for name in header], source)
    try:
        with warnings.catch_warnings():
            # pandas only warns when a first data row is longer than the header.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(io.BytesIO(data), sep=delimiter, dtype=str,
                               encoding="utf-8-sig", index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning) as err:
        raise _parse_error(text, delimiter, len(header), str(err), source) from err


def _csv_text(data: bytes, errors: str = "strict") -> str:
    return data.decode("utf-8", errors=errors).removeprefix("\ufeff")


def _sniff_delimiter(text: str) -> str:
    """Return the delimiter of a CSV text among CSV_DELIMITERS; a comma when unsure."""
    sample = text[:_SNIFF_CHARS]
    if len(text) > len(sample):
        sample = sample.rsplit("\n", 1)[0]  # whole lines only
    header = next((line for line in _lines(text) if line.strip()), "")
    try:
        found = csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        found = ""
    if found and found in header:
        return found
    # The sniffer guesses from the data lines; the header decides when they mislead.
    counts = {d: header.count(d) for d in CSV_DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _csv_records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each record of a CSV text, header first.

    Blank lines are skipped, as pandas skips them. Used for the header and,
    on the error path, for line numbers.
    """
    reader = csv.reader(_lines(text), delimiter=delimiter)
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if len(record) > 1 or "".join(record).strip():
                yield start, record
    except csv.Error:
        return  # an unreadable record ends the walk; later rows are named by position


def _lines(text: str) -> Iterator[str]:
    """Yield the lines of ``text`` with their ends, lazily (no copy of a big file)."""
    return (match.group() for match in _LINE.finditer(text))


def _parse_error(
    text: str, delimiter: str, width: int, message: str, source: _Source
) -> PeerDataError:
    """Say which line broke the CSV parse, from the csv module's own walk."""
    last = 0
    for line, fields in islice(_csv_records(text, delimiter), 1, None):
        if len(fields) > width:
            return source.error(f"line {line} has {len(fields)} fields but the header "
                                f"has {width}; check the delimiter and quote fields "
                                "that contain it")
        last = line
    if "EOF inside string" in message and last:  # the last record runs to the end
        return source.error(f"the quote opened on line {last} is never closed")
    return source.error("cannot be parsed as CSV; check the delimiter and the quoting")


# ------------------------------------------------------------------- table
class PeerTable:
    """The rows one peer holds, keyed by a unique entity ID.

    IDs are normalized so that peers holding the same entity agree on its ID
    whatever their file format: a CSV ID column is read as text (``"007"``
    stays ``"007"``, a different ID from ``"7"``); text IDs are stripped of
    surrounding whitespace and Unicode NFC-normalized; integer IDs (such as
    Parquet int64) become their decimal text; floats that are whole numbers
    (pandas turns an integer column with gaps into floats) become decimal
    text without ``".0"``. Other floats and booleans are refused, and empty
    IDs count as missing. Missing and duplicate IDs are refused.

    Column names are stripped and NFC-normalized too. A text column whose
    values all read as numbers is numeric; one where at least
    ``NUMERIC_SHARE`` (90 %) do is refused, naming the other values' lines.
    Infinite numbers, columns without any value and tables with more columns
    than rows (a transposed file) are refused; columns with a single value
    are dropped with a warning.

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
    source : str | Path | None (default: None)
        The file ``frame`` was read from, named in messages; for a CSV file
        rows are named by their line in it, otherwise as "row N" (1-based).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        id_column: str,
        peer: str,
        label_column: str = "",
        require_features: bool = True,
        source: str | Path | None = None,
    ) -> None:
        self.peer = peer
        self.source = Path(source).expanduser() if source else None
        src = _Source.of(peer, source, rows_are_records=True)
        frame = _clean_names(frame, src)
        id_column, label_column = _clean_name(id_column), _clean_name(label_column)
        if len(frame) == 0:
            raise src.error("the table has no rows")
        if frame.shape[1] > len(frame):
            raise src.error(
                f"the table has {len(frame)} rows but {frame.shape[1]} columns; is it "
                "transposed? Each row must be one entity, each column one feature"
            )
        _require_column(frame.columns, id_column, "ID column", src)
        if label_column:
            _require_column(frame.columns, label_column, "label column", src)
            if label_column == id_column:
                raise src.error(f"'{id_column}' cannot be both the ID and the label column")
        self.ids: np.ndarray = _checked_ids(frame[id_column], id_column, src)
        values = _parse_numbers(frame.drop(columns=[id_column]), src)
        _check_finite(values, src)
        self.labels: pd.Series | None = values.pop(label_column) if label_column else None
        check_usable(values, peer, source=source)
        constant = _single_valued(values)
        for column in constant:
            src.warn(f"column '{column}' has a single value; it is dropped")
        self.features: pd.DataFrame = values.drop(columns=constant)
        if require_features and self.features.shape[1] == 0:
            set_apart = f"'{id_column}'" + (f" and '{label_column}'" if label_column else "")
            dropped = f" (single-valued, dropped: {_preview(constant)})" if constant else ""
            raise src.error(f"no feature columns besides {set_apart}{dropped}")

    @classmethod
    def from_file(
        cls, path: str | Path, id_column: str, peer: str, label_column: str = ""
    ) -> PeerTable:
        """Load a peer table from a CSV or Parquet file."""
        return cls(read_table(path, owner=peer), id_column, peer, label_column,
                   source=path)

    def __len__(self) -> int:
        return len(self.ids)


def _clean_name(name: object) -> str:
    return unicodedata.normalize("NFC", str(name).strip())


def _clean_names(frame: pd.DataFrame, source: _Source) -> pd.DataFrame:
    names = [_clean_name(c) for c in frame.columns]
    _check_unique_names(names, source)
    return frame.set_axis(names, axis=1).reset_index(drop=True)


def _check_unique_names(names: list[str], source: _Source) -> None:
    counts = pd.Series(names, dtype=object).value_counts()
    repeated = list(counts.index[counts > 1])
    if repeated:
        # Names stay in the peer's log: in a file without a header line they are data.
        source.warn(f"column name(s) {_preview(repeated)} appear more than once")
        raise source.error(f"{len(repeated)} column name(s) appear more than once (after "
                           "trimming spaces; the peer's log names them); give each column "
                           "its own name")


def _require_column(columns: pd.Index, name: str, role: str, source: _Source) -> None:
    if name in columns:
        return
    names = [str(c) for c in columns]
    folded = {n.casefold(): n for n in reversed(names)}  # the first of equals wins
    close = difflib.get_close_matches(name.casefold(), list(folded), n=1)
    hint = f"; did you mean '{folded[close[0]]}'?" if close else ""
    # In a file without a header line the "names" are its first data row: they
    # and the hint stay in the peer's log, out of the message the server gets.
    source.warn(f"{role} '{name}' not found; columns are {_preview(names)}{hint}")
    numeric = pd.to_numeric(pd.Series(names, dtype=object), errors="coerce").notna().any()
    why = "; some are numbers: the first line must name the columns" if numeric else ""
    raise source.error(f"{role} '{name}' not found among the {len(names)} column names "
                       f"(the peer's log lists them){why}")


def _checked_ids(values: pd.Series, column: str, source: _Source) -> np.ndarray:
    ids, refused = _normalize_ids(values)
    if refused.any():
        bad = np.flatnonzero(refused)
        raise source.error(f"ID column '{column}' has {len(bad)} IDs that are neither "
                           f"text nor whole numbers ({source.rows(bad)}); use text or "
                           "integer IDs")
    missing = np.flatnonzero(ids.isna())
    if len(missing):
        raise source.error(f"ID column '{column}' has {len(missing)} missing IDs "
                           f"({source.rows(missing)}); give every row an ID")
    repeats = np.flatnonzero(ids.duplicated())
    if len(repeats):
        firsts = ids.drop_duplicates()
        first_of = pd.Series(firsts.index, index=firsts.to_numpy())
        shown = repeats[:3]
        names = source.names(np.r_[shown, first_of.loc[ids.iloc[shown]].to_numpy()])
        pairs = [f"{a} repeats {b}"
                 for a, b in zip(names[:len(shown)], names[len(shown):], strict=True)]
        more = ", ..." if len(repeats) > len(shown) else ""
        raise source.error(f"ID column '{column}' has {len(repeats)} duplicate IDs: "
                           f"{', '.join(pairs)}{more}")
    return ids.to_numpy(dtype=object)


def _normalize_ids(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """IDs as normalized text (NaN where missing) and a mask of refused IDs."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    text = pd.Series(np.nan, index=values.index, dtype=object)
    refused = pd.Series(False, index=values.index)
    present = values[values.notna()]
    kinds = _id_kinds(present)
    for kind in kinds.unique():  # at most four kinds: a loop over kinds, not rows
        part = present[kinds == kind]
        if kind == "text":
            text[part.index] = part.astype(str).str.strip().str.normalize("NFC")
        elif kind == "integer":
            text[part.index] = part.astype(str)
        elif kind == "float":
            numbers = part.astype(float)
            whole = (np.isfinite(numbers) & (numbers == np.round(numbers))
                     & (numbers.abs() <= _EXACT_INTEGER))
            text[part.index[whole]] = numbers[whole].astype(np.int64).astype(str)
            refused[part.index[~whole]] = True
        else:
            refused[part.index] = True
    return text.where(text != ""), refused


def _id_kinds(values: pd.Series) -> pd.Series:
    """'text', 'integer', 'float' or 'other' for each (present) ID."""
    if values.dtype == object:  # cells may mix Python types
        types = values.map(type)
        return types.map({t: _id_kind(t) for t in types.unique()})
    kind = "text" if pd.api.types.is_string_dtype(values.dtype) else _id_kind(
        values.dtype.type)
    return pd.Series(kind, index=values.index)


def _id_kind(kind: type) -> str:
    if issubclass(kind, str):
        return "text"
    if issubclass(kind, (bool, np.bool_)):
        return "other"
    if issubclass(kind, (int, np.integer)):
        return "integer"
    return "float" if issubclass(kind, (float, np.floating)) else "other"


def _parse_numbers(frame: pd.DataFrame, source: _Source) -> pd.DataFrame:
    """Make text columns numeric where their values are numbers (see PeerTable)."""
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_string_dtype(values.dtype):
            continue
        try:
            numbers = pd.to_numeric(values, errors="coerce").astype(float)
        except (TypeError, ValueError):  # cells that are not even text
            continue
        present = values.notna().to_numpy()
        bad = np.flatnonzero(present & numbers.isna().to_numpy())
        if len(bad) == 0:
            frame[column] = numbers
        elif len(bad) <= (1 - NUMERIC_SHARE) * present.sum():
            raise source.error(
                f"column '{column}' has {len(bad)} non-numeric values among "
                f"{present.sum() - len(bad)} numbers ({source.rows(bad)}); correct "
                "them or leave the cells empty"
            )
    return frame


def _check_finite(frame: pd.DataFrame, source: _Source) -> None:
    for column in frame.columns:
        if _is_number(frame[column]):
            infinite = np.flatnonzero(np.isinf(_as_float(frame[column])))
            if len(infinite):
                raise source.error(
                    f"column '{column}' has {len(infinite)} infinite values "
                    f"({source.rows(infinite)}); replace them with numbers or leave "
                    "the cells empty"
                )


def _single_valued(frame: pd.DataFrame) -> list[str]:
    """Columns with one value (a missing value counts as one in categories)."""
    return [c for c in frame.columns
            if (frame[c].nunique() if _is_number(frame[c])
                else _as_levels(frame[c]).nunique()) <= 1]


def check_usable(
    frame: pd.DataFrame, peer: str, where: str = "", source: str | Path | None = None
) -> None:
    """Raise :class:`PeerDataError` naming the columns of ``frame`` with no values."""
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise _Source.of(peer, source, rows_are_records=False).error(
            f"column(s) {_preview(empty)} have no usable values{where}; drop them or "
            "fill them in"
        )


# ----------------------------------------------------------- preprocessing
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
        _check_finite(frame, source)
        numeric = [c for c in frame.columns if _is_number(frame[c])]
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
            raise self._source().error(f"columns missing: {_preview(missing)}")
        numeric = frame[self.numeric_columns_]
        _check_finite(numeric, self._source())
        values = numeric.astype(float).fillna(self.medians_).to_numpy()
        with np.errstate(over="ignore"):  # a far-out value; clipped below
            scaled = (values - self.means_.to_numpy()) / self.stds_.to_numpy()
        blocks = [np.clip(scaled, -_Z_LIMIT, _Z_LIMIT).astype(np.float32)]
        for column in self.categorical_columns_:
            values = _as_levels(frame[column])
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
        counts = _as_levels(column).value_counts(normalize=True)
        frequent = sorted(counts[counts >= self.min_level_fraction].index)
        return frequent + [self.RARE]

    def _drop_uninformative(
        self, frame: pd.DataFrame, stds: pd.Series, levels: dict[str, list[str]],
        source: _Source,
    ) -> list[str]:
        """Warn about and return the columns the encoding would make constant."""
        reasons = {c: "is constant in the training rows" for c in stds.index[stds == 0]}
        for column, kept in levels.items():
            if len(kept) == 1:  # only "(rare)" is left
                reasons[column] = (
                    f"has no level in {100 * self.min_level_fraction:g}% of the "
                    "training rows: it looks like an identifier"
                )
            elif _as_levels(frame[column]).nunique() <= 1:
                reasons[column] = "is constant in the training rows"
        for column, reason in reasons.items():
            source.warn(f"column '{column}' {reason}; it is dropped")
        return list(reasons)

    def _source(self) -> _Source:
        return _Source.of(self.peer, self.source, rows_are_records=False)

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("Preprocessor is not fitted; call fit() first")


# ----------------------------------------------------------------- helpers
def _feature_names(numeric: list[str], levels: Mapping[str, list[str]]) -> list[str]:
    return list(numeric) + [f"{c}={level}" for c, kept in levels.items() for level in kept]


def _is_number(values: pd.Series) -> bool:
    dtype = values.dtype
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not pd.api.types.is_complex_dtype(dtype))


def _as_float(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=float, na_value=np.nan)


def _as_levels(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), "(missing)").astype(str)


def _preview(values: object, limit: int = 5) -> str:
    items = [str(v) for v in list(values)]  # type: ignore[call-overload]
    shown = ", ".join(repr(v) for v in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"
