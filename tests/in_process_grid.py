"""A Flower Grid that runs a real ClientApp in this process, for fast tests.

Each message is serialized and parsed the way Flower sends it, handled by
the ClientApp with the node's own Context, and its reply parsed back. A
``tamper`` hook can then change the list of replies the strategy receives,
to play faults of the network or the SuperLink (stray, repeated or forged
replies) that a peer's code cannot produce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid

Tamper = Callable[[list[Message], list[Message]], list[Message]]


def over_the_wire(message: Message) -> Message:
    """Serialize and parse a message as Flower does between processes."""
    return message_from_proto(message_to_proto(message))


class InProcessGrid(Grid):
    """Deliver messages to ``app`` for ``num_peers`` simulated nodes.

    Node ids are ``101, 102, ...``; node ``100 + k + 1`` is partition ``k``.
    """

    def __init__(
        self,
        app: ClientApp,
        run_config: dict,
        num_peers: int,
        tamper: Tamper | None = None,
    ) -> None:
        self.app = app
        self.tamper = tamper
        self.contexts = {
            101 + k: Context(run_id=7, node_id=101 + k, state=RecordDict(),
                             node_config={"partition-id": k, "num-partitions": num_peers},
                             run_config=dict(run_config))
            for k in range(num_peers)
        }

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Handle every message at its node and return the replies."""
        messages = list(messages)
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            request = over_the_wire(message)
            context = self.contexts.get(message.metadata.dst_node_id)
            if context is not None:
                replies.append(over_the_wire(self._handle(request, context)))
        return self.tamper(messages, replies) if self.tamper else replies

    def _handle(self, request: Message, context: Context) -> Message:
        try:
            return self.app(request, context)
        except Exception as err:  # noqa: BLE001 - Flower turns it into an Error reply
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, repr(err)),
                           reply_to=request)

    def get_node_ids(self) -> Iterable[int]:
        """The simulated node ids."""
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
