"""What a vertical run produces, and the labels a server may hold."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .downstream import DownstreamModel

__all__ = ["ServerLabels", "VerticalResult"]

@dataclass(frozen=True)
class ServerLabels:
    """Labels the server holds, keyed by the same pseudonyms the peers send.

    Attributes
    ----------
    pseudonyms : numpy.ndarray
        ``(n, 32)`` uint8 pseudonyms of the labelled entities.
    values : numpy.ndarray
        ``(n,)`` labels; numbers, or class codes when ``classes`` is set.
    classes : list[str]
        Class names for string labels, else empty.
    ids : numpy.ndarray | None
        ``(n,)`` the entities' IDs as text, if known; they never leave the
        server and key its prediction files.
    """

    pseudonyms: np.ndarray
    values: np.ndarray
    classes: list[str] = field(default_factory=list)
    ids: np.ndarray | None = None


@dataclass
class VerticalResult:
    """What one vertical run produced, filled in phase by phase.

    A run that stops keeps what its finished phases produced (``status``
    ``"failed"``, ``error`` and ``phase`` say where it stopped); the
    downstream fields stay empty until the learn phase ends. All metrics are
    on held-out entities unless named ``train_``. ``latent_blocks`` lists
    the peers in join order with their latent widths; ``latent_mean`` and
    ``latent_cov`` are the moments of the joined training latents (used to
    impute a missing peer's block at prediction). ``test_ids`` are the
    held-out entities' IDs when the server holds them. ``privacy`` holds
    each peer's privacy figures (its audit of the released latents and, for
    a noised release, its epsilon), apart from its other ``peer_metrics``.
    ``label_privacy`` says which training labels went to the peers:
    ``labels_sent`` is ``"none"``, ``"clear"`` or ``"label-dp"``, the last
    with the statement of :func:`~vfl_embed.privacy.label_dp.private_labels`.
    """

    status: str = "running"
    phase: str = "align"
    error: str = ""
    task: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    peer_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    privacy: dict[str, dict[str, float]] = field(default_factory=dict)
    label_privacy: dict = field(default_factory=dict)
    peer_rows: dict[str, int] = field(default_factory=dict)
    n_entities: int = 0
    n_train: int = 0
    n_test: int = 0
    classes: list[str] = field(default_factory=list)
    y_test: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_pred: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_proba: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    test_ids: np.ndarray | None = None
    latent_blocks: list[tuple[str, int]] = field(default_factory=list)
    latent_mean: np.ndarray = field(default_factory=lambda: np.empty(0))
    latent_cov: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    projection: dict = field(default_factory=dict)
    model: DownstreamModel | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_received: dict[str, int] = field(default_factory=dict)
    dropped_peers: dict[str, str] = field(default_factory=dict)
    unseen_class_test_rows: int = 0


