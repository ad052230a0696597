"""Tests of vfl_embed.wire.alignment: keyed pseudonyms and the server's intersection."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest

from vfl_embed.wire.alignment import PSEUDONYM_BYTES, KeyedHashAlignment, intersect

SECRET = "shared-by-the-peers"


@pytest.fixture
def alignment() -> KeyedHashAlignment:
    return KeyedHashAlignment(SECRET)


@pytest.fixture
def three_peers(
    alignment: KeyedHashAlignment,
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Three peers with overlapping, differently ordered ID subsets of 0..1499."""
    rng = np.random.default_rng(1)
    subsets = {
        "alice": rng.permutation(1000),  # 0..999
        "bob": rng.permutation(np.arange(400, 1500)),  # 400..1499
        "carol": rng.choice(1500, size=900, replace=False),
    }
    peers = {}
    for name, numbers in subsets.items():
        ids = [f"id-{k}" for k in numbers]
        peers[name] = (ids, alignment.pseudonymize(ids))
    return peers


def _rows(pseudonyms: np.ndarray) -> list[bytes]:
    return [bytes(row) for row in pseudonyms]


# ---------------------------------------------------------------- pseudonyms
def test_pseudonyms_are_hmac_sha256(alignment: KeyedHashAlignment) -> None:
    pseudonyms = alignment.pseudonymize(["a", "b", "c"])
    assert pseudonyms.shape == (3, PSEUDONYM_BYTES) == (3, 32)
    assert pseudonyms.dtype == np.uint8
    expected = hmac.new(SECRET.encode(), b"b", hashlib.sha256).digest()
    assert bytes(pseudonyms[1]) == expected


def test_pseudonyms_are_deterministic(alignment: KeyedHashAlignment) -> None:
    ids = [f"id-{k}" for k in range(50)]
    np.testing.assert_array_equal(
        alignment.pseudonymize(ids), KeyedHashAlignment(SECRET).pseudonymize(ids)
    )


def test_bytes_and_str_secrets_agree() -> None:
    ids = ["x", "y"]
    np.testing.assert_array_equal(
        KeyedHashAlignment(SECRET).pseudonymize(ids),
        KeyedHashAlignment(SECRET.encode()).pseudonymize(ids),
    )


def test_pseudonyms_depend_on_the_secret(alignment: KeyedHashAlignment) -> None:
    ids = [f"id-{k}" for k in range(20)]
    other = KeyedHashAlignment(SECRET + "!").pseudonymize(ids)
    mine = alignment.pseudonymize(ids)
    assert not (mine == other).all(axis=1).any()


def test_distinct_ids_give_distinct_pseudonyms(alignment: KeyedHashAlignment) -> None:
    pseudonyms = alignment.pseudonymize([f"id-{k}" for k in range(2000)])
    assert len(set(_rows(pseudonyms))) == 2000


def test_ids_are_hashed_as_strings(alignment: KeyedHashAlignment) -> None:
    np.testing.assert_array_equal(
        alignment.pseudonymize([1, 2]), alignment.pseudonymize(["1", "2"])
    )


def test_no_ids_give_an_empty_matrix(alignment: KeyedHashAlignment) -> None:
    assert alignment.pseudonymize([]).shape == (0, 32)


@pytest.mark.parametrize("secret", ["", b"", "x", "fifteen-bytes!!", b"\x00" * 15])
def test_guessable_secrets_are_refused(secret: str | bytes) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        KeyedHashAlignment(secret)


def test_a_sixteen_byte_secret_is_accepted() -> None:
    assert KeyedHashAlignment(b"\x00" * 16).pseudonymize(["a"]).shape == (1, 32)


# ----------------------------------------------------------------- intersect
def test_intersection_of_three_peers(three_peers) -> None:
    plan = intersect({n: p for n, (_, p) in three_peers.items()}, 0.2, seed=3)
    common = set.intersection(*(set(ids) for ids, _ in three_peers.values()))
    assert len(plan) == len(common)
    assert 300 < len(plan) < 600  # 600 IDs in alice & bob, 60 % of them in carol
    assert plan.pseudonyms.shape == (len(common), 32)
    assert plan.pseudonyms.dtype == np.uint8
    expected = KeyedHashAlignment(SECRET).pseudonymize(sorted(common))
    assert set(_rows(plan.pseudonyms)) == set(_rows(expected))


def test_positions_map_each_peer_to_the_common_order(three_peers) -> None:
    plan = intersect({n: p for n, (_, p) in three_peers.items()}, 0.2, seed=3)
    assert set(plan.positions) == {"alice", "bob", "carol"}
    aligned_ids = None
    for name, (ids, sent) in three_peers.items():
        positions = plan.positions[name]
        assert positions.dtype == np.int64
        assert positions.shape == (len(plan),)
        np.testing.assert_array_equal(sent[positions], plan.pseudonyms)
        # Every peer's positions name the same entity at each index.
        peer_ids = [ids[k] for k in positions]
        aligned_ids = aligned_ids or peer_ids
        assert peer_ids == aligned_ids


def test_server_order_is_sorted_and_ignores_row_order(three_peers) -> None:
    sent = {n: p for n, (_, p) in three_peers.items()}
    plan = intersect(sent, 0.2, seed=3)
    assert _rows(plan.pseudonyms) == sorted(_rows(plan.pseudonyms))
    shuffled = dict(sent)
    shuffled["alice"] = sent["alice"][np.random.default_rng(9).permutation(1000)]
    again = intersect(shuffled, 0.2, seed=3)
    np.testing.assert_array_equal(again.pseudonyms, plan.pseudonyms)
    np.testing.assert_array_equal(again.is_test, plan.is_test)
    np.testing.assert_array_equal(again.positions["bob"], plan.positions["bob"])


def test_disjoint_peers_align_nothing(alignment: KeyedHashAlignment) -> None:
    plan = intersect({"a": alignment.pseudonymize(["1", "2"]),
                      "b": alignment.pseudonymize(["3"])}, 0.5, seed=0)
    assert len(plan) == 0
    assert plan.pseudonyms.shape == (0, 32)
    assert plan.positions["a"].shape == (0,)


def test_single_peer_aligns_all_its_rows(alignment: KeyedHashAlignment) -> None:
    sent = alignment.pseudonymize([f"id-{k}" for k in range(30)])
    plan = intersect({"solo": sent}, 0.3, seed=0)
    assert len(plan) == 30
    np.testing.assert_array_equal(sent[plan.positions["solo"]], plan.pseudonyms)


def test_split_is_deterministic_for_a_seed(three_peers) -> None:
    sent = {n: p for n, (_, p) in three_peers.items()}
    first = intersect(sent, 0.25, seed=11)
    again = intersect(sent, 0.25, seed=11)
    other = intersect(sent, 0.25, seed=12)
    assert first.is_test.dtype == bool
    np.testing.assert_array_equal(first.is_test, again.is_test)
    assert (first.is_test != other.is_test).any()


def test_membership_does_not_depend_on_other_entities(
    alignment: KeyedHashAlignment,
) -> None:
    ids = [f"id-{k}" for k in range(2000)]
    everyone = alignment.pseudonymize(ids)
    full = intersect({"a": everyone, "b": everyone}, 0.3, seed=5)
    some = intersect({"a": everyone, "b": everyone[::3]}, 0.3, seed=5)
    split = dict(zip(_rows(full.pseudonyms), full.is_test, strict=True))
    assert len(some) == 667
    for row, held_out in zip(_rows(some.pseudonyms), some.is_test, strict=True):
        assert split[row] == held_out


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_test_share_is_near_the_test_fraction(
    alignment: KeyedHashAlignment, fraction: float
) -> None:
    sent = alignment.pseudonymize([f"id-{k}" for k in range(20_000)])
    plan = intersect({"a": sent}, fraction, seed=42)
    # Binomial standard deviation is at most 0.0036 here; allow ~4 of them.
    assert plan.is_test.mean() == pytest.approx(fraction, abs=0.015)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_invalid_test_fraction_raises(
    alignment: KeyedHashAlignment, fraction: float
) -> None:
    with pytest.raises(ValueError, match="test_fraction must be in"):
        intersect({"a": alignment.pseudonymize(["1"])}, fraction, seed=0)


def test_no_peers_raises() -> None:
    with pytest.raises(ValueError, match="no peer sent pseudonyms"):
        intersect({}, 0.2, seed=0)
