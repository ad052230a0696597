"""vfl_embed's in-process Grid with a hook that tampers with the replies.

The ``tamper`` hook changes the list of replies the strategy receives, to
play faults of the network or the SuperLink (stray, repeated or forged
replies) that a peer's code cannot produce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Message
from flwr.clientapp import ClientApp

from vfl_embed.testing import in_process

Tamper = Callable[[list[Message], list[Message]], list[Message]]
over_the_wire = in_process.over_the_wire


class InProcessGrid(in_process.InProcessGrid):
    """The in-process grid, with replies that ``tamper`` may change."""

    def __init__(self, app: ClientApp, run_config: dict, num_peers: int,
                 tamper: Tamper | None = None) -> None:
        super().__init__(app, run_config, num_peers)
        self.tamper = tamper

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        return self.tamper(messages, replies) if self.tamper else replies
