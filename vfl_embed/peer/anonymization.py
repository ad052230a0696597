"""The peer's release mode: its latents as they are, or anonymized first.

``release-mode`` picks what a peer does to its encoder's latents before the
release (width, differential privacy) and the audit:

- ``latent``: nothing (the default);
- ``k-same``: each latent becomes the mean of its ``k-same-k`` nearest
  training latents (:class:`~vfl_embed.privacy.anonymizers.KSame`);
- ``cvae``: each latent becomes a sample of a conditional VAE fitted on the
  training latents
  (:class:`~vfl_embed.privacy.anonymizers.ConditionalVAESampler`), its
  noise drawn from a generator keyed by the peer secret, the training run,
  the entity and its latent.

The fitted anonymizer is kept with the peer's state, so a prediction run
releases an unchanged entity's latent exactly as the training run did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..errors import PeerDataError
from ..privacy.anonymizers import ConditionalVAESampler, KSame
from .release import keyed_generator

__all__ = ["Anonymizer", "anonymize", "fit_anonymizer"]

Anonymizer = KSame | ConditionalVAESampler


def fit_anonymizer(
    config: Mapping[str, object], latents: np.ndarray, train_targets: np.ndarray | None,
    seed: int, name: str,
) -> Anonymizer | None:
    """Fit the anonymizer ``config``'s ``release-mode`` asks for on training ``latents``.

    Returns None for ``latent``. The CVAE is conditioned on the class when
    the peer holds the training labels of a classification.
    """
    mode = str(config.get("release-mode", "latent"))
    try:
        if mode == "latent":
            return None
        if mode == "k-same":
            return KSame(int(config.get("k-same-k", 5))).fit(latents)
        if mode == "cvae":
            labels = train_targets if config.get("task") == "classification" else None
            return ConditionalVAESampler(seed=seed).fit(latents, labels)
    except ValueError as err:
        raise PeerDataError(f"{name}: release-mode '{mode}': {err}") from err
    raise PeerDataError(f"{name}: unknown release-mode '{mode}'")


def anonymize(
    anonymizer: Anonymizer | None, latents: np.ndarray, ids: Sequence[str],
    secret: Callable[[], bytes] | None, train_run: int, name: str,
) -> np.ndarray:
    """Return the latents of the rows with ``ids`` as ``anonymizer`` releases them."""
    if anonymizer is None:
        return latents
    if isinstance(anonymizer, KSame):
        return anonymizer.transform(latents)
    if secret is None:
        raise PeerDataError(f"{name}: has no secret to key its CVAE samples with")
    key = secret()
    latents = np.ascontiguousarray(latents, dtype=np.float32)
    # Keyed also by the latent itself: a row whose values changed since an
    # earlier release gets a fresh sample.
    generators = [keyed_generator(key, f"cvae:{train_run}:{entity}:".encode(
        "utf-8", "surrogatepass") + latents[row].tobytes())
        for row, entity in enumerate(ids)]
    return anonymizer.transform(latents, generators)
