"""The app in one process, without Flower's runtime: the federation-overhead baseline.

:func:`run_in_process` calls the ServerApp's own ``main`` with an
:class:`InProcessGrid`, which hands every message to the peers' ClientApp in
this same process, serialized and parsed as Flower does between processes.
Data, models, seeds and report are those of a ``flwr run`` with the same run
config and SuperNode count; what the in-process run leaves out is Flower's
runtime (the SuperLink, the simulation engine and its Ray actors, gRPC and
the processes they start). Peers are handled one after another, as a
simulation with Flower's default of 2 cores per SuperNode does on 2 cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from ..client_app import app as client_app
from ..deploy.flwr_commands import PROJECT_ROOT
from ..peer.runtime import simulated_runtime
from ..report.folders import training_run_directory
from ..server_app import main as server_main

__all__ = ["InProcessGrid", "over_the_wire", "run_in_process"]


def over_the_wire(message: Message) -> Message:
    """Serialize and parse a message as Flower does between processes."""
    return message_from_proto(message_to_proto(message))


class InProcessGrid(Grid):
    """Deliver messages to ``app`` for ``num_peers`` nodes in this process.

    Node ids are ``101, 102, ...``; node ``100 + k + 1`` gets the node config
    of simulation partition ``k``, as Flower's simulation gives it.

    Parameters
    ----------
    app : ClientApp
        The peers' ClientApp.
    run_config : Mapping[str, object]
        The whole run config (defaults included) every node's context holds.
    num_peers : int
        Number of nodes.
    run_id : int (default: 7)
        Run id of the nodes' contexts.
    """

    def __init__(
        self, app: ClientApp, run_config: Mapping[str, object], num_peers: int,
        run_id: int = 7,
    ) -> None:
        self.app = app
        self.contexts = {
            101 + k: Context(run_id=run_id, node_id=101 + k, state=RecordDict(),
                             node_config={"partition-id": k, "num-partitions": num_peers},
                             run_config=dict(run_config))
            for k in range(num_peers)
        }

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Handle every message at its node, one after another; return the replies."""
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            context = self.contexts.get(message.metadata.dst_node_id)
            if context is not None:
                reply = self._handle(over_the_wire(message), context)
                replies.append(over_the_wire(reply))
        return replies

    def _handle(self, request: Message, context: Context) -> Message:
        try:
            with simulated_runtime():  # these peers are simulated, as in flwr's engine
                return self.app(request, context)
        except Exception as err:  # noqa: BLE001 - Flower turns it into an Error reply
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, repr(err)),
                           reply_to=request)

    def get_node_ids(self) -> Iterable[int]:
        """Return the node ids."""
        return list(self.contexts)

    # The strategy uses only the two calls above.
    def set_run(self, run: object) -> None:  # noqa: D102
        raise NotImplementedError

    @property
    def run(self) -> object:  # noqa: D102
        raise NotImplementedError

    def create_message(self, *args: object, **kwargs: object) -> Message:  # noqa: D102
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        raise NotImplementedError


def run_in_process(
    run_config: Mapping[str, object], num_peers: int, run_id: int | None = None
) -> Path:
    """Run the app's ServerApp and ``num_peers`` peers in this process.

    It sets this process's Flower task identity to the ServerApp's, as
    Flower's own runtimes do for the process they start, so run it in a
    process of its own (the federation-overhead benchmark spawns one).

    Parameters
    ----------
    run_config : Mapping[str, object]
        Run-config overrides, as for ``flwr run --run-config``; the app's
        ``pyproject.toml`` gives the defaults.
    num_peers : int
        Number of peers (SuperNodes of the simulation).
    run_id : int | None (default: None)
        Run id of the report folder; from the clock if None.

    Returns
    -------
    Path
        The run's ``report.json``.
    """
    config = get_fused_config_from_dir(PROJECT_ROOT, dict(run_config))
    run_id = run_id if run_id is not None else time.time_ns() % 2**53
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    grid = InProcessGrid(client_app, config, num_peers, run_id)
    server_main(grid, Context(run_id=run_id, node_id=SUPERLINK_NODE_ID, state=RecordDict(),
                              node_config={}, run_config=config))
    return training_run_directory(config, run_id) / "report.json"
