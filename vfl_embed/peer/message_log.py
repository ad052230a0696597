"""A message log: a peer keeps a copy of everything it sends and receives.

An organization can point ``message-log-dir`` (node config) or the
``VFL_EMBED_MESSAGE_LOG`` environment variable at a directory (in simulation
also the run config's ``message-log-dir``); every reply its ClientApp sends
is then written there before it leaves, and every request it receives
(arrays as ``.npz``, config and metric records as JSON, with the peer's
name and the direction). The privacy tests read the same log to check that
no raw value or raw ID is ever sent, and what the server asked each peer.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message

from .node_config import peer_name
from .runtime import is_simulated

__all__ = ["ENV_VAR", "LoggedMessage", "message_log_mod", "read_message_log"]

ENV_VAR = "VFL_EMBED_MESSAGE_LOG"


class LoggedMessage(dict):
    """One logged message.

    Keys: ``message_type``, ``direction`` (``"sent"`` or ``"received"``),
    ``peer``, ``arrays`` and ``records``.
    """


def message_log_mod(message: Message, context: Context, call_next) -> Message:  # noqa: ANN001
    """Flower mod writing every request and reply of this ClientApp to the message log."""
    directory = _log_directory(context)
    peer = peer_name(context.node_config)
    if directory:
        _write(Path(directory), message.metadata.message_type, message, "received", peer)
    reply = call_next(message, context)
    if directory:
        _write(Path(directory), message.metadata.message_type, reply, "sent", peer)
    return reply


def _log_directory(context: Context) -> str:
    node = context.node_config
    if node.get("message-log-dir"):
        return str(node["message-log-dir"])
    # The run config comes from the server: honoured only in simulation,
    # where server and peers are one machine.
    if is_simulated() and context.run_config.get("message-log-dir"):
        return str(context.run_config["message-log-dir"])
    return os.environ.get(ENV_VAR, "")


def _write(
    directory: Path, message_type: str, message: Message, direction: str, peer: str
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{message_type}-{direction}-{uuid.uuid4().hex}"
    arrays, records = {}, {}
    if message.has_error():
        records["error"] = {"code": message.error.code, "reason": message.error.reason}
    else:
        for name, record in message.content.items():
            if isinstance(record, ArrayRecord):
                arrays |= {f"{name}.{key}": array.numpy() for key, array in record.items()}
            else:
                records[name] = {k: _jsonable(v) for k, v in record.items()}
    np.savez(directory / f"{stem}.npz", **arrays)
    (directory / f"{stem}.json").write_text(json.dumps(
        {"message_type": message_type, "direction": direction, "peer": peer,
         "records": records}, default=str))


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return value


def read_message_log(directory: str | Path, direction: str = "sent") -> list[LoggedMessage]:
    """Read back the messages a message log holds.

    ``direction`` picks the replies the peers ``"sent"`` (default) or the
    requests they ``"received"``.
    """
    messages = []
    for meta in sorted(Path(directory).glob("*.json")):
        header = json.loads(meta.read_text())
        if header["direction"] != direction:
            continue
        with np.load(meta.parent / f"{meta.stem}.npz") as arrays:
            messages.append(LoggedMessage(
                message_type=header["message_type"], direction=direction,
                peer=header["peer"], records=header["records"],
                arrays={k: arrays[k] for k in arrays.files},
            ))
    return messages
