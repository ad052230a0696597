"""Message types, record keys and reply checks of the split-learning app.

Alignment reuses vfl_embed's ``query.pseudonyms`` (see
:mod:`vfl_embed.wire.protocol`); then, with ``rows`` always indices into the
server's order of the aligned entities:

``train.setup``
    ``ArrayRecord "plan"``: ``"positions"`` ``(m,)`` int64 into the peer's
    pseudonyms, ``"is-test"`` ``(m,)`` uint8; ``ConfigRecord "config"``: the
    bottom model's settings and the peer's pseudonym ``"fingerprint"``. The
    peer fits its preprocessing on the training rows and initializes its
    bottom model. Reply: ``MetricRecord "metrics"`` (``n-features``,
    ``n-parameters``).
``query.forward``
    ``ArrayRecord "batch"``: ``"rows"`` ``(b,)`` int64; ``ConfigRecord
    "config"``: ``"save-checkpoint"`` (an epoch, or -1) keeps the current
    weights under that epoch, dropping every checkpoint but it and
    ``"keep-checkpoint"``; ``"load-checkpoint"`` (an epoch, or -1) computes
    with that checkpoint's weights. Reply: ``ArrayRecord "activations"``
    ``"activations"`` ``(b, cut-dim)`` float32.
``train.backward``
    ``ArrayRecord "batch"``: ``"rows"`` and ``"gradients"`` ``(b, cut-dim)``
    float32, the loss gradient w.r.t. the activations of those rows. The
    peer recomputes the forward pass under a ``tf.GradientTape`` and takes
    one optimizer step. Reply: ``MetricRecord "metrics"`` with ``"step"``,
    its optimizer's step count, which the server checks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.serde import message_to_proto

from vfl_embed.errors import PeerReplyError

# The setup plan and its config use vfl_embed's record keys (its fingerprint
# and reader, ``vfl_embed.peer.requests.read_request_plan``), as ``train.embed`` does.
from vfl_embed.wire.protocol import CONFIG, IS_TEST, PLAN, POSITIONS, check_reply

TRAIN_SETUP = "train.setup"
QUERY_FORWARD = "query.forward"
TRAIN_BACKWARD = "train.backward"

BATCH, ROWS, GRADIENTS = "batch", "rows", "gradients"
ACTIVATIONS, METRICS, STEP = "activations", "metrics", "step"
SAVE_CHECKPOINT, KEEP_CHECKPOINT, LOAD_CHECKPOINT = (
    "save-checkpoint", "keep-checkpoint", "load-checkpoint")
# Keys of the run config that configure the peers' bottom models.
BOTTOM_KEYS = ("bottom-hidden-sizes", "cut-dim", "activation", "learning-rate", "seed")


def array(values: np.ndarray) -> Array:
    """Wrap a NumPy array for an ``ArrayRecord``."""
    return Array(np.ascontiguousarray(values))


# -------------------------------------------------------------- requests
def setup_request(node_id: int, positions: np.ndarray, is_test: np.ndarray,
                  config: dict) -> Message:
    """Build a ``train.setup`` message."""
    plan = ArrayRecord({POSITIONS: array(positions.astype(np.int64)),
                        IS_TEST: array(is_test.astype(np.uint8))})
    return Message(RecordDict({PLAN: plan, CONFIG: ConfigRecord(config)}),
                   dst_node_id=node_id, message_type=TRAIN_SETUP)


def forward_request(node_id: int, rows: np.ndarray, save: int = -1, keep: int = -1,
                    load: int = -1) -> Message:
    """Build a ``query.forward`` message (checkpoint fields: an epoch, or -1)."""
    config = ConfigRecord({SAVE_CHECKPOINT: save, KEEP_CHECKPOINT: keep,
                           LOAD_CHECKPOINT: load})
    return Message(RecordDict({BATCH: ArrayRecord({ROWS: array(rows.astype(np.int64))}),
                               CONFIG: config}),
                   dst_node_id=node_id, message_type=QUERY_FORWARD)


def backward_request(node_id: int, rows: np.ndarray, gradients: np.ndarray) -> Message:
    """Build a ``train.backward`` message."""
    batch = ArrayRecord({ROWS: array(rows.astype(np.int64)),
                         GRADIENTS: array(gradients.astype(np.float32))})
    return Message(RecordDict({BATCH: batch}), dst_node_id=node_id,
                   message_type=TRAIN_BACKWARD)


# ----------------------------------------------------------------- replies
def activations_reply(request: Message, activations: np.ndarray) -> Message:
    """Reply to ``query.forward``."""
    record = ArrayRecord({ACTIVATIONS: array(activations.astype(np.float32))})
    return Message(RecordDict({ACTIVATIONS: record}), reply_to=request)


def metrics_reply(request: Message, metrics: dict[str, float]) -> Message:
    """Reply to ``train.setup`` or ``train.backward``."""
    return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=request)


def read_activations(reply: Message, peer: str, n_rows: int, width: int) -> np.ndarray:
    """Validate a ``query.forward`` reply: ``(n_rows, width)`` finite float32."""
    check_reply(reply, peer)
    record = reply.content.get(ACTIVATIONS)
    if not isinstance(record, ArrayRecord) or ACTIVATIONS not in record:
        raise PeerReplyError(peer, f"reply lacks the array '{ACTIVATIONS}'")
    values = record[ACTIVATIONS].numpy()
    if values.dtype != np.float32 or values.shape != (n_rows, width):
        raise PeerReplyError(peer, f"activations must be ({n_rows}, {width}) float32, "
                                   f"got {values.shape} {values.dtype}")
    if not np.isfinite(values).all():
        raise PeerReplyError(peer, "sent non-finite activations")
    return values


def read_metrics(reply: Message, peer: str) -> dict[str, float]:
    """Validate a ``train.setup`` or ``train.backward`` reply; return its metrics."""
    check_reply(reply, peer)
    record = reply.content.get(METRICS)
    if not isinstance(record, MetricRecord):
        raise PeerReplyError(peer, f"reply lacks the '{METRICS}' record")
    return {key: float(value) for key, value in record.items()}


# ------------------------------------------------------------ accounting
def payload_bytes(messages: Iterable[Message]) -> int:
    """Bytes of the array data in ``messages`` (shape times item size, no headers)."""
    total = 0
    for message in messages:
        if message.has_error():
            continue
        for record in message.content.values():
            if isinstance(record, ArrayRecord):
                total += sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
                             for a in record.values())
    return total


def wire_bytes(messages: Iterable[Message]) -> int:
    """Bytes of ``messages`` serialized as Flower's protobuf ``Message``.

    All records, array headers and metadata: what the SuperLink stores and forwards.
    """
    return sum(message_to_proto(m).ByteSize() for m in messages)


@dataclass
class Traffic:
    """Exchanges, messages and bytes of one message type, in both directions."""

    rounds: int = 0
    messages: int = 0
    payload_down: int = 0
    payload_up: int = 0
    wire_down: int = 0
    wire_up: int = 0
    seconds: float = 0.0


@dataclass
class FastGrid:
    """A Grid whose ``send_and_receive`` polls for replies every ``poll_interval`` s.

    Flower's own ``send_and_receive`` sleeps between pulls: 0.1 s in
    simulation (``InMemoryGrid``), 3 s in deployment (``HttpGrid``), and
    split learning makes hundreds of exchanges. With ``poll_interval <= 0``
    the Grid's own method is used. Every exchange is counted in
    :attr:`traffic` under its message type, or under :attr:`tag` while that
    is set (measurements that are not part of training). Other attributes
    come from the wrapped Grid, so :func:`vfl_embed.server.exchange.exchange` takes
    this one.
    """

    grid: object
    poll_interval: float = 0.01
    traffic: dict[str, Traffic] = field(default_factory=dict)
    tag: str | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Push ``messages``, pull their replies until all came or ``timeout`` passed."""
        messages = list(messages)
        kind = self.tag or (messages[0].metadata.message_type if messages else "none")
        traffic = self.traffic.setdefault(kind, Traffic())
        traffic.rounds += 1
        started = time.perf_counter()
        replies = self._exchange(messages, timeout)
        traffic.seconds += time.perf_counter() - started
        # Counted after the push, which gives the messages their ids.
        traffic.messages += len(messages) + len(replies)
        traffic.payload_down += payload_bytes(messages)
        traffic.wire_down += wire_bytes(messages)
        traffic.payload_up += payload_bytes(replies)
        traffic.wire_up += wire_bytes(replies)
        return replies

    def _exchange(self, messages: list[Message], timeout: float | None) -> list[Message]:
        if self.poll_interval <= 0:
            return list(self.grid.send_and_receive(messages, timeout=timeout))
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        replies: list[Message] = []
        while waiting:
            pulled = list(self.grid.pull_messages(waiting))
            replies += pulled
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(self.poll_interval)
        return replies
