"""An outbound message log: a peer keeps a copy of everything it sends.

An organization can point ``message-log-dir`` (node config) or the
``VFL_EMBED_MESSAGE_LOG`` environment variable at a directory (in simulation
also the run config's ``message-log-dir``); every reply its ClientApp sends
is then written there (arrays as ``.npz``, config and
metric records as JSON) before it leaves. The privacy tests read the same
log to check that no raw value or raw ID is ever sent.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message

__all__ = ["ENV_VAR", "LoggedReply", "message_log_mod", "read_message_log"]

ENV_VAR = "VFL_EMBED_MESSAGE_LOG"


class LoggedReply(dict):
    """One logged reply: ``message_type``, ``arrays`` and ``records``."""


def message_log_mod(message: Message, context: Context, call_next) -> Message:  # noqa: ANN001
    """Flower mod writing every reply of this ClientApp to the message log."""
    reply = call_next(message, context)
    directory = _log_directory(context)
    if directory:
        _write(Path(directory), message.metadata.message_type, reply)
    return reply


def _log_directory(context: Context) -> str:
    node = context.node_config
    if node.get("message-log-dir"):
        return str(node["message-log-dir"])
    # The run config comes from the server: honoured only in simulation,
    # where server and peers are one machine.
    if "partition-id" in node and context.run_config.get("message-log-dir"):
        return str(context.run_config["message-log-dir"])
    return os.environ.get(ENV_VAR, "")


def _write(directory: Path, message_type: str, reply: Message) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{message_type}-{uuid.uuid4().hex}"
    arrays, records = {}, {}
    if reply.has_error():
        records["error"] = {"code": reply.error.code, "reason": reply.error.reason}
    else:
        for name, record in reply.content.items():
            if isinstance(record, ArrayRecord):
                arrays |= {f"{name}.{key}": array.numpy() for key, array in record.items()}
            else:
                records[name] = {k: _jsonable(v) for k, v in record.items()}
    np.savez(directory / f"{stem}.npz", **arrays)
    (directory / f"{stem}.json").write_text(json.dumps(
        {"message_type": message_type, "records": records}, default=str))


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return value


def read_message_log(directory: str | Path) -> list[LoggedReply]:
    """Read back every reply in a message log directory."""
    replies = []
    for meta in sorted(Path(directory).glob("*.json")):
        header = json.loads(meta.read_text())
        with np.load(meta.parent / f"{meta.stem}.npz") as arrays:
            replies.append(LoggedReply(
                message_type=header["message_type"], records=header["records"],
                arrays={k: arrays[k] for k in arrays.files},
            ))
    return replies
