"""The ClientApp: a peer's bottom model, trained one mini-batch at a time.

The peer's table is the one vfl_embed's simulation gives it
(:func:`vfl_embed.peer.peer_from_context`), its preprocessing vfl_embed's
:class:`~vfl_embed.peer.preprocessing.Preprocessor` fitted on the training rows. Weights,
Adam's state and checkpoints live in the node's ``Context.state``, so each
message may run in another process (as Flower allows); the encoded rows and
the Keras model are only cached per process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from vfl_embed import client_app as vfl_client
from vfl_embed.client_app import checked_config, peer_handler
from vfl_embed.errors import PeerDataError
from vfl_embed.peer.context import peer_from_context
from vfl_embed.peer.peer import Peer
from vfl_embed.peer.preprocessing import Preprocessor
from vfl_embed.peer.requests import read_request_plan
from vfl_embed.wire import protocol

from . import wire
from .models import Trainable, build_mlp, parse_sizes, peer_seed

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

app = ClientApp()

# Records of Context.state.
_PLAN, _CONFIG = "split-plan", "split-config"
_WEIGHTS, _OPTIMIZER, _CHECKPOINT = "split-weights", "split-optimizer", "split-checkpoint-"


@dataclass
class _Session:
    """What a peer derives from its table and the setup request (cached per process)."""

    x: np.ndarray  # encoded aligned rows, in the server's order
    bottom: Trainable


_PEERS: dict[tuple[int, int], Peer] = {}
_SESSIONS: dict[tuple[int, int], _Session] = {}

Handler = Callable[[Message, Peer, Context], Message]


def _cached_peer(context: Context) -> Peer:
    """Build the node's peer once per run and process (not once per message)."""
    key = (context.run_id, context.node_id)
    if key not in _PEERS:
        _PEERS[key] = peer_from_context(context.node_config, context.run_config)
    return _PEERS[key]


def _as_peer_handler(handler: Handler) -> Callable[[Message, Context], Message]:
    return peer_handler(handler, _cached_peer)


@app.query("pseudonyms")
@_as_peer_handler
def pseudonyms(message: Message, peer: Peer, context: Context) -> Message:
    """Send the keyed pseudonyms of the peer's IDs (vfl_embed's alignment)."""
    return protocol.pseudonyms_reply(message, peer.name, peer.pseudonyms(),
                                     peer.table.labels is not None)


# vfl_embed's own handler, with this app's cached peer.
app.query("labels")(_as_peer_handler(vfl_client.labels.__wrapped__))


@app.train("setup")
@_as_peer_handler
def setup(message: Message, peer: Peer, context: Context) -> Message:
    """Fit the preprocessing on the training rows; initialize the bottom model."""
    config = checked_config(message, peer)
    plan = read_request_plan(message, peer.name, len(peer.table))
    positions, is_test = plan.positions, plan.is_test
    if len(positions) == 0 or is_test is None:
        raise PeerDataError(f"{peer.name}: the server sent no rows or no train/test plan")
    context.state[_PLAN] = ArrayRecord({wire.POSITIONS: wire.array(positions),
                                        wire.IS_TEST: wire.array(is_test.astype(np.uint8))})
    context.state[_CONFIG] = ConfigRecord(config)
    session = _build_session(peer, context)
    _save(session.bottom, context)
    return wire.metrics_reply(message, {
        "n-features": float(session.x.shape[1]),
        "n-parameters": float(session.bottom.model.count_params()),
    })


@app.query("forward")
@_as_peer_handler
def forward(message: Message, peer: Peer, context: Context) -> Message:
    """Send the bottom model's activations of the requested rows.

    ``load-checkpoint`` computes them with a checkpoint's weights;
    ``save-checkpoint`` keeps the current weights as one.
    """
    session = _session(peer, context)
    rows = _rows(message, len(session.x), peer)
    config = message.content[wire.CONFIG]
    load, save = int(config[wire.LOAD_CHECKPOINT]), int(config[wire.SAVE_CHECKPOINT])
    if load >= 0:
        if f"{_CHECKPOINT}{load}" not in context.state:
            raise PeerDataError(f"{peer.name}: holds no checkpoint of epoch {load}")
        session.bottom.model.set_weights(
            context.state[f"{_CHECKPOINT}{load}"].to_numpy_ndarrays())
    activations = session.bottom(session.x[rows])
    if save >= 0:
        keep = {f"{_CHECKPOINT}{save}", f"{_CHECKPOINT}{int(config[wire.KEEP_CHECKPOINT])}"}
        for name in [n for n in context.state if n.startswith(_CHECKPOINT)]:
            if name not in keep:
                del context.state[name]
        context.state[f"{_CHECKPOINT}{save}"] = ArrayRecord(
            numpy_ndarrays=session.bottom.model.get_weights())
    return wire.activations_reply(message, activations)


@app.train("backward")
@_as_peer_handler
def backward(message: Message, peer: Peer, context: Context) -> Message:
    """Apply the server's gradients w.r.t. this peer's activations: one Adam step."""
    session = _session(peer, context)
    rows = _rows(message, len(session.x), peer)
    gradients = message.content[wire.BATCH][wire.GRADIENTS].numpy()
    width = session.bottom.model.output_shape[-1]
    if gradients.shape != (len(rows), width) or not np.isfinite(gradients).all():
        raise PeerDataError(f"{peer.name}: gradients must be ({len(rows)}, {width}) "
                            f"finite values, got {gradients.shape}")
    session.bottom.step_from_output_gradients(session.x[rows], gradients)
    _save(session.bottom, context)
    return wire.metrics_reply(message, {wire.STEP: float(session.bottom.steps)})


# ------------------------------------------------------------------ helpers
def _build_session(peer: Peer, context: Context) -> _Session:
    """Encode the aligned rows and build the bottom model from the stored setup."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    plan, config = context.state[_PLAN], context.state[_CONFIG]
    positions = plan[wire.POSITIONS].numpy()
    train = plan[wire.IS_TEST].numpy() == 0
    frame = peer.features(positions)
    preprocessor = Preprocessor(peer=peer.name, source=peer.table.source).fit(frame[train])
    x = preprocessor.transform(frame)
    model = build_mlp(x.shape[1], parse_sizes(config["bottom-hidden-sizes"]),
                      int(config["cut-dim"]), str(config["activation"]),
                      peer_seed(int(config["seed"]), peer.name), name="bottom")
    session = _Session(x, Trainable(model, float(config["learning-rate"])))
    _SESSIONS[(context.run_id, context.node_id)] = session
    return session


def _session(peer: Peer, context: Context) -> _Session:
    """Return the peer's session, with the weights and optimizer state of its state."""
    if _WEIGHTS not in context.state:
        raise PeerDataError(f"{peer.name}: asked to train before setup")
    session = _SESSIONS.get((context.run_id, context.node_id)) or _build_session(
        peer, context)
    session.bottom.set_state(context.state[_WEIGHTS].to_numpy_ndarrays(),
                             context.state[_OPTIMIZER].to_numpy_ndarrays())
    return session


def _save(bottom: Trainable, context: Context) -> None:
    weights, optimizer = bottom.get_state()
    context.state[_WEIGHTS] = ArrayRecord(numpy_ndarrays=weights)
    context.state[_OPTIMIZER] = ArrayRecord(numpy_ndarrays=optimizer)


def _rows(message: Message, n_rows: int, peer: Peer) -> np.ndarray:
    rows = message.content[wire.BATCH][wire.ROWS].numpy()
    if rows.ndim != 1 or rows.dtype != np.int64 or len(rows) == 0 or (
            rows.min() < 0 or rows.max() >= n_rows):
        raise PeerDataError(f"{peer.name}: the server sent rows outside 0..{n_rows - 1}")
    return rows
