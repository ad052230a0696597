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
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from logging import WARNING
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.common.logger import log

from ..errors import PeerDataError

__all__ = ["DataSource", "PeerTable", "as_levels", "check_finite", "check_usable",
           "is_number", "preview", "read_table"]

CSV_DELIMITERS = ",;\t|"
# A text column is numeric when at least this share of its values read as
# numbers; the others are then taken for typos and refused.
NUMERIC_SHARE = 0.9
# The csv sniffer can take time quadratic in its sample: keep it small.
_SNIFF_CHARS = 8 * 1024
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")
_EXACT_INTEGER = 2**53  # floats beyond this are not exact whole numbers


@dataclass(frozen=True)
class DataSource:
    """Where a table comes from: prefixes error messages and names rows in them."""

    peer: str
    path: Path | None = None
    by_line: bool = False  # rows are the records of a CSV file: name file lines

    @classmethod
    def of(cls, peer: str, path: str | Path | None, rows_are_records: bool) -> DataSource:
        """Describe ``peer``'s table from ``path``; name CSV records by file line."""
        path = Path(path).expanduser() if path else None
        return cls(peer, path, rows_are_records and bool(path)
                   and path.suffix.lower() == ".csv")

    def error(self, text: str) -> PeerDataError:
        """Return the error ``'<peer>: data file '<path>': <text>'``."""
        where = f" data file '{self.path}':" if self.path else ""
        return PeerDataError(f"{self.peer}:{where} {text}")

    def file_error(self, text: str) -> PeerDataError:
        """Return an error about the file itself (``... data file '<path>' <text>``)."""
        return PeerDataError(f"{self.peer}: data file '{self.path}' {text}")

    def warn(self, text: str) -> None:
        """Log :meth:`error`'s line as a warning; the run goes on."""
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
    source = DataSource(owner, path)
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


def _read_parquet(data: bytes, source: DataSource) -> pd.DataFrame:
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


def _read_csv(data: bytes, source: DataSource) -> pd.DataFrame:
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
    text: str, delimiter: str, width: int, message: str, source: DataSource
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
        src = DataSource.of(peer, source, rows_are_records=True)
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
        check_finite(values, src)
        self.labels: pd.Series | None = values.pop(label_column) if label_column else None
        check_usable(values, peer, source=source)
        constant = _single_valued(values)
        for column in constant:
            src.warn(f"column '{column}' has a single value; it is dropped")
        self.features: pd.DataFrame = values.drop(columns=constant)
        if require_features and self.features.shape[1] == 0:
            set_apart = f"'{id_column}'" + (f" and '{label_column}'" if label_column else "")
            dropped = f" (single-valued, dropped: {preview(constant)})" if constant else ""
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


def _clean_names(frame: pd.DataFrame, source: DataSource) -> pd.DataFrame:
    names = [_clean_name(c) for c in frame.columns]
    _check_unique_names(names, source)
    return frame.set_axis(names, axis=1).reset_index(drop=True)


def _check_unique_names(names: list[str], source: DataSource) -> None:
    counts = pd.Series(names, dtype=object).value_counts()
    repeated = list(counts.index[counts > 1])
    if repeated:
        # Names stay in the peer's log: in a file without a header line they are data.
        source.warn(f"column name(s) {preview(repeated)} appear more than once")
        raise source.error(f"{len(repeated)} column name(s) appear more than once (after "
                           "trimming spaces; the peer's log names them); give each column "
                           "its own name")


def _require_column(columns: pd.Index, name: str, role: str, source: DataSource) -> None:
    if name in columns:
        return
    names = [str(c) for c in columns]
    folded = {n.casefold(): n for n in reversed(names)}  # the first of equals wins
    close = difflib.get_close_matches(name.casefold(), list(folded), n=1)
    hint = f"; did you mean '{folded[close[0]]}'?" if close else ""
    # In a file without a header line the "names" are its first data row: they
    # and the hint stay in the peer's log, out of the message the server gets.
    source.warn(f"{role} '{name}' not found; columns are {preview(names)}{hint}")
    numeric = pd.to_numeric(pd.Series(names, dtype=object), errors="coerce").notna().any()
    why = "; some are numbers: the first line must name the columns" if numeric else ""
    raise source.error(f"{role} '{name}' not found among the {len(names)} column names "
                       f"(the peer's log lists them){why}")


def _checked_ids(values: pd.Series, column: str, source: DataSource) -> np.ndarray:
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


def _parse_numbers(frame: pd.DataFrame, source: DataSource) -> pd.DataFrame:
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


def check_finite(frame: pd.DataFrame, source: DataSource) -> None:
    """Raise :class:`PeerDataError` naming a numeric column with infinite values."""
    for column in frame.columns:
        if is_number(frame[column]):
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
            if (frame[c].nunique() if is_number(frame[c])
                else as_levels(frame[c]).nunique()) <= 1]


def check_usable(
    frame: pd.DataFrame, peer: str, where: str = "", source: str | Path | None = None
) -> None:
    """Raise :class:`PeerDataError` naming the columns of ``frame`` with no values."""
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if empty:
        raise DataSource.of(peer, source, rows_are_records=False).error(
            f"column(s) {preview(empty)} have no usable values{where}; drop them or "
            "fill them in"
        )


# ----------------------------------------------------------------- helpers
def is_number(values: pd.Series) -> bool:
    """Tell whether a column holds real numbers (not booleans or complex numbers)."""
    dtype = values.dtype
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not pd.api.types.is_complex_dtype(dtype))


def _as_float(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=float, na_value=np.nan)


def as_levels(column: pd.Series) -> pd.Series:
    """Return a categorical column as text levels, missing values as ``"(missing)"``."""
    return column.astype(object).where(column.notna(), "(missing)").astype(str)


def preview(values: object, limit: int = 5) -> str:
    """Show the first ``limit`` items (column names, not data) as ``['a', 'b', ...]``."""
    items = [str(v) for v in list(values)]  # type: ignore[call-overload]
    shown = ", ".join(repr(v) for v in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"
