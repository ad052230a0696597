"""A ClientApp whose peers misbehave on purpose, for the robustness tests.

It runs the real handlers of :mod:`vfl_embed.client_app` and then spoils the
reply of the peers named in the run config's ``faults``, e.g.
``faults = "peer-2=nan-latents;peer-3=crash"``. Used in process (see
``in_process_grid.py``) and as the ClientApp of a real Flower simulation
(see ``faulty_app``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from unittest import mock

import numpy as np
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from vfl_embed import client_app as honest
from vfl_embed.peer.peer import Peer
from vfl_embed.wire import protocol

Spoiler = Callable[[Message, Context], Message]


def _latents(change: Callable[[np.ndarray], np.ndarray]) -> Spoiler:
    """Replace the latents of an embed reply by ``change(latents)``."""

    def spoil(reply: Message, context: Context) -> Message:
        record = reply.content[protocol.LATENTS]
        values = record[protocol.LATENTS].numpy()
        record[protocol.LATENTS] = Array(np.ascontiguousarray(change(values)))
        return reply

    return spoil


def _nan(values: np.ndarray) -> np.ndarray:
    values = values.copy()
    values[len(values) // 2, 0] = np.nan
    return values


def _crash(reply: Message, context: Context) -> Message:
    raise RuntimeError("the peer's process crashed")


def _late(reply: Message, context: Context) -> Message:
    time.sleep(float(context.run_config["timeout"]) + 10)
    return reply


# Fault name -> spoiler of the embed reply.
FAULTS: dict[str, Spoiler] = {
    "nan-latents": _latents(_nan),
    "extra-rows": _latents(lambda v: np.concatenate([v, v[:5]])),
    "missing-rows": _latents(lambda v: v[:-1]),
    "float64": _latents(lambda v: v.astype(np.float64)),
    "huge": _latents(lambda v: v * 1e9),
    "no-latents": lambda reply, context: _drop_record(reply, protocol.LATENTS),
    "crash": _crash,
    "late": _late,
}


def _drop_record(reply: Message, name: str) -> Message:
    del reply.content[name]
    return reply


def fault_of(context: Context) -> str:
    """The fault the run config assigns to this node's peer, or ``""``."""
    name = f"peer-{context.node_config.get('partition-id', '')}"
    for item in str(context.run_config.get("faults", "")).split(";"):
        peer, _, fault = item.partition("=")
        if peer.strip() == name:
            return fault.strip()
    return ""


def _bug(*args: object, **kwargs: object) -> None:
    raise ValueError("a bug whose message quotes the peer's data: x9q")


def misbehave(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A Flower mod: answer honestly, then spoil this peer's embed reply.

    The fault ``bug`` instead makes the peer's own embedding raise an
    unexpected exception whose text quotes a value.
    """
    fault = fault_of(context)
    if fault == "bug" and message.metadata.message_type == protocol.TRAIN_EMBED:
        with mock.patch.object(Peer, "embed", _bug):
            return call_next(message, context)
    reply = call_next(message, context)
    if fault and message.metadata.message_type == protocol.TRAIN_EMBED:
        return FAULTS[fault](reply, context)
    return reply


app = ClientApp(mods=[misbehave])
app.query("pseudonyms")(honest.pseudonyms)
app.query("labels")(honest.labels)
app.train("embed")(honest.embed)
