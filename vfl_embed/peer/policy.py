"""A peer's own privacy policy: the limits every request from the server must keep.

The organization that runs a SuperNode sets them in its node config; the
server cannot override them. A request beyond a limit is refused with one
line that names the peer and the rule (the node-config key), and nothing of
the peer's data leaves it. Simulation gets permissive defaults (the server
and the peers are one person's experiment); a deployed peer gets safe ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..errors import PeerDataError, PolicyError
from ..wire import protocol

__all__ = ["LABEL_MODES", "PeerPolicy"]

# What a peer accepts of the label holder's labels (supervised encoders and
# releases): nothing, only labels with label differential privacy, or any.
LABEL_MODES = ("none", "private", "any")


@dataclass(frozen=True)
class PeerPolicy:
    """The limits a peer puts on what the server may ask of it.

    Attributes
    ----------
    min_noise_multiplier : float
        ``min-noise-multiplier``: the least Gaussian noise (in units of the
        sensitivity) on a released latent; 0 allows a release without noise.
    max_latent_ratio : float
        ``max-latent-ratio``: the widest latent allowed, as a share of the
        peer's encoded feature columns. A latent as wide as its input need not
        compress at all.
    require_audit : bool
        ``require-audit``: refuse a release that the server asks not to audit.
    max_encoder_weights : int
        ``max-encoder-weights``: the most weights an encoder may have.
    max_steps : int
        ``max-steps``: the most optimizer steps an encoder may train for.
    max_rows : int
        ``max-rows``: the most rows one run may have encoded; 0 allows every
        row of the table once.
    accept_labels : str
        ``accept-labels``: ``"none"``, ``"private"`` (only labels sent with
        label differential privacy) or ``"any"``.
    max_label_epsilon : float
        ``max-label-epsilon``: with ``accept-labels = "private"``, the largest
        label epsilon accepted. The peer checks the epsilon the server
        declares; it cannot see whether the server noised as it declares.
    """

    min_noise_multiplier: float
    max_latent_ratio: float
    require_audit: bool
    max_encoder_weights: int
    max_steps: int
    max_rows: int
    accept_labels: str
    max_label_epsilon: float

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Return the node-config keys of the policy."""
        return tuple(f.name.replace("_", "-") for f in fields(cls))

    @classmethod
    def defaults(cls, *, simulated: bool) -> PeerPolicy:
        """Return the policy of a peer whose node config sets no limit."""
        return _SIMULATION if simulated else _DEPLOYMENT

    @classmethod
    def from_node_config(
        cls, values: Mapping[str, object], *, simulated: bool, peer: str
    ) -> PeerPolicy:
        """Read the policy keys of a node config over :meth:`defaults`."""
        default = cls.defaults(simulated=simulated)
        chosen = {}
        for field in fields(cls):
            key = field.name.replace("_", "-")
            value = getattr(default, field.name)
            if key in values:
                value = _parsed(values[key], type(value), key, peer)
            chosen[field.name] = value
        policy = cls(**chosen)
        policy._check(peer)
        return policy

    def _check(self, peer: str) -> None:
        for name, value in (("min-noise-multiplier", self.min_noise_multiplier),
                            ("max-latent-ratio", self.max_latent_ratio),
                            ("max-label-epsilon", self.max_label_epsilon)):
            if not value >= 0 or math.isnan(value):
                raise PeerDataError(f"{peer}: node config '{name}' must be >= 0")
        if min(self.max_encoder_weights, self.max_steps) < 1 or self.max_rows < 0:
            raise PeerDataError(f"{peer}: node config 'max-encoder-weights' and "
                                "'max-steps' must be positive, 'max-rows' >= 0")
        if self.accept_labels not in LABEL_MODES:
            raise PeerDataError(f"{peer}: node config 'accept-labels' must be one of "
                                f"{', '.join(LABEL_MODES)}")

    def check_embed(
        self, settings: Mapping[str, object], *, peer: str, latent_dim: int,
        n_features: int, n_weights: int, n_steps: int, supervised: bool,
    ) -> None:
        """Refuse a ``train.embed`` request beyond any limit of the policy.

        Parameters
        ----------
        settings : Mapping[str, object]
            The request's run config (noise and audit settings, and the
            declared label epsilon of its training labels).
        peer : str
            The peer's name, for the refusal.
        latent_dim, n_features : int
            The width asked for, and the peer's encoded feature columns.
        n_weights, n_steps : int
            The encoder's weights and most optimizer steps.
        supervised : bool
            The request carries the label holder's training labels.
        """
        noise = float(settings.get("dp-noise-multiplier", 0.0))
        if noise < self.min_noise_multiplier:
            raise self.refuse(peer, "min-noise-multiplier", f"asked for noise {noise:g}, "
                              f"less than {self.min_noise_multiplier:g}")
        if self.require_audit and not bool(settings.get("audit", True)):
            raise self.refuse(peer, "require-audit", "asked to release without the audit")
        if latent_dim > self.max_latent_ratio * n_features:
            raise self.refuse(peer, "max-latent-ratio", f"asked for {latent_dim} latent "
                              f"dimensions from {n_features} encoded features")
        if n_weights > self.max_encoder_weights:
            raise self.refuse(peer, "max-encoder-weights", f"the encoder would have "
                              f"{n_weights} weights")
        if n_steps > self.max_steps:
            raise self.refuse(peer, "max-steps", f"the encoder would train up to "
                              f"{n_steps} steps")
        if supervised:
            self._check_labels(settings, peer)

    def _check_labels(self, settings: Mapping[str, object], peer: str) -> None:
        epsilon = _label_epsilon(settings, peer)
        if self.accept_labels == "none" or (self.accept_labels == "private"
                                            and epsilon == 0.0):
            clear = " in clear" if epsilon == 0.0 else ""
            raise self.refuse(peer, "accept-labels", f"the request sends training "
                              f"labels{clear}")
        if self.accept_labels == "private" and epsilon > self.max_label_epsilon:
            raise self.refuse(peer, "max-label-epsilon", f"the request's labels carry "
                              f"label epsilon {epsilon:g}, more than "
                              f"{self.max_label_epsilon:g}")

    def refuse(self, peer: str, rule: str, what: str) -> PolicyError:
        """Return the one-line refusal of a request beyond ``rule``."""
        return PolicyError(f"{peer}: refused by its policy ({rule}): {what}")


def _label_epsilon(settings: Mapping[str, object], peer: str) -> float:
    """Return the label epsilon a request declares for its training labels; 0 is clear."""
    value = settings.get(protocol.LABEL_EPSILON, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise PeerDataError(f"{peer}: the request's '{protocol.LABEL_EPSILON}' must be "
                            "a finite number >= 0")
    return float(value)


def _parsed(value: object, kind: type, key: str, peer: str) -> object:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
    elif kind is int and not isinstance(value, bool):
        try:
            if float(value) == int(float(value)):
                return int(float(value))
        except (TypeError, ValueError, OverflowError):
            pass
    elif kind is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif kind is str:
        return str(value)
    raise PeerDataError(f"{peer}: node config '{key}' must be {kind.__name__}")


_SIMULATION = PeerPolicy(
    min_noise_multiplier=0.0, max_latent_ratio=math.inf, require_audit=False,
    max_encoder_weights=100_000_000, max_steps=10_000_000, max_rows=0,
    accept_labels="any", max_label_epsilon=2.0)
_DEPLOYMENT = PeerPolicy(
    min_noise_multiplier=0.0, max_latent_ratio=1.0, require_audit=True,
    max_encoder_weights=5_000_000, max_steps=200_000, max_rows=0,
    accept_labels="private", max_label_epsilon=2.0)
