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
    ``ConfigRecord "config"`` with the encoder settings and ``"fingerprint"``.
    Reply: ``ArrayRecord "latents"`` with ``"latents"`` (``(m, d)`` float32,
    in the server's order) and ``MetricRecord "metrics"``.

A peer that fails replies with a Flower ``Error`` whose reason names it.
"""

from __future__ import annotations

import hashlib

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from .alignment import PSEUDONYM_BYTES

# Message types: "<kind>.<name>", matching @app.query("<name>") / @app.train(...).
QUERY_PSEUDONYMS = "query.pseudonyms"
QUERY_LABELS = "query.labels"
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
CONFIG = "config"
LABELS = "labels"
LABEL_INFO = "label-info"
CLASSES = "classes"
LATENTS = "latents"
METRICS = "metrics"

# Error code a peer uses for input it cannot use (Flower's own codes are < 10).
PEER_INPUT_ERROR = 100
_UNREACHABLE = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
                ErrorCode.NODE_UNAVAILABLE)


class PeerReplyError(RuntimeError):
    """A peer's reply is missing, failed or invalid; the message names the peer."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"{peer}: {reason}")
        self.peer = peer
        self.reason = reason


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


def embed_reply(
    request: Message, latents: np.ndarray, metrics: dict[str, float]
) -> Message:
    """Reply to ``train.embed``."""
    content = RecordDict({
        LATENTS: ArrayRecord({LATENTS: _array(latents.astype(np.float32))}),
        METRICS: MetricRecord(metrics),
    })
    return Message(content, reply_to=request)


def read_plan(
    message: Message,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return ``(positions, is_test, train_targets)`` of a request.

    ``is_test`` is None in a ``query.labels`` request; ``train_targets`` is
    None unless the encoders are supervised.
    """
    plan = message.content[PLAN]
    is_test = plan[IS_TEST].numpy().astype(bool) if IS_TEST in plan else None
    targets = plan[TRAIN_TARGETS].numpy() if TRAIN_TARGETS in plan else None
    return plan[POSITIONS].numpy(), is_test, targets


# -------------------------------------------------------------- server side
def pseudonyms_request(node_id: int, config: ConfigRecord) -> Message:
    """Build a ``query.pseudonyms`` message."""
    return Message(RecordDict({CONFIG: config}), dst_node_id=node_id,
                   message_type=QUERY_PSEUDONYMS)


def labels_request(node_id: int, positions: np.ndarray) -> Message:
    """Build a ``query.labels`` message."""
    plan = ArrayRecord({POSITIONS: _array(positions.astype(np.int64))})
    return Message(RecordDict({PLAN: plan}), dst_node_id=node_id,
                   message_type=QUERY_LABELS)


def embed_request(
    node_id: int,
    positions: np.ndarray,
    is_test: np.ndarray,
    config: ConfigRecord,
    train_targets: np.ndarray | None = None,
) -> Message:
    """Build a ``train.embed`` message."""
    plan = ArrayRecord({
        POSITIONS: _array(positions.astype(np.int64)),
        IS_TEST: _array(is_test.astype(np.uint8)),
    })
    if train_targets is not None:
        plan[TRAIN_TARGETS] = _array(train_targets.astype(np.float64))
    return Message(RecordDict({PLAN: plan, CONFIG: config}), dst_node_id=node_id,
                   message_type=TRAIN_EMBED)


def is_unreachable(reply: Message) -> bool:
    """Tell whether the SuperLink answered for a peer it could not reach.

    Such replies come from the SuperLink itself (the destination node missed
    its heartbeats, or the message expired), not from the peer's code.
    """
    return reply.has_error() and reply.error.code in _UNREACHABLE


def check_reply(reply: Message, peer: str) -> None:
    """Raise :class:`PeerReplyError` if ``reply`` carries an error."""
    if reply.has_error():
        reason = reply.error.reason or f"error code {reply.error.code}"
        raise PeerReplyError(peer, f"failed: {reason}")


def read_pseudonyms(reply: Message, peer: str) -> tuple[np.ndarray, dict]:
    """Validate a ``query.pseudonyms`` reply; return pseudonyms and peer info."""
    check_reply(reply, peer)
    info = _record(reply, PEER, peer)
    for key in (NAME, FINGERPRINT, HAS_LABEL):
        if key not in info:
            raise PeerReplyError(peer, f"reply lacks '{PEER}.{key}'")
    name = str(info[NAME])
    values = _array_of(reply, PSEUDONYMS, PSEUDONYMS, name)
    if values.dtype != np.uint8 or values.ndim != 2 or values.shape[1] != PSEUDONYM_BYTES:
        raise PeerReplyError(
            name, f"pseudonyms must be (n, {PSEUDONYM_BYTES}) uint8, "
            f"got {values.shape} {values.dtype}"
        )
    if len(values) == 0:
        raise PeerReplyError(name, "sent no pseudonyms (empty table)")
    keys = np.ascontiguousarray(values).view(f"V{PSEUDONYM_BYTES}").ravel()
    if len(np.unique(keys)) != len(keys):
        raise PeerReplyError(name, "sent duplicate pseudonyms (duplicate IDs)")
    if fingerprint(values) != info[FINGERPRINT]:
        raise PeerReplyError(name, "pseudonyms do not match their fingerprint")
    return values, {NAME: name, FINGERPRINT: str(info[FINGERPRINT]),
                    HAS_LABEL: bool(info[HAS_LABEL])}


def read_labels(reply: Message, peer: str, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """Validate a ``query.labels`` reply; return labels and class names."""
    check_reply(reply, peer)
    labels = _array_of(reply, LABELS, LABELS, peer)
    if labels.shape != (n_rows,):
        raise PeerReplyError(peer, f"sent labels of shape {labels.shape}, "
                                   f"expected ({n_rows},)")
    if not np.isfinite(labels).all():
        raise PeerReplyError(peer, "sent missing or non-finite labels")
    classes = [str(c) for c in _record(reply, LABEL_INFO, peer).get(CLASSES, [])]
    return labels, classes


def read_latents(reply: Message, peer: str, n_rows: int) -> tuple[np.ndarray, dict]:
    """Validate a ``train.embed`` reply; return latents and metrics."""
    check_reply(reply, peer)
    latents = _array_of(reply, LATENTS, LATENTS, peer)
    if latents.dtype != np.float32 or latents.ndim != 2:
        raise PeerReplyError(
            peer, f"latents must be a 2-D float32 matrix, got {latents.shape} "
            f"{latents.dtype}"
        )
    if latents.shape[0] != n_rows or latents.shape[1] == 0:
        raise PeerReplyError(
            peer, f"sent latents of shape {latents.shape}, expected {n_rows} rows"
        )
    if not np.isfinite(latents).all():
        raise PeerReplyError(peer, "sent non-finite latent values")
    metrics = dict(_record(reply, METRICS, peer))
    return latents, metrics


def _record(reply: Message, name: str, peer: str):  # noqa: ANN202
    if name not in reply.content:
        raise PeerReplyError(peer, f"reply lacks the '{name}' record")
    return reply.content[name]


def _array_of(reply: Message, record: str, key: str, peer: str) -> np.ndarray:
    arrays = _record(reply, record, peer)
    if not isinstance(arrays, ArrayRecord) or key not in arrays:
        raise PeerReplyError(peer, f"reply lacks the array '{record}.{key}'")
    try:
        return arrays[key].numpy()
    except Exception as err:  # noqa: BLE001 - any decoding failure is the peer's
        raise PeerReplyError(peer, f"array '{record}.{key}' does not decode: {err}") \
            from err


def _array(values: np.ndarray):  # noqa: ANN202
    from flwr.app import Array

    return Array(np.ascontiguousarray(values))
