"""Tests of vfl_embed.wire.psi (real libsodium through rbcl) and PlainAlignment."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rbcl

from vfl_embed.wire.alignment import KeyedHashAlignment, PlainAlignment, intersect
from vfl_embed.wire.psi import (
    PsiAlignment,
    PsiKey,
    blind,
    hash_to_group,
    reference_protocol,
    ring_sender,
)

IDS = [f"id-{k}" for k in range(40)]


@pytest.fixture(scope="module")
def keys() -> list[PsiKey]:
    return [PsiKey.derive(f"peer-{i}-secret", b"test") for i in range(3)]


@pytest.fixture(scope="module")
def three_peers() -> dict[str, list[str]]:
    """Three peers with overlapping, differently ordered ID subsets of 0..1499."""
    rng = np.random.default_rng(1)
    subsets = {
        "alice": rng.permutation(1000),  # 0..999
        "bob": rng.permutation(np.arange(400, 1500)),  # 400..1499
        "carol": rng.choice(1500, size=900, replace=False),
    }
    return {name: [f"id-{k}" for k in numbers] for name, numbers in subsets.items()}


def _rows(points: np.ndarray) -> list[bytes]:
    return [bytes(row) for row in points]


# ------------------------------------------------------------ hash to group
def test_hash_to_group_gives_valid_points() -> None:
    points = hash_to_group(IDS)
    assert points.shape == (40, 32)
    assert points.dtype == np.uint8
    assert all(rbcl.crypto_core_ristretto255_is_valid_point(row) for row in _rows(points))
    assert len(set(_rows(points))) == 40
    np.testing.assert_array_equal(points, hash_to_group(list(IDS)))


def test_hash_to_group_is_tagged_sha512_then_from_hash() -> None:
    digest = hashlib.sha512(b"vfl-embed/psi/v1/hash-to-group\x00" + b"id-7").digest()
    assert bytes(hash_to_group(["id-7"])[0]) == rbcl.crypto_core_ristretto255_from_hash(
        digest)


def test_ids_are_hashed_as_strings() -> None:
    np.testing.assert_array_equal(hash_to_group([1, 2]), hash_to_group(["1", "2"]))


def test_surrogate_ids_are_accepted(keys: list[PsiKey]) -> None:
    ids = ["caf\udce9", "caf\u00e9", "cafe"]  # a lone surrogate, as surrogateescape leaves
    points = hash_to_group(ids)
    assert len(set(_rows(points))) == 3
    assert len(set(_rows(PsiAlignment(keys[0]).pseudonymize(ids)))) == 3


def test_empty_lists_work(keys: list[PsiKey]) -> None:
    assert hash_to_group([]).shape == (0, 32)
    assert PsiAlignment(keys[0]).pseudonymize([]).shape == (0, 32)
    assert blind(np.zeros((0, 32), np.uint8), keys[0]).shape == (0, 32)
    result = reference_protocol([[], ["a"], ["a", "b"]], keys)
    assert [len(f) for f in result.final] == [0, 1, 2]
    assert len(intersect(dict(zip("abc", result.final, strict=True)), 0.5, seed=0)) == 0


# -------------------------------------------------------------------- keys
def test_derived_keys_are_deterministic() -> None:
    assert PsiKey.derive(b"secret", b"run") == PsiKey.derive(b"secret", b"run")
    assert PsiKey.derive("secret", "run") == PsiKey.derive(b"secret", b"run")
    first = PsiAlignment(PsiKey.derive(b"secret", b"run")).pseudonymize(IDS)
    np.testing.assert_array_equal(
        first, PsiAlignment(PsiKey.derive(b"secret", b"run")).pseudonymize(IDS))


def test_derivation_follows_the_documented_formula() -> None:
    digest = hashlib.sha512(b"vfl-embed/psi/v1/key\x00" + (6).to_bytes(8, "big")
                            + b"secret" + b"run").digest()
    scalar = rbcl.crypto_core_ristretto255_scalar_reduce(digest)
    assert PsiKey.derive(b"secret", b"run") == PsiKey(scalar)


def test_secret_and_context_are_separated() -> None:
    keys = [PsiKey.derive(b"secret", b"run"), PsiKey.derive(b"secret", b"run2"),
            PsiKey.derive(b"secret2", b"run"), PsiKey.derive(b"secretr", b"un"),
            PsiKey.random(), PsiKey.random()]
    assert all(a != b for i, a in enumerate(keys) for b in keys[i + 1:])


def test_key_is_not_shown() -> None:
    key = PsiKey.derive(b"secret", b"run")
    scalar = key._scalar
    for text in (repr(key), str(key)):
        assert text == "PsiKey(<secret>)"
        assert scalar.hex() not in text
    with pytest.raises(TypeError):
        hash(key)


@pytest.mark.parametrize("scalar", [bytes(32), b"\xff" * 32, b"\x01" * 31, "x" * 32])
def test_invalid_scalars_are_refused(scalar: object) -> None:
    with pytest.raises(ValueError, match="PSI key"):
        PsiKey(scalar)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        PsiKey.derive(b"", b"run")


# ---------------------------------------------------------------- blinding
def test_blinding_commutes(keys: list[PsiKey]) -> None:
    a, b, c = keys
    points = hash_to_group(IDS)
    ab = blind(blind(points, a), b)
    np.testing.assert_array_equal(ab, blind(blind(points, b), a))
    np.testing.assert_array_equal(blind(ab, c), blind(blind(blind(points, c), b), a))
    assert not (ab == points).all(axis=1).any()


def test_pseudonymize_is_blind_of_hash(keys: list[PsiKey]) -> None:
    alignment = PsiAlignment(keys[0])
    assert alignment.name == "psi"
    expected = blind(hash_to_group(IDS), keys[0])
    np.testing.assert_array_equal(alignment.pseudonymize(IDS), expected)
    np.testing.assert_array_equal(alignment.blind(hash_to_group(IDS)), expected)


def test_distinct_keys_give_unlinkable_values(keys: list[PsiKey]) -> None:
    ids = [f"id-{k}" for k in range(500)]
    lists = [PsiAlignment(k).pseudonymize(ids) for k in keys] + [hash_to_group(ids)]
    rows = [set(_rows(values)) for values in lists]
    for i, mine in enumerate(rows):
        assert len(mine) == 500
        for other in rows[i + 1:]:
            assert not mine & other


def test_one_and_two_workers_agree(keys: list[PsiKey]) -> None:
    ids = [f"id-{k}" for k in range(1100)]  # several batches of at least 256 rows
    points = hash_to_group(ids, workers=1)
    np.testing.assert_array_equal(points, hash_to_group(ids, workers=2))
    np.testing.assert_array_equal(blind(points, keys[0], workers=1),
                                  blind(points, keys[0], workers=2))
    np.testing.assert_array_equal(PsiAlignment(keys[1], workers=1).pseudonymize(ids),
                                  PsiAlignment(keys[1], workers=2).pseudonymize(ids))


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_invalid_workers_are_refused(keys: list[PsiKey], workers: object) -> None:
    with pytest.raises(ValueError, match="workers"):
        hash_to_group(IDS, workers=workers)


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, what", [
    (bytes(32), "is the identity element"),  # the identity encodes as zeros
    (b"\xff" * 32, "is not a canonical Ristretto255 encoding"),
    (b"\x01" + bytes(31), "is not a canonical Ristretto255 encoding"),  # a negative s
], ids=["identity", "all-ones", "negative"])
@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_points_are_refused_with_their_row(
    keys: list[PsiKey], bad: bytes, what: str, workers: int
) -> None:
    points = hash_to_group([f"id-{k}" for k in range(600)]).copy()
    bad_row = np.frombuffer(bad, dtype=np.uint8)
    points[300] = bad_row  # the second batch of 256 rows
    points[550] = bad_row  # a later one: the first bad row is named
    with pytest.raises(ValueError, match=f"row 300 of the points {what}"):
        blind(points, keys[0], workers=workers)
    with pytest.raises(ValueError, match="row 300"):
        PsiAlignment(keys[0], workers=workers).blind(points)


@pytest.mark.parametrize("points", [
    np.zeros((3, 32), dtype=np.int64),
    np.zeros((3, 31), dtype=np.uint8),
    np.zeros(32, dtype=np.uint8),
    np.zeros((2, 3, 32), dtype=np.uint8),
    [[0] * 32],
])
def test_wrong_shapes_and_types_are_refused(keys: list[PsiKey], points: object) -> None:
    with pytest.raises(ValueError, match=r"points must be an \(n, 32\) uint8 array"):
        blind(points, keys[0])


def test_strided_and_read_only_points_are_blinded(keys: list[PsiKey]) -> None:
    points = hash_to_group(IDS)  # read-only, from a bytes buffer
    wide = np.zeros((40, 64), dtype=np.uint8)
    wide[:, ::2] = points
    np.testing.assert_array_equal(blind(wide[:, ::2], keys[0]), blind(points, keys[0]))


# ------------------------------------------------------------------- ring
@pytest.mark.parametrize("n_peers", [1, 2, 3, 5])
def test_ring_sends_each_list_to_every_other_peer_once(n_peers: int) -> None:
    for receiver in range(n_peers):
        assert ring_sender(0, receiver, n_peers) == receiver
        owners = [ring_sender(r, receiver, n_peers) for r in range(1, n_peers)]
        assert sorted(owners) == sorted(set(range(n_peers)) - {receiver})
    for round_index in range(n_peers):  # every list goes to exactly one peer per round
        owners = {ring_sender(round_index, receiver, n_peers) for receiver in range(n_peers)}
        assert owners == set(range(n_peers))
    assert [ring_sender(r, 1, 3) for r in (1, 2)] == [0, 2]  # peer j's list goes to j+r


@pytest.mark.parametrize("args", [(3, 0, 3), (-1, 0, 3), (1, 3, 3), (0, 0, 0)])
def test_ring_sender_refuses_bad_indices(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        ring_sender(*args)


def test_protocol_aligns_like_keyed_hash(
    three_peers: dict[str, list[str]], keys: list[PsiKey]
) -> None:
    names = list(three_peers)
    lines: list[str] = []
    result = reference_protocol(list(three_peers.values()), keys, progress=lines.append)
    psi = intersect(dict(zip(names, result.final, strict=True)), 0.2, seed=3)
    keyed_hash = KeyedHashAlignment("shared-by-the-peers")
    keyed = intersect({n: keyed_hash.pseudonymize(ids) for n, ids in three_peers.items()},
                      0.2, seed=3)

    def entities(plan) -> set[tuple]:  # (ID, each peer's row) per aligned entity
        rows = zip(*(plan.positions[n] for n in names), strict=True)
        return {(three_peers["alice"][r[0]], *map(int, r)) for r in rows}

    common = set.intersection(*(set(ids) for ids in three_peers.values()))
    assert len(psi) == len(keyed) == len(common) > 300
    assert entities(psi) == entities(keyed)
    assert {e[0] for e in entities(psi)} == common
    for name in names:  # every peer's positions name the same ID at each index
        assert [three_peers[name][k] for k in psi.positions[name]] == [
            three_peers["alice"][k] for k in psi.positions["alice"]]
    assert 0 < psi.is_test.sum() < len(psi)

    total = sum(len(ids) for ids in three_peers.values())
    assert result.hashes == total
    assert result.blindings == 3 * total
    assert result.bytes_to_server == 3 * total * 32
    assert result.bytes_to_peers == 2 * total * 32
    assert len(result.seconds) == len(lines) == 3


def test_final_values_carry_every_key(keys: list[PsiKey]) -> None:
    ids = [["x", "y"], ["y", "z"], ["z", "y", "x"]]
    result = reference_protocol(ids, keys)
    expected = blind(blind(blind(hash_to_group(["x", "y", "z"]), keys[0]), keys[1]),
                     keys[2])
    by_id = dict(zip(["x", "y", "z"], _rows(expected), strict=True))
    for peer_ids, final in zip(ids, result.final, strict=True):
        assert _rows(final) == [by_id[i] for i in peer_ids]


def test_protocol_checks_its_inputs(keys: list[PsiKey]) -> None:
    with pytest.raises(ValueError, match="2 ID lists but 3 keys"):
        reference_protocol([["a"], ["b"]], keys)
    with pytest.raises(ValueError, match="at least one peer"):
        reference_protocol([], [])


# ------------------------------------------------------------------ plain
def test_plain_pseudonyms_are_sha256() -> None:
    plain = PlainAlignment()
    assert plain.name == "plain"
    values = plain.pseudonymize(["a", 7, "caf\udce9"])
    assert values.shape == (3, 32)
    assert values.dtype == np.uint8
    assert bytes(values[0]) == hashlib.sha256(b"a").digest()
    assert bytes(values[1]) == hashlib.sha256(b"7").digest()
    assert bytes(values[2]) == hashlib.sha256(b"caf\xed\xb3\xa9").digest()
    assert plain.pseudonymize([]).shape == (0, 32)


def test_plain_pseudonyms_align_like_keyed_hash(three_peers: dict[str, list[str]]) -> None:
    plain = intersect({n: PlainAlignment().pseudonymize(ids)
                       for n, ids in three_peers.items()}, 0.2, seed=3)
    common = set.intersection(*(set(ids) for ids in three_peers.values()))
    assert {three_peers["bob"][k] for k in plain.positions["bob"]} == common
