"""Private set intersection by commutative blinding in Ristretto255 (ECDH-PSI).

Each peer ``i`` holds a secret scalar ``k_i`` (:class:`PsiKey`); ``H`` hashes an
ID to a point of the prime-order group Ristretto255 and is public
(:func:`hash_to_group`). Blinding a point ``P`` is scalar multiplication,
written ``P^k`` here; it commutes, so ``(P^a)^b == (P^b)^a``.

The protocol, for ``N`` peers in a fixed ring order 0 .. N-1:

1. Each peer sends ``H(id)^{k_i}`` for each of its IDs, in its row order
   (:meth:`PsiAlignment.pseudonymize`).
2. In ring rounds ``1 .. N-1`` the server hands each peer one other peer's
   current list (:func:`ring_sender` says whose); the peer blinds every point
   with its own key and returns the list in the same order
   (:meth:`PsiAlignment.blind`). Peer ``j``'s list visits every other peer
   exactly once.
3. Afterwards every list carries all keys, ``H(id)^{k_1 ... k_N}``, equal
   across peers for the same ID, and the server runs
   :func:`~vfl_embed.wire.alignment.intersect` on these 32-byte values as it does
   on keyed-hash pseudonyms. :func:`reference_protocol` runs all of this in
   one process.

What each party learns, if every party follows the protocol
(honest-but-curious) and the Decisional Diffie-Hellman assumption holds in
Ristretto255:

The server
    Each peer's number of rows and, for every element of the union of the
    peers' ID sets, which peers hold it (equal final values), hence the size
    of every sub-intersection. It never sees a raw ID or an unblinded point,
    and it cannot test a guessed ID: that needs ``H(guess)`` blinded by every
    peer. A server that deviates from the protocol can do exactly that,
    since peers blind whatever they are sent (see ``docs/alignment-privacy.md``).
A peer
    The row count of every other peer (the lengths of the lists it blinds)
    and, from the alignment plan, which of its own rows are aligned. The
    lists it blinds miss its own key and look random to it.
Collusions
    A peer colluding with the server learns, for each ID it holds itself,
    which other peers hold it. Colluding peers that finalize (apply the
    last key to) both a colluder's list and another peer's learn which of
    that colluder's IDs the other peer holds: peer ``i`` and peer ``i - 1``,
    which finalizes ``i``'s list, learn which of ``i``'s IDs peer ``i + 1``
    holds. No collusion that leaves out peer ``j`` learns anything about
    ``j``'s IDs that no colluder holds, since every list of ``j`` carries
    ``j``'s key.

Keys derived with :meth:`PsiKey.derive` repeat from run to run, so the final
values (and the train/test split drawn from them) repeat too; the same
values also let the server link entities across runs with the same keys.

Blinding costs one scalar multiplication per point (about 50-60 us on one
core); every peer blinds every list once, so ``N`` peers with ``n`` rows each
cost ``N * N * n`` multiplications in total, ``N * n`` per peer. Batches run
on a thread pool: libsodium (bundled by ``rbcl``, called through ``ctypes``)
runs without the GIL.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rbcl

from .alignment import PSEUDONYM_BYTES, _utf8

__all__ = [
    "POINT_BYTES",
    "PsiAlignment",
    "PsiKey",
    "RingResult",
    "blind",
    "hash_to_group",
    "reference_protocol",
    "ring_sender",
]

# A Ristretto255 encoding is 32 bytes, as a keyed pseudonym: intersect() takes both.
POINT_BYTES = PSEUDONYM_BYTES

# Domain-separation tags: an ID hashed here never collides with another use of SHA-512.
_HASH_TAG = b"vfl-embed/psi/v1/hash-to-group\x00"
_KEY_TAG = b"vfl-embed/psi/v1/key\x00"

# Rows per task of the thread pool: large enough that scheduling costs stay
# below 1 % of the C time, small enough to balance the threads.
_MIN_BATCH, _MAX_BATCH = 256, 4096


class PsiKey:
    """A peer's secret blinding scalar: a non-zero integer modulo the group order.

    The scalar is never shown (``repr`` hides it) and cannot be read back.

    Parameters
    ----------
    scalar : bytes
        32-byte little-endian canonical scalar, non-zero. Prefer
        :meth:`derive` or :meth:`random`.
    """

    __slots__ = ("_scalar",)

    def __init__(self, scalar: bytes) -> None:
        if not isinstance(scalar, bytes) or len(scalar) != POINT_BYTES:
            raise ValueError(f"a PSI key is {POINT_BYTES} bytes, got "
                             f"{type(scalar).__name__} of length {_length(scalar)}")
        if rbcl.crypto_core_ristretto255_scalar_reduce(scalar + bytes(32)) != scalar:
            raise ValueError("a PSI key must be reduced modulo the group order")
        if not any(scalar):
            raise ValueError("a PSI key must not be zero")
        self._scalar = scalar

    @classmethod
    def derive(cls, secret: bytes | str, context: bytes | str = b"") -> PsiKey:
        """Derive a key from a secret, deterministically.

        The scalar is SHA-512 of a domain tag, the secret's length (8 bytes,
        big-endian), the secret and the context, reduced modulo the group
        order. The same secret and context always give the same key.

        Parameters
        ----------
        secret : bytes | str
            The peer's own secret (at least 16 bytes of entropy); no other
            party may know it. A ``str`` is UTF-8 encoded.
        context : bytes | str (default: b"")
            What the key is for (e.g. the run's seed); different contexts
            give unrelated keys.
        """
        secret, context = _as_bytes(secret), _as_bytes(context)
        if not secret:
            raise ValueError("the PSI secret must not be empty")
        digest = hashlib.sha512(
            _KEY_TAG + len(secret).to_bytes(8, "big") + secret + context).digest()
        scalar = rbcl.crypto_core_ristretto255_scalar_reduce(digest)
        if not any(scalar):  # probability 2**-252
            raise ValueError("this secret and context derive the zero scalar")
        return cls(scalar)

    @classmethod
    def random(cls) -> PsiKey:
        """Draw a key from the operating system's random source."""
        return cls(rbcl.crypto_core_ristretto255_scalar_random())

    def __repr__(self) -> str:
        return "PsiKey(<secret>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PsiKey):
            return NotImplemented
        return hmac.compare_digest(self._scalar, other._scalar)

    __hash__ = None  # type: ignore[assignment]  # secret material: not a dict key


class PsiAlignment:
    """Private set intersection: IDs hashed to Ristretto255 and blinded with a key.

    The peer's side of the protocol in the module docstring: the first
    round (:meth:`pseudonymize`) and the later ones (:meth:`blind`). The
    commutative-blinding intersection goes back to Meadows (IEEE S&P 1986)
    and Huberman, Franklin and Hogg (ACM EC 1999); the group is
    ristretto255 (RFC 9496), as implemented by libsodium.

    Parameters
    ----------
    key : PsiKey
        This peer's secret key; it must be the same in every round of a run.
    workers : int (default: 0)
        Threads that blind; 0 uses every CPU this process may run on.
    """

    name = "psi"

    def __init__(self, key: PsiKey, workers: int = 0) -> None:
        if not isinstance(key, PsiKey):
            raise TypeError(f"key must be a PsiKey, got {type(key).__name__}")
        self._key = key
        self.workers = _check_workers(workers)

    def pseudonymize(self, ids: Sequence[str]) -> np.ndarray:
        """Return each ID hashed to the group and blinded, as an ``(n, 32)`` uint8 array.

        Equal to ``blind(hash_to_group(ids), key)``, in one pass.
        """
        ids = _as_list(ids)
        scalar = self._key._scalar

        def task(start: int, stop: int) -> bytes:
            return _blind_rows(_hash_rows(ids, start, stop), scalar, start)

        return _as_points(_run_batches(task, len(ids), self.workers))

    def blind(self, points: np.ndarray) -> np.ndarray:
        """Blind another peer's points with this peer's key (a later round).

        Raises ``ValueError`` for anything but valid, non-identity
        Ristretto255 encodings in an ``(n, 32)`` uint8 array.
        """
        return blind(points, self._key, self.workers)


def hash_to_group(ids: Sequence[str], workers: int = 0) -> np.ndarray:
    """Hash IDs to Ristretto255 points, as an ``(n, 32)`` uint8 array.

    An ID is hashed as the UTF-8 bytes of ``str(id)`` (lone surrogates
    encoded as such, as in :class:`~vfl_embed.wire.alignment.KeyedHashAlignment`)
    after a domain tag, with SHA-512; libsodium's ``from_hash`` maps the
    64-byte digest to a point. Anyone can compute these points: they are
    never sent unblinded.

    Parameters
    ----------
    ids : Sequence[str]
        The IDs, in row order.
    workers : int (default: 0)
        Threads; 0 uses every CPU this process may run on.
    """
    ids = _as_list(ids)
    return _as_points(_run_batches(
        lambda start, stop: _hash_rows(ids, start, stop), len(ids), _check_workers(workers)))


def blind(points: np.ndarray, key: PsiKey, workers: int = 0) -> np.ndarray:
    """Multiply every point by ``key``, as an ``(n, 32)`` uint8 array in the same order.

    Parameters
    ----------
    points : numpy.ndarray
        ``(n, 32)`` uint8 Ristretto255 encodings, e.g. as received from the
        server. A row that is not the canonical encoding of a group element,
        or is the identity, raises ``ValueError`` naming the first such row.
    key : PsiKey
        The key to blind with.
    workers : int (default: 0)
        Threads; 0 uses every CPU this process may run on.
    """
    if not isinstance(key, PsiKey):
        raise TypeError(f"key must be a PsiKey, got {type(key).__name__}")
    if (not isinstance(points, np.ndarray) or points.dtype != np.uint8
            or points.ndim != 2 or points.shape[1] != POINT_BYTES):
        raise ValueError(
            f"points must be an (n, {POINT_BYTES}) uint8 array, got "
            + (f"shape {points.shape} dtype {points.dtype}"
               if isinstance(points, np.ndarray) else type(points).__name__))
    data, scalar = points.tobytes(), key._scalar

    def task(start: int, stop: int) -> bytes:
        return _blind_rows(data[start * POINT_BYTES:stop * POINT_BYTES], scalar, start)

    return _as_points(_run_batches(task, len(points), _check_workers(workers)))


def ring_sender(round_index: int, receiver: int, n_peers: int) -> int:
    """Return the peer whose list ``receiver`` blinds in ring round ``round_index``.

    Peers are numbered 0 .. n_peers - 1 in a ring order the server fixes for
    the run. In ring round ``r`` (1 .. n_peers - 1; round 0 is each peer
    blinding its own IDs) peer ``i`` blinds the current list of peer
    ``(i - r) mod n_peers``, so peer ``j``'s list goes to peer ``j + 1``,
    then ``j + 2``, ..., and has visited every other peer after the last round.
    """
    if n_peers < 1:
        raise ValueError(f"n_peers must be at least 1, got {n_peers}")
    if not 0 <= round_index < n_peers:
        raise ValueError(f"round_index must be in [0, {n_peers - 1}], got {round_index}")
    if not 0 <= receiver < n_peers:
        raise ValueError(f"receiver must be in [0, {n_peers - 1}], got {receiver}")
    return (receiver - round_index) % n_peers


@dataclass(frozen=True)
class RingResult:
    """The outcome and costs of :func:`reference_protocol`.

    Attributes
    ----------
    final : list[numpy.ndarray]
        Per peer, its ``(n_i, 32)`` uint8 list blinded by every key, in that
        peer's row order: what the server passes to ``intersect``.
    hashes : int
        IDs hashed to the group (every peer's rows once).
    blindings : int
        Scalar multiplications, all peers together.
    bytes_to_server : int
        Point bytes the peers sent the server (every round).
    bytes_to_peers : int
        Point bytes the server sent the peers (ring rounds).
    seconds : list[float]
        Wall time of each round: round 0 (hash and blind own IDs), then the
        ring rounds.
    """

    final: list[np.ndarray]
    hashes: int
    blindings: int
    bytes_to_server: int
    bytes_to_peers: int
    seconds: list[float]


def reference_protocol(
    id_lists: Sequence[Sequence[str]],
    keys: Sequence[PsiKey],
    workers: int = 0,
    progress: Callable[[str], None] | None = None,
) -> RingResult:
    """Run the whole protocol in this process, peers one after the other.

    Peer ``i`` holds ``id_lists[i]`` and ``keys[i]``; the routing is
    :func:`ring_sender`'s, the peers' computations
    :class:`PsiAlignment`'s. Message sizes count the 32-byte points only.

    Parameters
    ----------
    id_lists : Sequence[Sequence[str]]
        Each peer's IDs, in its row order, unique within a peer.
    keys : Sequence[PsiKey]
        Each peer's key.
    workers : int (default: 0)
        Threads each peer uses; 0 uses every CPU this process may run on.
    progress : Callable[[str], None] | None (default: None)
        Called with a line of text before each round.
    """
    if len(id_lists) != len(keys):
        raise ValueError(f"{len(id_lists)} ID lists but {len(keys)} keys")
    if not id_lists:
        raise ValueError("the protocol needs at least one peer")
    n_peers = len(id_lists)
    peers = [PsiAlignment(key, workers) for key in keys]
    sizes = [len(ids) for ids in id_lists]
    say = progress or (lambda _: None)
    seconds = []

    say(f"round 1 of {n_peers}: each peer hashes and blinds its {sum(sizes):,} IDs")
    started = time.perf_counter()
    current = [peer.pseudonymize(ids) for peer, ids in zip(peers, id_lists, strict=True)]
    seconds.append(time.perf_counter() - started)
    to_server, to_peers = sum(sizes) * POINT_BYTES, 0
    for round_index in range(1, n_peers):
        say(f"round {round_index + 1} of {n_peers}: each peer blinds another's list")
        started = time.perf_counter()
        blinded = list(current)
        for receiver, peer in enumerate(peers):
            owner = ring_sender(round_index, receiver, n_peers)
            to_peers += current[owner].nbytes
            blinded[owner] = peer.blind(current[owner])
            to_server += blinded[owner].nbytes
        current = blinded
        seconds.append(time.perf_counter() - started)
    return RingResult(final=current, hashes=sum(sizes), blindings=n_peers * sum(sizes),
                      bytes_to_server=to_server, bytes_to_peers=to_peers, seconds=seconds)


# ------------------------------------------------------------------ helpers
def _hash_rows(ids: list, start: int, stop: int) -> bytes:
    sha512, from_hash, tag = hashlib.sha512, rbcl.crypto_core_ristretto255_from_hash, _HASH_TAG
    return b"".join([from_hash(sha512(tag + _utf8(str(i))).digest())
                     for i in ids[start:stop]])


def _blind_rows(data: bytes, scalar: bytes, first_row: int) -> bytes:
    """Blind the concatenated encodings ``data``; ``first_row`` names rows in errors."""
    multiply, out = rbcl.crypto_scalarmult_ristretto255, []
    for offset in range(0, len(data), POINT_BYTES):
        point = data[offset:offset + POINT_BYTES]
        try:
            out.append(multiply(scalar, point))
        except RuntimeError:  # libsodium refused the point, or the product is the identity
            what = ("is the identity element" if
                    rbcl.crypto_core_ristretto255_is_valid_point(point)
                    else "is not a canonical Ristretto255 encoding")
            raise ValueError(f"row {first_row + offset // POINT_BYTES} of the points "
                             f"{what}") from None
    return b"".join(out)


def _run_batches(task: Callable[[int, int], bytes], n: int, workers: int) -> bytes:
    """Concatenate ``task(start, stop)`` over consecutive batches of ``range(n)``.

    With more than one worker the batches run on a thread pool; the output is
    the same, and an error is the one of the first failing batch.
    """
    workers = workers or _available_cpus()
    size = max(_MIN_BATCH, min(_MAX_BATCH, -(-n // (8 * workers))))
    bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
    if workers == 1 or len(bounds) < 2:
        return b"".join(task(start, stop) for start, stop in bounds)
    with ThreadPoolExecutor(min(workers, len(bounds)), thread_name_prefix="psi") as pool:
        futures = [pool.submit(task, start, stop) for start, stop in bounds]
        try:
            return b"".join([future.result() for future in futures])
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer (0: every CPU), "
                         f"got {workers!r}")
    return int(workers)


def _as_points(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, POINT_BYTES)


def _as_list(ids: Sequence[str]) -> list:
    return ids if isinstance(ids, list) else list(ids)


def _as_bytes(value: bytes | str) -> bytes:
    return _utf8(value) if isinstance(value, str) else bytes(value)


def _length(value: object) -> object:
    try:
        return len(value)  # type: ignore[arg-type]
    except TypeError:
        return "n/a"


def _forget_rbcl_library_file() -> None:
    # rbcl writes its bundled libsodium to a new temporary file at every import
    # and never deletes it (about 2.8 MB a process: every Flower or Ray worker
    # that imports this module). The library is mapped by now; on POSIX the
    # file can go. Only a file in the temporary directory is removed.
    path = getattr(getattr(rbcl, "_sodium", None), "_name", None)
    if os.name != "posix" or not isinstance(path, str) or not path.endswith(".so"):
        return
    if Path(path).parent.resolve() == Path(tempfile.gettempdir()).resolve():
        with contextlib.suppress(OSError):
            os.unlink(path)


_forget_rbcl_library_file()
