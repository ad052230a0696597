"""The wire contract between the vertical strategy and the peers.

Every message type, record name and key lives here, with the builders both
sides use and the validation the server applies to every reply.

Messages (server -> peer, and the reply):

``query.pseudonyms``
    Ask a peer for the keyed pseudonyms of its rows. Reply:
    ``ArrayRecord "pseudonyms"`` with ``"pseudonyms"`` (``(n, 32)`` uint8) and
    ``ConfigRecord "peer"`` with ``"name"``, ``"fingerprint"`` (SHA-256 of the
    pseudonyms, echoed back later so the peer can check its table did not
    change) and ``"has-label"``.
``query.blind``
    Private set intersection only (``alignment = "psi"``): blind another
    peer's list of group elements with this peer's key. Request:
    ``ArrayRecord "points"`` with ``"points"`` (``(n, 32)`` uint8 Ristretto255
    encodings) and ``ConfigRecord "config"`` with ``"fingerprint"``. Reply:
    ``ArrayRecord "points"`` with ``"points"``, the same rows blinded, in the
    same order. In this mode the ``query.pseudonyms`` reply carries the
    peer's own IDs blinded with its key (the first of the ring's rounds).
``query.labels``
    Ask the label-holding peer for the labels of the aligned rows.
    Request: ``ArrayRecord "plan"`` with ``"positions"``. Reply:
    ``ArrayRecord "labels"`` with ``"labels"`` (``(m,)`` float64; class codes
    for string labels) and ``ConfigRecord "label-info"`` with ``"classes"``
    (class names, empty for numeric labels).
``train.embed``
    Fit preprocessing and encoder on the training rows and encode all aligned
    rows. Request: ``ArrayRecord "plan"`` with ``"positions"`` (``(m,)``
    int64 positions into the pseudonyms the peer sent), ``"is-test"``
    (``(m,)`` uint8) and, for supervised encoders, ``"train-targets"``;
    ``ConfigRecord "config"`` with the encoder settings and ``"fingerprint"``,
    and, when it carries training targets, ``"label-epsilon"``: the label
    epsilon the server declares they were noised with (0.0: sent in clear;
    see :mod:`vfl_embed.privacy.label_dp`), which the peer's policy checks.
    Reply: ``ArrayRecord "latents"`` with ``"latents"`` (``(m, d)``, in the
    server's order; float32, or float16 if the config's ``"latent-bits"`` is
    16) and ``MetricRecord "metrics"``. The peer saves its fitted
    preprocessing, encoder and release settings under this run's ID.
``query.encode``
    Encode rows with the frozen encoder of an earlier training run (predict
    mode). Request: ``ArrayRecord "plan"`` with ``"positions"`` and
    ``ConfigRecord "config"`` with ``"train-run"`` (the training run's ID, as
    text: run IDs exceed Flower's signed integers) and ``"fingerprint"``.
    Reply: as for ``train.embed``, with the training run's ``"latent-bits"``.

A peer that fails replies with a Flower ``Error`` whose reason names it.

The server trusts nothing in a reply: the ``read_*`` functions check every
record, dtype, shape and value, and raise :class:`PeerReplyError` naming the
peer for anything else, whatever the content.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from ..errors import PeerDataError, PeerReplyError
from .alignment import PSEUDONYM_BYTES

# Message types: "<kind>.<name>", matching @app.query("<name>") / @app.train(...).
QUERY_PSEUDONYMS = "query.pseudonyms"
QUERY_LABELS = "query.labels"
QUERY_ENCODE = "query.encode"
QUERY_BLIND = "query.blind"
TRAIN_EMBED = "train.embed"

# Record names and keys.
PSEUDONYMS = "pseudonyms"
PEER = "peer"
NAME = "name"
FINGERPRINT = "fingerprint"
HAS_LABEL = "has-label"
PLAN = "plan"
POSITIONS = "positions"
IS_TEST = "is-test"
TRAIN_TARGETS = "train-targets"
LABEL_EPSILON = "label-epsilon"
CONFIG = "config"
TRAIN_RUN = "train-run"
LABELS = "labels"
LABEL_INFO = "label-info"
CLASSES = "classes"
LATENTS = "latents"
METRICS = "metrics"
POINTS = "points"
LATENT_BITS = "latent-bits"
# Width of the floats a peer sends its latents in: 16 halves the bytes, at
# a relative rounding of 5e-4 (the latents are of order 1 to 100).
LATENT_DTYPES = {32: np.dtype(np.float32), 16: np.dtype(np.float16)}
# Values of the run config's "alignment", which server and peers both read.
ALIGNMENT_MODES = ("keyed-hash", "psi", "plain")
# Prefix of the privacy figures (audit, differential privacy) among a peer's
# embed metrics: "privacy/<figure>".
PRIVACY_PREFIX = "privacy/"

# Error codes of a peer (Flower's own codes are < 10): input it cannot use,
# and an unexpected failure whose details stay in the peer's log.
PEER_INPUT_ERROR = 100
PEER_INTERNAL_ERROR = 101
# Largest latent magnitude accepted. Latents of standardized columns are of
# order 1 to 100; far larger values are a fault and would swamp the
# downstream model's scale.
LATENT_LIMIT = 1e6
# The widest latent a reply may declare when the server does not know its width
# (the raw-column baseline sends a peer's encoded columns).
MAX_LATENT_WIDTH = 100_000
# Peer names end up in logs, reports and file names.
_RUN_ID = re.compile(r"\d{1,20}")
_PEER_NAME = re.compile(r"[\w.-]{1,64}")
_UNREACHABLE = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
                ErrorCode.NODE_UNAVAILABLE)


def parse_run_id(value: object, owner: str) -> int:
    """Return a Flower run ID (an unsigned 64-bit integer) given as text or int.

    Run IDs travel as text: they may exceed the signed 64-bit range of TOML
    and of Flower's config records.
    """
    text = str(value).strip()
    if not _RUN_ID.fullmatch(text) or int(text) >= 2**64:
        raise PeerDataError(f"{owner}: '{text[:30]}' is not a Flower run ID (the "
                            "number `flwr run` prints, e.g. 9127343127348119012)")
    return int(text)


def fingerprint(pseudonyms: np.ndarray) -> str:
    """SHA-256 of a pseudonym array, hex encoded."""
    return hashlib.sha256(np.ascontiguousarray(pseudonyms).tobytes()).hexdigest()


# ---------------------------------------------------------------- peer side
def pseudonyms_reply(
    request: Message, name: str, pseudonyms: np.ndarray, has_label: bool
) -> Message:
    """Reply to ``query.pseudonyms``."""
    content = RecordDict({
        PSEUDONYMS: ArrayRecord({PSEUDONYMS: _array(pseudonyms)}),
        PEER: ConfigRecord({
            NAME: name, FINGERPRINT: fingerprint(pseudonyms), HAS_LABEL: has_label,
        }),
    })
    return Message(content, reply_to=request)


def labels_reply(request: Message, labels: np.ndarray, classes: list[str]) -> Message:
    """Reply to ``query.labels``."""
    content = RecordDict({
        LABELS: ArrayRecord({LABELS: _array(labels.astype(np.float64))}),
        LABEL_INFO: ConfigRecord({CLASSES: list(classes)}),
    })
    return Message(content, reply_to=request)


def latents_reply(
    request: Message, latents: np.ndarray, metrics: dict[str, float]
) -> Message:
    """Reply to ``train.embed`` or ``query.encode``; ``latents`` go as they are.

    Raises ValueError unless ``latents`` are float32 or float16.
    """
    if latents.dtype not in LATENT_DTYPES.values():
        raise ValueError(f"latents go as float32 or float16, not {latents.dtype}")
    content = RecordDict({
        LATENTS: ArrayRecord({LATENTS: _array(latents)}),
        METRICS: MetricRecord(metrics),
    })
    return Message(content, reply_to=request)


def blind_reply(request: Message, points: np.ndarray) -> Message:
    """Reply to ``query.blind``."""
    return Message(RecordDict({POINTS: ArrayRecord({POINTS: _array(points)})}),
                   reply_to=request)


def read_points_request(message: Message) -> np.ndarray:
    """Return the group elements a ``query.blind`` request asks to blind."""
    return message.content[POINTS][POINTS].numpy()


# -------------------------------------------------------------- server side
def pseudonyms_request(node_id: int, config: ConfigRecord) -> Message:
    """Build a ``query.pseudonyms`` message."""
    return Message(RecordDict({CONFIG: config}), dst_node_id=node_id,
                   message_type=QUERY_PSEUDONYMS)


def labels_request(node_id: int, positions: np.ndarray, fingerprint_: str) -> Message:
    """Build a ``query.labels`` message."""
    plan = ArrayRecord({POSITIONS: _array(positions.astype(np.int64))})
    config = ConfigRecord({FINGERPRINT: fingerprint_})
    return Message(RecordDict({PLAN: plan, CONFIG: config}), dst_node_id=node_id,
                   message_type=QUERY_LABELS)


def blind_request(node_id: int, points: np.ndarray, fingerprint_: str) -> Message:
    """Build a ``query.blind`` message."""
    content = RecordDict({POINTS: ArrayRecord({POINTS: _array(points)}),
                          CONFIG: ConfigRecord({FINGERPRINT: fingerprint_})})
    return Message(content, dst_node_id=node_id, message_type=QUERY_BLIND)


def embed_request(
    node_id: int,
    positions: np.ndarray,
    is_test: np.ndarray,
    config: ConfigRecord,
    train_targets: np.ndarray | None = None,
    label_epsilon: float = 0.0,
) -> Message:
    """Build a ``train.embed`` message.

    ``label_epsilon`` is declared with ``train_targets``: the label epsilon
    they were noised with, 0.0 for labels in clear.
    """
    plan = ArrayRecord({
        POSITIONS: _array(positions.astype(np.int64)),
        IS_TEST: _array(is_test.astype(np.uint8)),
    })
    if train_targets is not None:
        plan[TRAIN_TARGETS] = _array(train_targets.astype(np.float64))
        config = ConfigRecord(dict(config) | {LABEL_EPSILON: float(label_epsilon)})
    return Message(RecordDict({PLAN: plan, CONFIG: config}), dst_node_id=node_id,
                   message_type=TRAIN_EMBED)


def encode_request(
    node_id: int, positions: np.ndarray, train_run: int, fingerprint_: str
) -> Message:
    """Build a ``query.encode`` message."""
    plan = ArrayRecord({POSITIONS: _array(positions.astype(np.int64))})
    config = ConfigRecord({TRAIN_RUN: str(train_run), FINGERPRINT: fingerprint_})
    return Message(RecordDict({PLAN: plan, CONFIG: config}), dst_node_id=node_id,
                   message_type=QUERY_ENCODE)


def is_unreachable(reply: Message) -> bool:
    """Tell whether the SuperLink answered for a peer it could not reach.

    Such replies come from the SuperLink itself (the destination node missed
    its heartbeats, or the message expired), not from the peer's code.
    """
    return reply.has_error() and reply.error.code in _UNREACHABLE


def check_reply(reply: Message, peer: str) -> None:
    """Raise :class:`PeerReplyError` if ``reply`` carries an error.

    A peer's own input error (``PEER_INPUT_ERROR``) already starts with the
    peer's name; before alignment the server knows the peer only as
    ``"node <id>"``, so that name is taken from the reason.
    """
    if not reply.has_error():
        return
    reason = str(reply.error.reason or f"error code {reply.error.code}")
    name, _, own_words = reason.partition(": ")
    if reply.error.code in (PEER_INPUT_ERROR, PEER_INTERNAL_ERROR) and own_words and (
        name == peer or (peer.startswith("node ") and _PEER_NAME.fullmatch(name))
    ):
        raise PeerReplyError(name, own_words)
    raise PeerReplyError(peer, f"failed: {reason}")


def read_pseudonyms(reply: Message, peer: str) -> tuple[np.ndarray, dict]:
    """Validate a ``query.pseudonyms`` reply; return pseudonyms and peer info."""
    check_reply(reply, peer)
    info = _record(reply, PEER, peer)
    for key, kind in ((NAME, str), (FINGERPRINT, str), (HAS_LABEL, bool)):
        if not isinstance(info, ConfigRecord) or not isinstance(info.get(key), kind):
            raise PeerReplyError(peer, f"reply lacks '{PEER}.{key}' ({kind.__name__})")
    name = info[NAME]
    if not _PEER_NAME.fullmatch(name):
        raise PeerReplyError(peer, "sent a peer name that is not 1 to 64 letters, "
                                   "digits, '.', '_' or '-'")
    values = _array_of(reply, PSEUDONYMS, PSEUDONYMS, name)
    if values.dtype != np.uint8 or values.ndim != 2 or values.shape[1] != PSEUDONYM_BYTES:
        raise PeerReplyError(
            name, f"pseudonyms must be (n, {PSEUDONYM_BYTES}) uint8, "
            f"got {values.shape} {values.dtype}"
        )
    if len(values) == 0:
        raise PeerReplyError(name, "sent no pseudonyms (empty table)")
    if len(np.unique(_keys(values))) != len(values):
        raise PeerReplyError(name, "sent duplicate pseudonyms (duplicate IDs)")
    if fingerprint(values) != info[FINGERPRINT]:
        raise PeerReplyError(name, "pseudonyms do not match their fingerprint")
    return values, {NAME: name, FINGERPRINT: info[FINGERPRINT],
                    HAS_LABEL: info[HAS_LABEL]}


def read_points(reply: Message, peer: str, n_rows: int) -> np.ndarray:
    """Validate a ``query.blind`` reply: ``n_rows`` distinct 32-byte elements.

    Blinding with a non-zero key is a bijection of the group, so distinct
    elements stay distinct; a repeated row is a fault of the peer.
    """
    check_reply(reply, peer)
    values = _array_of(reply, POINTS, POINTS, peer, most=n_rows * PSEUDONYM_BYTES)
    if values.dtype != np.uint8 or values.shape != (n_rows, PSEUDONYM_BYTES):
        raise PeerReplyError(
            peer, f"blinded points must be ({n_rows}, {PSEUDONYM_BYTES}) uint8, got "
            f"{values.shape} {values.dtype}")
    if len(np.unique(_keys(values))) != n_rows:
        raise PeerReplyError(peer, "sent repeated blinded points")
    return values


def peer_names(infos: Mapping[int, tuple[np.ndarray, dict]]) -> dict[int, str]:
    """Return the peer name of each node, in node order, from ``read_pseudonyms`` results.

    Raises :class:`PeerReplyError` if two SuperNodes use one name: their
    latents and reports could not be told apart.
    """
    names: dict[int, str] = {}
    for node_id, (_, info) in sorted(infos.items()):
        if info[NAME] in names.values():
            raise PeerReplyError(info[NAME], "two SuperNodes use this peer name")
        names[node_id] = info[NAME]
    return names


def read_labels(reply: Message, peer: str, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """Validate a ``query.labels`` reply; return labels and class names."""
    check_reply(reply, peer)
    labels = _array_of(reply, LABELS, LABELS, peer, most=n_rows)
    if labels.shape != (n_rows,):
        raise PeerReplyError(peer, f"sent labels of shape {labels.shape}, "
                                   f"expected ({n_rows},)")
    if labels.dtype.kind != "f" or not np.isfinite(labels).all():
        raise PeerReplyError(peer, "sent missing, non-finite or non-float labels")
    classes = _record(reply, LABEL_INFO, peer).get(CLASSES, [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) \
            or len(set(classes)) != len(classes):
        raise PeerReplyError(peer, "sent class names that are not a list of "
                                   "distinct strings")
    if classes and not (np.isin(labels, np.arange(len(classes)))).all():
        raise PeerReplyError(peer, f"sent class codes outside 0..{len(classes) - 1}")
    return labels, [str(c) for c in classes]


def read_latents(
    reply: Message, peer: str, n_rows: int, width: int = 0, bits: int = 0
) -> tuple[np.ndarray, dict]:
    """Validate a ``train.embed`` or ``query.encode`` reply; return latents and metrics.

    ``width``, if positive, is the latent width the peer must send; ``bits``,
    if positive, the float width (32 or 16; otherwise either). The latents
    are returned as float32.
    """
    check_reply(reply, peer)
    latents = _array_of(reply, LATENTS, LATENTS, peer,
                        most=n_rows * (width or MAX_LATENT_WIDTH))
    allowed = [LATENT_DTYPES[bits]] if bits else list(LATENT_DTYPES.values())
    if latents.dtype not in allowed or latents.ndim != 2:
        raise PeerReplyError(
            peer, f"latents must be a 2-D {' or '.join(map(str, allowed))} matrix, got "
            f"{latents.shape} {latents.dtype}"
        )
    if latents.shape[0] != n_rows or latents.shape[1] == 0 or (
        width and latents.shape[1] != width
    ):
        expected = f"({n_rows}, {width})" if width else f"{n_rows} rows"
        raise PeerReplyError(
            peer, f"sent latents of shape {latents.shape}, expected {expected}"
        )
    if not np.isfinite(latents).all():
        raise PeerReplyError(peer, "sent non-finite latent values")
    largest = float(np.abs(latents).max(initial=0.0))
    if largest > LATENT_LIMIT:
        raise PeerReplyError(peer, f"sent latent values up to {largest:.3g}; the "
                                   f"limit is {LATENT_LIMIT:.0e}")
    metrics = _record(reply, METRICS, peer)
    if not isinstance(metrics, MetricRecord) or not all(
        isinstance(v, int | float) for v in metrics.values()
    ):
        raise PeerReplyError(peer, f"the '{METRICS}' record must hold numbers only")
    return latents.astype(np.float32, copy=False), {k: float(v) for k, v in metrics.items()}


def _keys(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values).view(f"V{PSEUDONYM_BYTES}").ravel()


def _record(reply: Message, name: str, peer: str):  # noqa: ANN202
    if name not in reply.content:
        raise PeerReplyError(peer, f"reply lacks the '{name}' record")
    return reply.content[name]


def _array_of(reply: Message, record: str, key: str, peer: str,
              most: int | None = None) -> np.ndarray:
    arrays = _record(reply, record, peer)
    if not isinstance(arrays, ArrayRecord) or key not in arrays:
        raise PeerReplyError(peer, f"reply lacks the array '{record}.{key}'")
    # The declared size is checked before the bytes are decoded, so an
    # oversized reply is refused without being materialized.
    declared = math.prod(int(n) for n in arrays[key].shape)
    if most is not None and declared > most:
        raise PeerReplyError(peer, f"array '{record}.{key}' declares {declared} values, "
                                   f"more than the {most} asked for")
    try:
        values = arrays[key].numpy()
    except Exception as err:  # noqa: BLE001 - any decoding failure is the peer's
        raise PeerReplyError(peer, f"array '{record}.{key}' does not decode: {err}") \
            from err
    if not isinstance(values, np.ndarray):  # e.g. .npz bytes decode to an archive
        raise PeerReplyError(peer, f"array '{record}.{key}' is not one array")
    return values


def _array(values: np.ndarray):  # noqa: ANN202
    from flwr.app import Array

    return Array(np.ascontiguousarray(values))
