"""vfl_embed: vertical federated learning on shared autoencoder latents, on Flower.

The data path, module by module: ``data.tables`` (peer tables) ->
``peer.preprocessing`` and ``peer.autoencoder`` (peer encoders) ->
``wire.alignment`` and ``wire.protocol`` (what crosses the wire) ->
``server.strategy`` (the server's vertical strategy) -> ``server.downstream``
(the model on the joined latents) -> ``report``. The layout and its import
rules: ``docs/architecture.md``.

For notebooks and scripts: :func:`simulate`, :func:`predict`, :func:`paper`,
:func:`load_report` and :class:`RunReport` (from :mod:`vfl_embed.run.api`; the
``vfl-embed`` command line mirrors them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["RunReport", "__version__", "load_report", "paper", "predict", "simulate"]

if TYPE_CHECKING:
    from .run.api import RunReport, load_report, paper, predict, simulate


def __getattr__(name: str) -> Any:
    """Import the API on first use, so that ``import vfl_embed`` stays cheap.

    A Flower ClientApp or ServerApp process imports this package too; it
    needs neither pandas nor matplotlib from the API.
    """
    if name in __all__ and name != "__version__":
        from .run import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
