"""Property-based tests of vfl_embed.wire.alignment: random peer tables, any overlap.

The profile loaded in conftest.py sets the number of examples (``VFL_FUZZ=long``
for a long run).
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vfl_embed.wire.alignment import PSEUDONYM_BYTES, KeyedHashAlignment, intersect

MAX_PEERS = 6

# IDs as they come out of an ID column: any text (lone surrogates included, as
# decoding with errors="surrogateescape" leaves them), text without whitespace,
# and integers rendered as text.
ids = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(exclude_categories=("Z", "Cc")), min_size=1, max_size=12),
    st.integers().map(str),
)
secrets = st.one_of(st.text(min_size=16, max_size=40), st.binary(min_size=16, max_size=40))
fractions = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True)
seeds = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def peer_tables(draw, min_peers: int = 1) -> dict[str, list[str]]:
    """Per peer name, its IDs in row order.

    Each ID of a random universe is held by every peer, by a few or by one, so
    the intersection is sometimes large, sometimes small and sometimes empty.
    """
    n_peers = draw(st.integers(min_value=min_peers, max_value=MAX_PEERS))
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=n_peers,
                          max_size=n_peers, unique=True))
    universe = draw(st.lists(ids, unique=True, max_size=40))
    everyone = frozenset(range(n_peers))
    holders = st.one_of(
        st.just(everyone),
        st.frozensets(st.integers(0, n_peers - 1), min_size=1),
        st.integers(0, n_peers - 1).map(lambda k: frozenset({k})),
    )
    held = [draw(holders) for _ in universe]
    return {
        name: draw(st.permutations([i for i, h in zip(universe, held, strict=True)
                                    if k in h]))
        for k, name in enumerate(names)
    }


def _pseudonymize(secret, tables: dict[str, list[str]]) -> dict[str, np.ndarray]:
    alignment = KeyedHashAlignment(secret)
    return {name: alignment.pseudonymize(rows) for name, rows in tables.items()}


def _aligned_ids(tables: dict[str, list[str]], plan) -> dict[str, list[str]]:
    """Per peer, its IDs at the positions the plan gives it."""
    return {name: [rows[k] for k in plan.positions[name]]
            for name, rows in tables.items()}


def _rows(pseudonyms: np.ndarray) -> list[bytes]:
    return [bytes(row) for row in pseudonyms]


@given(tables=peer_tables(), secret=secrets, fraction=fractions, seed=seeds)
def test_plan_is_the_intersection_in_one_order(tables, secret, fraction, seed) -> None:
    sent = _pseudonymize(secret, tables)
    plan = intersect(sent, fraction, seed)
    common = set.intersection(*(set(rows) for rows in tables.values()))

    m = len(common)
    assert len(plan) == m
    assert plan.pseudonyms.shape == (m, PSEUDONYM_BYTES)
    assert plan.pseudonyms.dtype == np.uint8
    assert plan.is_test.shape == (m,)
    assert plan.is_test.dtype == bool
    assert set(plan.positions) == set(tables)
    expected = _rows(KeyedHashAlignment(secret).pseudonymize(sorted(common)))
    # Exactly the intersection, no duplicates, in the server's (sorted) order.
    assert _rows(plan.pseudonyms) == sorted(set(expected))

    aligned = _aligned_ids(tables, plan)
    order = next(iter(aligned.values()))
    assert set(order) == common
    for name, positions in plan.positions.items():
        assert positions.dtype == np.int64
        assert positions.shape == (m,)
        assert aligned[name] == order
        np.testing.assert_array_equal(sent[name][positions], plan.pseudonyms)


@given(tables=peer_tables(), secret=secrets, fraction=fractions, seed=seeds, data=st.data())
def test_plan_ignores_row_order_and_peer_order(tables, secret, fraction, seed,
                                               data) -> None:
    plan = intersect(_pseudonymize(secret, tables), fraction, seed)
    names = data.draw(st.permutations(list(tables)), label="peer order")
    shuffled = {name: data.draw(st.permutations(tables[name]), label=f"rows of {name}")
                for name in names}
    again = intersect(_pseudonymize(secret, shuffled), fraction, seed)

    np.testing.assert_array_equal(again.pseudonyms, plan.pseudonyms)
    np.testing.assert_array_equal(again.is_test, plan.is_test)
    first, second = _aligned_ids(tables, plan), _aligned_ids(shuffled, again)
    assert all(first[name] == second[name] for name in tables)


@given(tables=peer_tables(), others=peer_tables(), secret=secrets, fraction=fractions,
       seed=seeds)
def test_split_depends_on_the_entity_only(tables, others, secret, fraction,
                                          seed) -> None:
    # Two unrelated federations: an entity aligned in both is held out in both
    # or in neither.
    plans = [intersect(_pseudonymize(secret, t), fraction, seed) for t in (tables, others)]
    flags = [dict(zip(_rows(p.pseudonyms), p.is_test.tolist(), strict=True)) for p in plans]
    for row in flags[0].keys() & flags[1].keys():
        assert flags[0][row] == flags[1][row]
    # Alone, each entity gets the flag it had among the others.
    alone = {row: bool(intersect({"solo": np.frombuffer(row, np.uint8)[None]},
                                 fraction, seed).is_test[0])
             for row in flags[0]}
    assert alone == flags[0]


@given(tables=peer_tables(), secret=secrets, fractions=st.lists(fractions, min_size=2,
                                                                 max_size=2), seed=seeds)
def test_a_larger_fraction_holds_out_a_superset(tables, secret, fractions, seed) -> None:
    sent = _pseudonymize(secret, tables)
    low, high = (intersect(sent, f, seed).is_test for f in sorted(fractions))
    assert not (low & ~high).any()


@given(tables=peer_tables(min_peers=2), secret=secrets, fraction=fractions, seed=seeds)
def test_disjoint_peers_give_an_empty_plan(tables, secret, fraction, seed) -> None:
    # Tag each peer's IDs so that no two peers share one.
    disjoint = {name: [f"{k}/{i}" for i in rows]
                for k, (name, rows) in enumerate(tables.items())}
    plan = intersect(_pseudonymize(secret, disjoint), fraction, seed)
    assert len(plan) == 0
    assert plan.pseudonyms.shape == (0, PSEUDONYM_BYTES)
    assert plan.is_test.shape == (0,)
    assert all(p.shape == (0,) for p in plan.positions.values())


@given(rows=st.lists(ids, unique=True, max_size=40), secret=secrets, fraction=fractions,
       seed=seeds)
def test_a_single_peer_aligns_all_its_rows(rows, secret, fraction, seed) -> None:
    sent = KeyedHashAlignment(secret).pseudonymize(rows)
    plan = intersect({"solo": sent}, fraction, seed)
    assert len(plan) == len(rows)
    assert sorted(plan.positions["solo"].tolist()) == list(range(len(rows)))
    np.testing.assert_array_equal(sent[plan.positions["solo"]], plan.pseudonyms)


@given(rows=st.lists(ids, unique=True, min_size=1, max_size=20), fraction=fractions,
       seed=seeds, wide=st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1))
def test_seeds_are_64_bit_integers(rows, fraction, seed, wide) -> None:
    sent = KeyedHashAlignment("secret-of-the-peers").pseudonymize(rows)
    as_int = intersect({"solo": sent}, fraction, seed).is_test
    as_numpy = intersect({"solo": sent}, fraction, np.int64(seed)).is_test
    np.testing.assert_array_equal(as_numpy, as_int)
    with pytest.raises(ValueError, match="seed must fit in a signed 64-bit integer"):
        intersect({"solo": sent}, fraction, wide)
    with pytest.raises(TypeError, match="seed must be an integer"):
        intersect({"solo": sent}, fraction, float(seed))


def _strict_utf8(text: str | bytes) -> bytes | None:
    try:
        return text if isinstance(text, bytes) else text.encode()
    except UnicodeEncodeError:
        return None


@given(rows=st.lists(ids, unique=True, max_size=20), secret=secrets)
@example(rows=["\ud800", "\udcff", "\ud83d\ude00", "\U0001f600", "", "0", "-0"],
         secret="\udcff" * 6)
def test_distinct_ids_give_distinct_hmac_pseudonyms(rows, secret) -> None:
    sent = KeyedHashAlignment(secret).pseudonymize(rows)
    assert sent.shape == (len(rows), PSEUDONYM_BYTES)
    assert len(set(_rows(sent))) == len(rows)
    # Whatever encodes as UTF-8 is hashed as its UTF-8 bytes.
    key = _strict_utf8(secret)
    for i, row in zip(rows, sent, strict=True):
        message = _strict_utf8(i)
        if key is not None and message is not None:
            assert bytes(row) == hmac.new(key, message, hashlib.sha256).digest()
