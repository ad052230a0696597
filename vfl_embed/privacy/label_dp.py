"""Label differential privacy: noise on the training labels the server sends to the peers.

Supervised releases (``supervised = true``, ``encoder = "prediction"``) train
at the peers on the label holder's labels. With ``label-dp-epsilon > 0`` the
server sends them through one of two mechanisms instead of in clear:

- classes: K-ary randomized response (Warner, JASA 1965; the K-ary form of
  Kairouz, Oh and Viswanath, "Extremal Mechanisms for Local Differential
  Privacy", JMLR 2016): keep the true class with probability
  ``e^eps / (e^eps + K - 1)``, else send one of the other K - 1 classes,
  uniformly;
- numbers: the Laplace mechanism (Dwork, McSherry, Nissim and Smith, TCC
  2006): clip to ``[low, high]`` and add Laplace noise of scale
  ``(high - low) / eps``.

Each entity's label is noised once, and every peer receives the same noised
labels: one release, so the label epsilon of the run is ``eps`` however many
peers there are (what the peers do with the copies is post-processing).
Independent noise per peer would give each peer a fresh view and compose to
P * eps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["LABEL_QUANTILES", "LabelRelease", "LaplaceLabels", "RandomizedResponse",
           "label_sentence", "private_labels"]

# The Laplace mechanism's clipping range: these quantiles of the training
# labels. Min and max would make every label's scale as wide as its two
# most extreme values; the 1 % and 99 % quantiles halve the noise on Ames'
# prices and clip only the outermost 2 % of the labels.
LABEL_QUANTILES = (0.01, 0.99)

_NEIGHBOURS = ("replace one: one entity's label takes any other value (another class, "
               "or any number, clipped to the range)")


@dataclass(frozen=True)
class LabelRelease:
    """Noised training labels and the statement of their guarantee.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(n,)`` float64 labels, in the order given: class codes ``0..K-1``
        or numbers.
    statement : dict
        JSON-ready: ``mechanism``, ``epsilon``, ``n_classes`` or ``range``,
        ``neighbouring_relation``, ``covered`` and ``not_covered``.
    """

    labels: np.ndarray
    statement: dict


class RandomizedResponse:
    """K-ary randomized response on class codes, epsilon-label-DP per entity.

    Parameters
    ----------
    epsilon : float
        The label epsilon, ``> 0``.
    n_classes : int
        K, the number of classes (``>= 2``); codes are ``0..K-1``.
    """

    def __init__(self, epsilon: float, n_classes: int) -> None:
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
        if n_classes < 2:
            raise ValueError(f"randomized response needs at least 2 classes, got "
                             f"{n_classes}")
        self.epsilon = float(epsilon)
        self.n_classes = int(n_classes)

    @property
    def keep_probability(self) -> float:
        """Probability that the true class is sent: e^eps / (e^eps + K - 1)."""
        # 1 / (1 + (K - 1) e^-eps) is the same and does not overflow.
        return 1.0 / (1.0 + (self.n_classes - 1) * math.exp(-self.epsilon))

    def matrix(self) -> np.ndarray:
        """Return ``P[true, sent]``, the ``(K, K)`` probabilities of the mechanism."""
        flip = (1.0 - self.keep_probability) / (self.n_classes - 1)
        matrix = np.full((self.n_classes, self.n_classes), flip)
        np.fill_diagonal(matrix, self.keep_probability)
        return matrix

    def release(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return the codes after randomized response, one independent draw per entity."""
        codes = np.asarray(codes)
        if not np.isin(codes, np.arange(self.n_classes)).all():
            raise ValueError(f"class codes must be in 0..{self.n_classes - 1}")
        codes = codes.astype(np.int64)
        keep = rng.random(len(codes)) < self.keep_probability
        # An offset in 1..K-1 picks one of the other classes uniformly.
        other = (codes + rng.integers(1, self.n_classes, len(codes))) % self.n_classes
        return np.where(keep, codes, other).astype(np.float64)

    def statement(self) -> dict:
        """Describe the guarantee, JSON-ready."""
        return {"mechanism": "K-ary randomized response", "epsilon": self.epsilon,
                "n_classes": self.n_classes, "keep_probability": self.keep_probability,
                "neighbouring_relation": _NEIGHBOURS}


class LaplaceLabels:
    """The Laplace mechanism on numeric labels clipped to ``[low, high]``.

    Parameters
    ----------
    epsilon : float
        The label epsilon, ``> 0``.
    low, high : float
        The clipping range, ``low < high``; the sensitivity is ``high - low``.
    """

    def __init__(self, epsilon: float, low: float, high: float) -> None:
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"the clipping range must be finite with low < high, got "
                             f"[{low}, {high}]")
        self.epsilon, self.low, self.high = float(epsilon), float(low), float(high)

    @classmethod
    def from_labels(cls, epsilon: float, labels: np.ndarray) -> LaplaceLabels:
        """Fix the clipping range at the :data:`LABEL_QUANTILES` of ``labels``.

        The range is computed from the labels themselves and sent to no one,
        but it shapes every noised label: it is not covered by epsilon (see
        :func:`private_labels`).
        """
        low, high = np.quantile(np.asarray(labels, dtype=np.float64), LABEL_QUANTILES)
        if not high > low:  # most labels equal: widen to the whole observed range
            low, high = float(np.min(labels)), float(np.max(labels))
        return cls(epsilon, float(low), float(high))

    @property
    def scale(self) -> float:
        """Laplace scale b = (high - low) / epsilon."""
        return (self.high - self.low) / self.epsilon

    def release(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return the clipped values plus independent Laplace(0, scale) noise."""
        clipped = np.clip(np.asarray(values, dtype=np.float64), self.low, self.high)
        return clipped + rng.laplace(0.0, self.scale, len(clipped))

    def statement(self) -> dict:
        """Describe the guarantee, JSON-ready."""
        return {"mechanism": "Laplace mechanism on clipped labels", "epsilon": self.epsilon,
                "range": [self.low, self.high], "range_from": (
                    f"the {LABEL_QUANTILES[0]:g} and {LABEL_QUANTILES[1]:g} quantiles "
                    "of the training labels"),
                "scale": self.scale, "neighbouring_relation": _NEIGHBOURS}


def private_labels(
    labels: np.ndarray, *, task: str, epsilon: float, seed: int, n_classes: int = 0
) -> LabelRelease:
    """Noise one copy of the training labels for every peer.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(n,)`` training labels: class codes ``0..n_classes-1`` or numbers.
    task : str
        ``"classification"`` (randomized response) or ``"regression"``
        (Laplace, range from :meth:`LaplaceLabels.from_labels`).
    epsilon : float
        The label epsilon, ``> 0``.
    seed : int
        Seed of the noise: the same seed gives the same noised labels. Whoever
        knows it and the noised labels can undo the noise, so a run must not
        take it from anything the peers see (the run config is sent to them).
    n_classes : int (default: 0)
        K, for classification.
    """
    if task == "classification":
        mechanism: RandomizedResponse | LaplaceLabels = RandomizedResponse(
            epsilon, n_classes)
    elif task == "regression":
        mechanism = LaplaceLabels.from_labels(epsilon, labels)
    else:
        raise ValueError(f"task must be classification or regression, got {task!r}")
    noised = mechanism.release(labels, np.random.default_rng(seed))
    statement = mechanism.statement() | {
        "covered": "each entity's training label, as every peer receives it: any two "
                   "values of one entity's label change the distribution of what the "
                   "peers receive by at most a factor e^epsilon; every peer gets the same "
                   "noised copy, so the run's label epsilon is epsilon for any number "
                   "of peers",
        "not_covered": _not_covered(task),
    }
    return LabelRelease(noised, statement)


def label_sentence(label_privacy: Mapping[str, object]) -> str:
    """Say in one sentence which training labels a run sent to the peers.

    ``label_privacy`` is a run's record of them
    (:attr:`~vfl_embed.server.result.VerticalResult.label_privacy`); empty
    before the embed phase.
    """
    sent = label_privacy.get("labels_sent")
    if sent == "clear":
        return "labels sent in clear to every peer"
    if sent == "label-dp":
        return (f"labels sent to every peer with {label_privacy['mechanism']}, label "
                f"epsilon {label_privacy['epsilon']:g}")
    return "no labels sent to the peers" if sent == "none" else "no labels sent yet"


def _not_covered(task: str) -> list[str]:
    items = [
        "the server and the label holder see the labels in clear",
        "which entities are training rows, and their number",
        "a later run that noises the same labels again composes: epsilon adds up",
        "the peers' features may predict the label whatever the labels sent",
    ]
    if task == "regression":
        items.insert(1, "the clipping range: the training labels' quantiles, "
                        "computed without noise; not sent, but every noised label is "
                        "centred on a value clipped to it, and labels outside it are "
                        "clipped rather than kept")
    return items
