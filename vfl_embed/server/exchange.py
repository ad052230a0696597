"""One phase's round trip with the peers: send, pair the replies, validate them.

The strategy decides what a failed peer means for the run (stop, or go on
without it); this module only finds out, for every peer asked, whether it
gave a usable answer and, if not, why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import TypeVar

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from ..errors import PeerReplyError
from ..wire import protocol

__all__ = ["exchange", "exchange_all", "wait_for_nodes"]

T = TypeVar("T")


def exchange(
    grid: Grid,
    messages: list[Message],
    read: Callable[[int, Message], T],
    *,
    phase: str,
    timeout: float,
    names: Mapping[int, str],
) -> tuple[dict[int, T], dict[int, PeerReplyError]]:
    """Send ``messages`` and validate every reply with ``read``.

    Parameters
    ----------
    grid : Grid
        The Grid to reach the peers.
    messages : list[Message]
        At most one message per destination node.
    read : Callable[[int, Message], T]
        Validates one node's reply and returns what the strategy keeps of
        it; raises :class:`~vfl_embed.errors.PeerReplyError` otherwise.
    phase : str
        Name of the phase, for messages (``"alignment"``, ``"embed"``, ...).
    timeout : float
        Seconds to wait for the replies.
    names : Mapping[int, str]
        Peer names by node id; unknown nodes are called ``"node <id>"``.

    Returns
    -------
    tuple[dict[int, T], dict[int, PeerReplyError]]
        By node id: what ``read`` returned for each usable reply, and why
        each other node asked has no usable reply.
    """
    replies = grid.send_and_receive(messages, timeout=timeout)

    def name(node_id: int) -> str:
        return names.get(node_id, f"node {node_id}")

    # Message ids are assigned when the grid pushes the messages.
    sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
    paired, failures = _pair(replies, sent_to, phase, name)
    accepted: dict[int, T] = {}
    for node_id, reply in paired.items():
        try:
            accepted[node_id] = read(node_id, reply)
        except PeerReplyError as err:
            failures[node_id] = err
    silent = (f"did not answer the {phase} phase within {timeout:.0f} s, or the "
              "SuperLink lost it")
    for node_id in sent_to.values():
        if node_id not in accepted and node_id not in failures:
            failures[node_id] = PeerReplyError(name(node_id), silent)
    return accepted, failures


def exchange_all(
    grid: Grid,
    messages: list[Message],
    read: Callable[[int, Message], T],
    *,
    phase: str,
    timeout: float,
    names: Mapping[int, str],
) -> dict[int, T]:
    """Run :func:`exchange` where every peer must answer.

    Returns what ``read`` returned, by node id; raises
    :class:`~vfl_embed.errors.PeerReplyError` naming every failed peer.
    """
    accepted, failures = exchange(grid, messages, read, phase=phase, timeout=timeout,
                                  names=names)
    if failures:
        raise PeerReplyError.of_peers(failures.values())
    return accepted


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Wait until ``count`` SuperNodes are connected; return the connected node ids.

    ``count = 0`` takes the nodes connected now (at least one). Fewer than
    ``count`` are returned if the timeout passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if node_ids and len(node_ids) >= count:
            if not count:
                log(INFO, "num-peers=0: going on with the %d SuperNodes connected "
                    "now; set num-peers to wait for all", len(node_ids))
            return node_ids
        if time.monotonic() > deadline:
            return node_ids
        time.sleep(1.0)


def _pair(
    replies: Iterable[Message],
    sent_to: Mapping[str, int],
    phase: str,
    name: Callable[[int], str],
) -> tuple[dict[int, Message], dict[int, PeerReplyError]]:
    """Match replies to the messages they answer, by ``reply_to_message_id``.

    A reply to no message of this phase is ignored: it cannot be told apart
    from a stray or forged one, and it cannot stand for any peer. A second
    reply to one message makes that peer's answer ambiguous, so it fails.
    """
    paired: dict[int, Message] = {}
    failures: dict[int, PeerReplyError] = {}
    for reply in replies:
        node_id = sent_to.get(reply.metadata.reply_to_message_id)
        source = reply.metadata.src_node_id
        if node_id is None:
            log(WARNING, "[%s] ignored a reply from %s that answers no message of "
                "this phase", phase, name(source))
            continue
        if node_id in paired or node_id in failures:
            paired.pop(node_id, None)
            failures[node_id] = PeerReplyError(name(node_id),
                                               f"answered the {phase} request twice")
        elif protocol.is_unreachable(reply):
            continue  # the SuperLink answers for a node it lost: counted as silent
        elif source != node_id:
            failures[node_id] = PeerReplyError(
                name(node_id), f"its {phase} reply came from {name(source)}")
        else:
            paired[node_id] = reply
    return paired, failures
