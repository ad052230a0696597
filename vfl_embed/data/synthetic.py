"""Seeded synthetic vertical tables for scale benchmarks.

Every entity has three independent standard-normal latent factors per peer,
``(a_p, b_p, c_p)`` for peer ``p``. Peer ``p``'s columns are noisy views of
its own factors only, and the target needs the factors of several peers::

    signal = sum_p [ a_p + (b_p**2 - 1) / sqrt(2) + c_p * a_{(p+1) % P} ] / sqrt(3 P)

The signal has unit variance. A single peer can explain at most the share
``2 / (3 P)`` of it (its own additive terms): the cross-peer products
``c_p * a_{p+1}`` have mean zero given either factor alone, and the other
peers' terms are independent of its columns. All peers together can explain
all of it. The regression target is ``signal + noise * N(0, 1)``; the
classification target is 1 where that is positive, else 0.

Generation is vectorized NumPy. Every random stream has its own seed key,
so peers are generated independently and in any order: a peer's factors come
in blocks of ``BLOCK_SIZE`` entities from streams keyed by (seed, peer,
block), its row subset, column shapes and column noise from streams keyed by
(seed, peer); the target noise from streams keyed by (seed, block). Building
the labels walks the entities block by block, so all peers' factors are
never in memory at once.
"""

from __future__ import annotations

import argparse
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtri

__all__ = ["BLOCK_SIZE", "SyntheticVerticalTable", "main"]

ID_COLUMN = "id"
TARGET = "target"
TASKS = ("regression", "classification")
FILE_FORMATS = ("parquet", "csv")
FACTORS_PER_PEER = 3
# Entities per block of latent factors and target noise. Part of the
# definition of the data: changing it changes every table.
BLOCK_SIZE = 2**16
ID_DIGITS = 10
# Loadings of a column on the factors it does not mainly view.
_CROSS_LOADING = 0.25
_LEVEL_NAMES = "ABCDEF"
_MIN_LEVELS, _MAX_LEVELS = 3, 6
_LOGNORMAL_SHARE = 0.25
# Tags that keep the seed keys of different streams apart.
_FACTORS, _TARGET_NOISE, _ROWS, _COLUMNS, _NOISE = range(5)


@dataclass(frozen=True)
class SyntheticVerticalTable:
    """A seeded vertical table: ``peers`` peers hold columns of ``entities`` entities.

    The same arguments always give the same tables, byte for byte; see the
    module docstring for how the target depends on the columns of several
    peers. A peer's table does not depend on how many other peers there are
    (except for peer 0's target), and entity ``e0000000007`` has the same
    latent factors and target in tables of any size.

    Parameters
    ----------
    peers : int
        Number of peers the columns are split across, at least 1.
    entities : int
        Number of entities (rows of the joined table), at least 1.
    columns_per_peer : int (default: 20)
        Feature columns each peer holds. Columns cycle over the peer's three
        factors, so with fewer than three columns some factors go unseen.
    categorical_share : float (default: 0.25)
        Share of each peer's columns that are categorical (rounded), in
        ``[0, 1]``. A categorical column bins a noisy factor view into 3 to 6
        levels named ``"A"``, ``"B"``, ...; numeric columns are float32, a
        quarter of them log-normal, all with their own location and scale.
    coverage : float (default: 0.95)
        Share of the entities each peer holds, in ``(0, 1]``; each peer draws
        its own subset, so peers overlap on about ``coverage ** peers`` of
        the entities.
    task : str (default: "regression")
        ``"regression"`` (float32 target) or ``"classification"`` (int64
        target, 0 or 1, about balanced).
    noise : float (default: 0.5)
        Standard deviation of the Gaussian noise added to every factor view
        behind a column and to the unit-variance target signal; at 0.5 the
        best achievable regression R² is 0.8.
    seed : int (default: 42)
        Seed of every random stream, a non-negative integer.

    Examples
    --------
    >>> table = SyntheticVerticalTable(peers=3, entities=1000)
    >>> frame = table.peer_frame(0)  # "id", 20 feature columns and "target"
    >>> paths = table.write("data/synthetic")  # peer-0.parquet, peer-1.parquet, ...
    """

    peers: int
    entities: int
    columns_per_peer: int = 20
    categorical_share: float = 0.25
    coverage: float = 0.95
    task: str = "regression"
    noise: float = 0.5
    seed: int = 42

    def __post_init__(self) -> None:
        _check_int("peers", self.peers, 1)
        _check_int("entities", self.entities, 1, 10**ID_DIGITS)
        _check_int("columns_per_peer", self.columns_per_peer, 1)
        _check_int("seed", self.seed, 0)
        _check_real("categorical_share", self.categorical_share, 0, 1)
        _check_real("coverage", self.coverage, 0, 1, low_open=True)
        _check_real("noise", self.noise, 0, math.inf, high_open=True)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.rows_per_peer < 1:
            raise ValueError(
                f"coverage {self.coverage} of {self.entities} entities leaves each "
                "peer no rows; raise coverage or entities"
            )

    @property
    def rows_per_peer(self) -> int:
        """Number of rows (entities) each peer holds."""
        return round(self.coverage * self.entities)

    @property
    def categorical_columns(self) -> int:
        """Number of categorical columns per peer."""
        return round(self.categorical_share * self.columns_per_peer)

    def feature_columns(self, peer: int) -> list[str]:
        """Names of peer ``peer``'s feature columns, in table order.

        Numeric columns are ``p<peer>_num<j>``, categorical ones
        ``p<peer>_cat<j>``, so no two peers share a column name.
        """
        self._check_peer(peer)
        n_cat = self.categorical_columns
        n_num = self.columns_per_peer - n_cat
        return ([f"p{peer}_num{j:02d}" for j in range(n_num)]
                + [f"p{peer}_cat{j:02d}" for j in range(n_cat)])

    def peer_frame(self, peer: int) -> pd.DataFrame:
        """Return the table peer ``peer`` holds.

        Column ``"id"`` (text such as ``"e0000001234"``), then the peer's
        feature columns (see :meth:`feature_columns`), for a seeded random
        ``coverage`` share of the entities in shuffled order. Peer 0 also
        holds the label column ``"target"``.

        Parameters
        ----------
        peer : int
            Index of the peer, ``0 <= peer < peers``.
        """
        self._check_peer(peer)
        rows = np.random.default_rng([self.seed, _ROWS, peer]).permutation(
            self.entities)[:self.rows_per_peer]
        factors = self._factors(peer, 0, self.entities)[rows].astype(np.float32)
        data: dict[str, object] = {ID_COLUMN: _format_ids(rows)}
        data.update(zip(self.feature_columns(peer), self._columns(peer, factors),
                        strict=True))
        if peer == 0:
            data[TARGET] = self._targets()[rows]
        return pd.DataFrame(data)

    def labels(self) -> pd.DataFrame:
        """Return columns ``"id"`` and ``"target"`` for all entities, in ID order."""
        ids = _format_ids(np.arange(self.entities))
        return pd.DataFrame({ID_COLUMN: ids, TARGET: self._targets()})

    def write(self, directory: str | Path, file_format: str = "parquet") -> list[Path]:
        """Write ``<directory>/peer-<i>.<file_format>`` for every peer.

        Peers are generated and written one at a time, so only one peer's
        table is in memory at once.

        Parameters
        ----------
        directory : str | Path
            Folder of the files; created if missing.
        file_format : str (default: "parquet")
            ``"parquet"`` (keeps the float32 and category dtypes) or ``"csv"``.

        Returns
        -------
        list of Path
            The files written, peer 0 (which holds the label) first.
        """
        if file_format not in FILE_FORMATS:
            raise ValueError(
                f"file_format must be one of {list(FILE_FORMATS)}, got {file_format!r}")
        folder = Path(directory).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for peer in range(self.peers):
            path = folder / f"peer-{peer}.{file_format}"
            frame = self.peer_frame(peer)
            if file_format == "parquet":
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
            paths.append(path)
            del frame
        return paths

    # ------------------------------------------------------------- internals
    def _check_peer(self, peer: int) -> None:
        if (isinstance(peer, bool) or not isinstance(peer, numbers.Integral)
                or not 0 <= peer < self.peers):
            raise ValueError(
                f"peer must be an integer in [0, {self.peers - 1}], got {peer!r}")

    def _factors(self, peer: int, start: int, stop: int) -> np.ndarray:
        """Return peer ``peer``'s factors of entities ``start`` (block-aligned) to ``stop``."""
        blocks = []
        for block in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
            size = min(BLOCK_SIZE, self.entities - block * BLOCK_SIZE)
            rng = np.random.default_rng([self.seed, _FACTORS, peer, block])
            blocks.append(rng.standard_normal((size, FACTORS_PER_PEER)))
        return np.concatenate(blocks)[:stop - start]

    def _targets(self) -> np.ndarray:
        """Compute the target of every entity, one block of entities at a time."""
        dtype = np.float32 if self.task == "regression" else np.int64
        targets = np.empty(self.entities, dtype=dtype)
        for start in range(0, self.entities, BLOCK_SIZE):
            stop = min(start + BLOCK_SIZE, self.entities)
            signal = np.zeros(stop - start)
            first = previous = self._factors(0, start, stop)
            for peer in range(self.peers):
                a, b, _ = previous.T
                signal += a + (b**2 - 1) / math.sqrt(2)
                following = (self._factors(peer + 1, start, stop)
                             if peer + 1 < self.peers else first)
                signal += previous[:, 2] * following[:, 0]
                previous = following
            signal /= math.sqrt(FACTORS_PER_PEER * self.peers)
            rng = np.random.default_rng([self.seed, _TARGET_NOISE, start // BLOCK_SIZE])
            signal += self.noise * rng.standard_normal(stop - start)
            targets[start:stop] = signal if self.task == "regression" else signal > 0
        return targets

    def _columns(self, peer: int, factors: np.ndarray) -> list[np.ndarray | pd.Categorical]:
        """Build peer ``peer``'s feature columns from its factors on its rows (float32)."""
        n_cat = self.categorical_columns
        width = self.columns_per_peer
        shape_rng = np.random.default_rng([self.seed, _COLUMNS, peer])
        # Column j mainly views factor j % 3 (with a random sign), a little the others.
        loadings = _CROSS_LOADING * shape_rng.standard_normal((FACTORS_PER_PEER, width))
        main = np.arange(width) % FACTORS_PER_PEER
        loadings[main, np.arange(width)] = shape_rng.choice([-1.0, 1.0], size=width)
        spread = np.sqrt((loadings**2).sum(axis=0) + self.noise**2)
        lognormal = shape_rng.random(width) < _LOGNORMAL_SHARE
        location = shape_rng.uniform(-5.0, 5.0, width)
        scale = 10.0 ** shape_rng.uniform(-1.0, 2.0, width)
        levels = shape_rng.integers(_MIN_LEVELS, _MAX_LEVELS + 1, width)
        noise_rng = np.random.default_rng([self.seed, _NOISE, peer])
        loadings = loadings.astype(np.float32)
        columns: list[np.ndarray | pd.Categorical] = []
        for j in range(width):  # a loop over columns; each is one vectorized pass
            view = factors @ loadings[:, j]
            view += np.float32(self.noise) * noise_rng.standard_normal(
                len(factors), dtype=np.float32)
            view /= np.float32(spread[j])  # unit variance
            if j >= width - n_cat:
                # Equal-probability bins of the unit-variance view.
                cuts = ndtri(np.arange(1, levels[j]) / levels[j]).astype(np.float32)
                codes = np.searchsorted(cuts, view).astype(np.int8)
                columns.append(pd.Categorical.from_codes(
                    codes, categories=list(_LEVEL_NAMES[:levels[j]])))
            else:
                if lognormal[j]:
                    view = np.exp(view, out=view)
                view *= np.float32(scale[j])
                view += np.float32(location[j])
                columns.append(view)
        return columns


def _format_ids(index: np.ndarray) -> np.ndarray:
    """Entity IDs ``e`` + zero-padded index, e.g. 1234 -> ``"e0000001234"``."""
    return np.strings.add("e", np.strings.zfill(index.astype(f"U{ID_DIGITS}"), ID_DIGITS))


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < low or (high is not None and value > high)):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")


def _check_real(
    name: str, value: object, low: float, high: float, *, low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and (
        (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high))  # False for NaN
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m vfl_embed.data.synthetic --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m vfl_embed.data.synthetic",
        description="Write a seeded synthetic vertical table as one file per peer "
                    "(<out>/peer-<i>.parquet; peer 0 holds the label column 'target').",
    )
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=20, help="columns per peer")
    parser.add_argument("--categorical-share", type=float, default=0.25)
    parser.add_argument("--coverage", type=float, default=0.95)
    parser.add_argument("--task", choices=TASKS, default="regression")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", choices=FILE_FORMATS, default="parquet")
    parser.add_argument("--out", default="data/synthetic")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        table = SyntheticVerticalTable(
            args.peers, args.entities, args.columns, args.categorical_share,
            args.coverage, args.task, args.noise, args.seed)
        paths = table.write(args.out, args.format)
    except ValueError as err:
        parser.error(str(err))
    for path in paths:
        print(path)
    print(f"wrote {table.peers} peers x {table.rows_per_peer} rows x "
          f"{table.columns_per_peer} columns in {time.perf_counter() - start:.1f} s; "
          f"label column '{TARGET}' is in {paths[0]}")


if __name__ == "__main__":
    main()
