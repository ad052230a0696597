"""A peer's privacy machinery: its secret, its alignment, its release and its audit.

Everything here runs inside the peer. Out of it come pseudonyms or blinded
group elements, the released latents and the audit's figures; never the
peer's secret, its raw rows or its IDs.

The peer secret
    A 32-byte value no other party holds. It keys the peer's private set
    intersection scalar and the differential-privacy noise of each row, so
    that both repeat from run to run (the same command gives the same
    numbers) while the server cannot recompute them. In deployment it is
    drawn once and kept in ``<state-dir>/<peer>/peer.key`` (mode 0600). In
    simulation it is derived from the run's demo secret and the peer's name:
    reproducible, and only as secret as the demo secret (simulation runs
    everything on one machine anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from logging import INFO

import numpy as np
from flwr.common.logger import log

from ..config import KEYS
from ..errors import PeerDataError
from ..privacy.audit import ReconstructionAudit, encoding_layout, label_floor
from ..privacy.dp import GaussianLatentRelease
from ..wire.protocol import LATENT_BITS, LATENT_DTYPES
from .bottleneck import InformationBottleneck, mean_kl_nats, posterior_sample
from .preprocessing import Preprocessor

__all__ = ["LatentRelease", "audit_figures", "bottleneck_release", "keyed_generator",
           "keyed_normal", "label_floor_figures"]


def keyed_generator(secret: bytes, label: bytes) -> np.random.Generator:
    """Return a generator seeded by HMAC-SHA256 of ``label`` under ``secret``.

    Whoever lacks the secret cannot recompute its draws; the same secret and
    label give the same draws again.
    """
    key = hmac.new(secret, label, hashlib.sha256).digest()
    return np.random.default_rng(int.from_bytes(key, "little"))


class LatentRelease:
    """The latents a peer releases: their float width and differential privacy.

    Each row's noise is drawn from a generator keyed by the peer secret, the
    training run, the row's ID and its latent, so the server cannot
    recompute it. Releasing an unchanged row again with the same training
    run's encoder (a later prediction run) repeats the same values and adds
    no privacy loss; a changed row, or another training run, gets
    independent noise, and the releases compose.

    Parameters
    ----------
    settings : Mapping[str, object]
        ``latent-bits`` (32 or 16: the float width the latents are sent in),
        ``dp-noise-multiplier`` (0 disables the release's noise and clipping),
        ``dp-clip-norm`` and ``dp-delta``.
    secret : Callable[[], bytes] | None
        Returns the peer's secret; called only when the release adds noise,
        which a peer without a secret (None) refuses.
    train_run : int
        The Flower run ID of the training run whose encoder made the latents.
    """

    def __init__(
        self, settings: Mapping[str, object], secret: Callable[[], bytes] | None,
        train_run: int,
    ) -> None:
        self.bits = settings.get(LATENT_BITS, 32)
        self.noise_multiplier = float(settings.get("dp-noise-multiplier", 0.0))
        self.clip_norm = float(settings.get("dp-clip-norm", 1.0))
        self.delta = float(settings.get("dp-delta", 1e-5))
        self._secret = secret
        self._train_run = train_run

    @property
    def enabled(self) -> bool:
        """True when the latents are clipped and noised."""
        return self.noise_multiplier > 0

    def settings(self) -> dict[str, float]:
        """Return the settings a peer keeps for prediction runs."""
        width = {LATENT_BITS: float(self.bits)}
        if not self.enabled:
            return width
        return width | {"dp-noise-multiplier": self.noise_multiplier,
                        "dp-clip-norm": self.clip_norm, "dp-delta": self.delta}

    def apply(self, latents: np.ndarray, ids: Sequence[str], name: str) -> tuple[
            np.ndarray, dict[str, float]]:
        """Return the released latents of the rows with ``ids``, and their DP figures.

        The latents come in the float width they are sent in.
        """
        if self.bits not in LATENT_DTYPES:
            raise PeerDataError(f"{name}: latent-bits must be one of "
                                f"{sorted(LATENT_DTYPES)}, got {self.bits}")
        latents, figures = self._noised(latents, ids, name)
        return _narrowed(latents, LATENT_DTYPES[self.bits], name), figures

    def _noised(self, latents: np.ndarray, ids: Sequence[str], name: str) -> tuple[
            np.ndarray, dict[str, float]]:
        if not self.enabled:
            return latents, {}
        if self._secret is None:
            raise PeerDataError(f"{name}: has no secret to key its noise with")
        try:
            mechanism = GaussianLatentRelease(self.clip_norm, self.noise_multiplier,
                                              self.delta)
        except ValueError as err:
            raise PeerDataError(f"{name}: {err}") from err
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        released = mechanism.release(latents, noise=self._noise(ids, latents,
                                                                 mechanism.sigma))
        statement = mechanism.statement()
        return released, {
            "dp_epsilon": float(statement["epsilon"]),
            "dp_delta": self.delta,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_clip_norm": self.clip_norm,
            "dp_clipped_share": float(statement["clipped_share"]),
        }

    def _noise(self, ids: Sequence[str], latents: np.ndarray, sigma: float) -> np.ndarray:
        # Keyed also by every release setting: a row whose noise level changed
        # since an earlier release gets fresh noise.
        settings = json.dumps(self.settings(), sort_keys=True)
        return sigma * keyed_normal(self._secret(), f"dp-noise:{self._train_run}:{settings}",
                                    ids, latents)


def keyed_normal(secret: bytes, label: str, ids: Sequence[str],
                 rows: np.ndarray) -> np.ndarray:
    """Return standard normal values shaped like ``rows``, each row keyed to its entity.

    Row ``k`` comes from a generator seeded with HMAC-SHA256 of the peer's
    ``secret`` over ``label``, ``ids[k]`` and the bytes of ``rows[k]``: the
    same (secret, label, entity, row) gives the same values in any run, and
    without the secret nobody can recompute them. Keying by the row's own
    values means a row that changed since an earlier release gets fresh
    values, so two releases give no equations that cancel them.
    """
    rows = np.ascontiguousarray(rows)
    values = np.empty(rows.shape)
    for row, entity in enumerate(ids):
        prefix = f"{label}:{entity}:".encode("utf-8", "surrogatepass")
        values[row] = keyed_generator(secret, prefix + rows[row].tobytes()).standard_normal(
            rows.shape[1])
    return values


def bottleneck_release(
    encoder: InformationBottleneck, x: np.ndarray, ids: Sequence[str],
    secret: Callable[[], bytes] | None, train_run: int, name: str,
) -> tuple[np.ndarray, dict[str, float]]:
    """Return a keyed sample of the bottleneck's posterior for each row, and its KL figure.

    The sample's noise is :func:`keyed_normal`, keyed by the training run, the
    entity and its posterior mean, so a prediction run re-releases the same
    values for an unchanged row. ``bottleneck_kl_nats`` is the mean over the
    rows of ``KL(q(z|x) || N(0, I))`` (see
    :func:`~vfl_embed.peer.bottleneck.mean_kl_nats`).
    """
    if secret is None:
        raise PeerDataError(f"{name}: has no secret to key its bottleneck sample with")
    mean, log_variance = encoder.posterior(x)
    noise = keyed_normal(secret(), f"bottleneck:{train_run}", ids, mean)
    return posterior_sample(mean, log_variance, noise), {
        "bottleneck_kl_nats": mean_kl_nats(mean, log_variance)}


def _narrowed(latents: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    largest = float(np.abs(latents).max(initial=0.0))
    if largest > float(np.finfo(dtype).max):
        raise PeerDataError(f"{name}: latent values up to {largest:.3g} do not fit "
                            f"{dtype}; set latent-bits = 32")
    return np.ascontiguousarray(latents, dtype=dtype)


def audit_figures(
    x: np.ndarray, latents: np.ndarray, preprocessor: Preprocessor, decoder: object,
    settings: Mapping[str, object], seed: int, name: str,
) -> dict[str, float]:
    """Run the reconstruction-attack audit on released latents; return its figures.

    The returned figures (they go to the server) are aggregates and name no
    column; the per-column ones go to this peer's log only. ``audit = false``
    skips it (no figures).
    """
    if not bool(settings.get("audit", True)):
        return {}
    try:
        audit = ReconstructionAudit(leak_fraction=_leak_fraction(settings), seed=seed)
        result = audit.run(x, latents, **encoding_layout(preprocessor),
                           decoder=getattr(decoder, "decode", None))
    except ValueError as err:
        raise PeerDataError(f"{name}: privacy audit: {err}") from err
    for column, figures in result.column_figures().items():
        log(INFO, "%s: privacy audit at %.0f %% leaked, column %s: %s", name,
            100 * result.leak_fraction, column,
            ", ".join(f"{key} {value:.3f}" for key, value in figures.items()))
    return result.to_dict()


def label_floor_figures(
    x_train: np.ndarray, targets: np.ndarray, preprocessor: Preprocessor,
    settings: Mapping[str, object], seed: int, name: str, *, categorical: bool,
) -> dict[str, float]:
    """Return the audit's attack on the training labels alone: the run's label floor.

    A peer that trained on labels can say how much of its columns the
    label itself gives away, with the same attackers and leak fraction as
    its release's audit: a label-useful release cannot go much below it
    (PRIVACY.md, "The label floor"). The figures are aggregates
    (``floor_label_r2``, ``floor_label_r2_worst``, ``floor_label_cat_accuracy``);
    ``audit = false`` skips them.
    """
    if not bool(settings.get("audit", True)):
        return {}
    try:
        return label_floor(x_train, targets, categorical=categorical,
                           leak_fraction=_leak_fraction(settings), seed=seed,
                           **encoding_layout(preprocessor))
    except ValueError as err:
        raise PeerDataError(f"{name}: privacy audit of the label floor: {err}") from err


def _leak_fraction(settings: Mapping[str, object]) -> float:
    return float(settings.get("audit-leak-fraction", KEYS["audit-leak-fraction"].default))
