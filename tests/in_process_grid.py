"""vfl_embed's in-process Grid with a hook that tampers with the replies.

The ``tamper`` hook changes the list of replies the strategy receives, to
play faults of the network or the SuperLink (stray, repeated or forged
replies) that a peer's code cannot produce. :func:`two_peer_grid` builds the
small grid of raw-column peers that the request-checking tests talk to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
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


def two_peer_grid(directory: Path, n_rows: int, *, label: bool) -> in_process.InProcessGrid:
    """Two simulated peers over ``n_rows`` entities; raw columns, so no TensorFlow.

    With ``label``, peer-0 (node 101) holds the label column ``y``.
    """
    from vfl_embed.client_app import app as client_app

    rng = np.random.default_rng(0)
    paths = []
    for peer in range(2):
        frame = pd.DataFrame(rng.normal(size=(n_rows, 4)),
                             columns=[f"p{peer}c{j}" for j in range(4)])
        frame.insert(0, "id", [f"E{k:03d}" for k in range(n_rows)])
        if label and peer == 0:
            frame["y"] = rng.normal(size=n_rows)
        paths.append(str(directory / f"peer-{peer}.csv"))
        frame.to_csv(paths[-1], index=False)
    config = {"data-paths": ";".join(paths), "id-column": "id",
              "alignment-secret": "secret-of-the-peers", "encoder": "none",
              "audit": False, "seed": 1}
    if label:
        config |= {"target": "y", "label-source": "peer"}
    return in_process.InProcessGrid(client_app, config, num_peers=2)
