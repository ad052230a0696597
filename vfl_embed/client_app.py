"""The ClientApp: one handler per message type of :mod:`vfl_embed.wire.protocol`."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from logging import ERROR

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from .errors import PeerDataError
from .peer.context import peer_from_context
from .peer.ledger import RunLedger
from .peer.message_log import message_log_mod
from .peer.node_config import peer_name
from .peer.peer import Peer
from .peer.requests import read_request_plan
from .wire import protocol
from .wire.protocol import parse_run_id

# TensorFlow's C++ start-up chatter would bury the run's own progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

app = ClientApp(mods=[message_log_mod])

Handler = Callable[[Message, Peer, Context], Message]


def _context_peer(context: Context) -> Peer:
    return peer_from_context(context.node_config, context.run_config)


def peer_handler(
    handler: Handler, build_peer: Callable[[Context], Peer] = _context_peer
) -> Callable[[Message, Context], Message]:
    """Give ``handler`` the node's peer; turn every error into an error reply.

    An input error's message is written to be sent (it names files, columns
    and lines, never values). Any other exception's text may quote the
    peer's data, so the server only learns its type; the peer logs it all.

    Parameters
    ----------
    handler : Callable[[Message, Peer, Context], Message]
        The message handler proper.
    build_peer : Callable[[Context], Peer] (default: from the node and run config)
        Builds the peer for each message; another app may cache it (the
        split-learning benchmark's peers answer hundreds of messages).
    """

    @wraps(handler)
    def wrapped(message: Message, context: Context) -> Message:
        try:
            return handler(message, build_peer(context), context)
        except PeerDataError as err:
            return Message(Error(protocol.PEER_INPUT_ERROR, str(err)),
                           reply_to=message)
        except Exception as err:  # noqa: BLE001 - see the docstring
            name = peer_name(context.node_config)
            log(ERROR, "%s: %s failed", name, message.metadata.message_type,
                exc_info=err)
            reason = (f"{name}: {type(err).__name__} while handling "
                      f"{message.metadata.message_type}; details in the peer's log")
            return Message(Error(protocol.PEER_INTERNAL_ERROR, reason), reply_to=message)

    return wrapped


@app.query("pseudonyms")
@peer_handler
def pseudonyms(message: Message, peer: Peer, context: Context) -> Message:
    """Send the keyed pseudonyms of the peer's IDs."""
    return protocol.pseudonyms_reply(
        message, peer.name, peer.pseudonyms(), peer.table.labels is not None
    )


@app.query("blind")
@peer_handler
def blind(message: Message, peer: Peer, context: Context) -> Message:
    """Blind another peer's group elements with this peer's key (PSI alignment)."""
    checked_config(message, peer)
    return protocol.blind_reply(message, peer.blind(protocol.read_points_request(message)))


@app.query("labels")
@peer_handler
def labels(message: Message, peer: Peer, context: Context) -> Message:
    """Send the labels of the aligned rows (label-holding peer only)."""
    checked_config(message, peer)
    plan = read_request_plan(message, peer.name, len(peer.table))
    ledger(peer, context).keep_to_aligned(plan.positions)
    values, classes = peer.labels(plan.positions)
    return protocol.labels_reply(message, values, classes)


@app.train("embed")
@peer_handler
def embed(message: Message, peer: Peer, context: Context) -> Message:
    """Fit the encoder on the training rows and send the latents of all rows.

    The fitted preprocessing and encoder are kept under this run's ID. A run
    releases once, within its aligned rows and the peer's policy.
    """
    config = checked_config(message, peer)
    plan = read_request_plan(message, peer.name, len(peer.table))
    if plan.is_test is None:
        raise PeerDataError(f"{peer.name}: the embed request lacks its train/test plan")
    run = ledger(peer, context)
    run.keep_to_aligned(plan.positions)
    run.check_release()
    run.check_rows(len(plan.positions), len(peer.table))
    latents, metrics = peer.embed(plan.positions, plan.is_test, config,
                                  plan.train_targets, context.run_id)
    run.record_release()
    run.record_rows(len(latents))
    return protocol.latents_reply(message, latents, metrics)


@app.query("encode")
@peer_handler
def encode(message: Message, peer: Peer, context: Context) -> Message:
    """Encode the requested rows with the frozen encoder of a training run."""
    config = checked_config(message, peer)
    train_run = parse_run_id(config.get(protocol.TRAIN_RUN, ""), peer.name)
    plan = read_request_plan(message, peer.name, len(peer.table))
    run = ledger(peer, context)
    run.check_rows(len(plan.positions), len(peer.table))
    latents, metrics = peer.encode(plan.positions, train_run)
    run.record_rows(len(latents))
    return protocol.latents_reply(message, latents, metrics)


def ledger(peer: Peer, context: Context) -> RunLedger:
    """Return the record of what this run has asked of ``peer`` so far."""
    return RunLedger(context.state, context.run_id, peer.name, peer.policy)


def checked_config(message: Message, peer: Peer) -> dict:
    """Return the request's config once its fingerprint matches the peer's table.

    Raises :class:`~vfl_embed.errors.PeerDataError` (an input error the server
    may see) when the peer's table changed since alignment.
    """
    if protocol.CONFIG not in message.content.config_records:
        raise PeerDataError(f"{peer.name}: the request carries no fingerprint")
    config = dict(message.content[protocol.CONFIG])
    if config.get(protocol.FINGERPRINT) != protocol.fingerprint(peer.pseudonyms()):
        raise PeerDataError(
            f"{peer.name}: the data changed since alignment; restart the run"
        )
    return config
