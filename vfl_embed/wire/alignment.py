"""Entity alignment by pseudonyms: plain, keyed-hash and private set intersection.

Peers never send raw IDs. Each peer maps its IDs to 32-byte pseudonyms, in
its row order; the server intersects the pseudonym sets of all peers, fixes
a seeded train/test split of the intersection and tells each peer which of
its own rows are in, in the server's order (as positions into the list that
peer sent). Three modes make the pseudonyms:

``keyed-hash`` (:class:`KeyedHashAlignment`)
    HMAC-SHA256 under a secret the peers share and the server does not
    hold. The server learns the number of rows of each peer and, per
    pseudonym, which peers hold it; it cannot invert a pseudonym without the
    secret. A peer colluding with the server can invert every pseudonym of
    an ID it can guess.
``psi`` (:class:`~vfl_embed.wire.psi.PsiAlignment`)
    Private set intersection: each peer hashes its IDs to Ristretto255 and
    blinds them with its own key, and the lists go round the ring of peers
    until every key is on them (:mod:`vfl_embed.wire.psi`). No shared secret; a
    server that follows the protocol learns what it learns under keyed-hash,
    and a peer colluding with it learns only which other peers hold the IDs
    that peer holds itself.
``plain`` (:class:`PlainAlignment`)
    Unkeyed SHA-256, for debugging only: anyone who can guess IDs inverts it.

In every mode a peer learns which of its own rows are in the intersection,
hence the intersection's size, and alignment as such reveals that an entity
is in every peer's data; no embedding metric captures that. The peer calls
``pseudonymize``, the server :func:`intersect`; ``docs/alignment-privacy.md``
compares the modes.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_SECRET_BYTES",
    "PSEUDONYM_BYTES",
    "AlignmentPlan",
    "KeyedHashAlignment",
    "PlainAlignment",
    "intersect",
    "locate",
]

PSEUDONYM_BYTES = 32
# A keyed-hash secret shorter than this can be guessed: whoever guesses it
# inverts every pseudonym of an ID they can guess.
MIN_SECRET_BYTES = 16


class KeyedHashAlignment:
    """Keyed-hash pseudonyms: HMAC-SHA256 of each ID under a shared secret.

    Parameters
    ----------
    secret : bytes | str
        Secret shared by the peers and withheld from the server, at least
        ``MIN_SECRET_BYTES`` (16) bytes.
    """

    name = "keyed-hash"

    def __init__(self, secret: bytes | str) -> None:
        if isinstance(secret, str):
            secret = _utf8(secret)
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the alignment secret must be at least {MIN_SECRET_BYTES} "
                             f"bytes, got {len(secret)}")
        self._secret = secret

    def pseudonymize(self, ids: Sequence[str]) -> np.ndarray:
        """Return one 32-byte pseudonym per ID, as a ``(n, 32)`` uint8 array.

        An ID is hashed as the UTF-8 bytes of ``str(id)``; lone surrogates (as
        decoding with ``errors="surrogateescape"`` leaves them) are encoded as
        such rather than refused.
        """
        digests = b"".join(
            hmac.new(self._secret, _utf8(str(i)), hashlib.sha256).digest()
            for i in ids
        )
        return np.frombuffer(digests, dtype=np.uint8).reshape(len(ids), PSEUDONYM_BYTES)


class PlainAlignment:
    """Plain pseudonyms: unkeyed SHA-256 of each ID, for debugging only.

    Anyone who can guess IDs inverts these pseudonyms: hashing a candidate
    and comparing takes a microsecond, and customer numbers, dates of birth
    or e-mail addresses are easily enumerated. The server therefore learns
    every ID it can guess. Useful to read an alignment by eye (the
    pseudonym of an ID is what ``printf %s ID | sha256sum`` prints); never
    to protect IDs.
    """

    name = "plain"

    def pseudonymize(self, ids: Sequence[str]) -> np.ndarray:
        """Return SHA-256 of each ID as a ``(n, 32)`` uint8 array.

        IDs are encoded as in :meth:`KeyedHashAlignment.pseudonymize`.
        """
        digests = b"".join(hashlib.sha256(_utf8(str(i))).digest() for i in ids)
        return np.frombuffer(digests, dtype=np.uint8).reshape(len(ids), PSEUDONYM_BYTES)


def _utf8(text: str) -> bytes:
    # Identical to text.encode() for every string that encodes; injective for all.
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class AlignmentPlan:
    """The server's view of the aligned entities.

    Attributes
    ----------
    pseudonyms : numpy.ndarray
        ``(m, 32)`` uint8 pseudonyms of the intersection, in the server's order.
    is_test : numpy.ndarray
        ``(m,)`` bool, True for held-out entities.
    positions : dict[str, numpy.ndarray]
        Per peer, ``(m,)`` int64 positions into the pseudonym list it sent,
        so that ``sent[positions[peer]] == pseudonyms``.
    """

    pseudonyms: np.ndarray
    is_test: np.ndarray
    positions: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.pseudonyms)


def intersect(
    pseudonyms: Mapping[str, np.ndarray], test_fraction: float, seed: int
) -> AlignmentPlan:
    """Intersect the pseudonym sets of all peers and fix a train/test split.

    The server's order is the sorted order of the pseudonyms, which is
    unrelated to any peer's row order. An entity is held out when a seeded
    hash of its pseudonym falls below ``test_fraction``, so the split of an
    entity does not depend on which other entities are aligned.

    Parameters
    ----------
    pseudonyms : Mapping[str, numpy.ndarray]
        Per peer, its ``(n, 32)`` uint8 pseudonyms, each unique.
    test_fraction : float
        Expected share of held-out entities, in (0, 1).
    seed : int
        Seed of the split, a (Python or NumPy) integer that fits in a signed
        64-bit integer, like Flower's integer config values.
    """
    if not pseudonyms:
        raise ValueError("no peer sent pseudonyms")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    seed = _check_seed(seed)
    keys = {peer: _as_keys(p) for peer, p in pseudonyms.items()}
    common = None
    for peer_keys in keys.values():
        common = peer_keys if common is None else np.intersect1d(
            common, peer_keys, assume_unique=True
        )
    common = np.sort(common)
    positions = {
        peer: np.intersect1d(common, peer_keys, assume_unique=True,
                             return_indices=True)[2].astype(np.int64)
        for peer, peer_keys in keys.items()
    }
    aligned = common.view(np.uint8).reshape(len(common), PSEUDONYM_BYTES)
    return AlignmentPlan(aligned, _held_out(aligned, test_fraction, seed), positions)


def locate(pseudonyms: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Return, for each of ``pseudonyms``, its row in ``among``, or -1 if absent.

    Both are ``(n, 32)`` uint8 arrays; the rows of ``among`` are unique.
    """
    keys, among_keys = _as_keys(pseudonyms), _as_keys(among)
    if len(among_keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    order = np.argsort(among_keys)
    rows = order[np.searchsorted(among_keys[order], keys).clip(max=len(order) - 1)]
    return np.where(among_keys[rows] == keys, rows, -1).astype(np.int64)


def _as_keys(pseudonyms: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pseudonyms).view(f"V{PSEUDONYM_BYTES}").ravel()


def _check_seed(seed: int) -> int:
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, got {seed!r}") from None
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"seed must fit in a signed 64-bit integer, got {value}")
    return value


def _held_out(pseudonyms: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    salt = seed.to_bytes(8, "little", signed=True)
    draws = np.array(
        [int.from_bytes(hashlib.sha256(salt + row.tobytes()).digest()[:8], "little")
         for row in pseudonyms],
        dtype=np.float64,
    )
    return draws / 2.0**64 < test_fraction
