"""Whether a ClientApp runs in a simulation: decided by the runtime, never by a config.

A deployed SuperNode's node config may carry any key (a ``partition-id``
too), and a simulated peer takes its data file, secret and folders from the
run config, which the server writes. So a peer is simulated only inside
Flower's simulation runtime (its ClientApp runs in a Ray actor) or inside
:func:`simulated_runtime`, which the in-process test harnesses enter;
everything else is a deployment.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["is_simulated", "simulated_runtime"]

_IN_PROCESS_SIMULATION: ContextVar[bool] = ContextVar("vfl_embed_simulation", default=False)


@contextmanager
def simulated_runtime() -> Iterator[None]:
    """Treat ClientApp calls made inside this block as simulated peers.

    For harnesses that run the ClientApp in the caller's process
    (:mod:`vfl_embed.testing.in_process`); Flower's own simulation needs no
    such block.
    """
    token = _IN_PROCESS_SIMULATION.set(True)
    try:
        yield
    finally:
        _IN_PROCESS_SIMULATION.reset(token)


def is_simulated() -> bool:
    """Tell whether this ClientApp runs in a simulation, from the runtime alone."""
    if _IN_PROCESS_SIMULATION.get():
        return True
    # Flower's simulation runs every ClientApp in a Ray actor; a deployed
    # SuperNode never imports Ray (and asking an idle Ray would start one).
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    return ray.get_runtime_context().get_actor_id() is not None


