"""Anonymizers of released latents: the k-Same and CVAE-sampling comparators.

The CVAE anonymization paper this project draws on compares its conditional
variational autoencoder against k-Same (Newton, Sweeney and Malin, IEEE TKDE
2005, "Preserving privacy by de-identifying face images"). Both work here on
a peer's latents, after its encoder and before the release (and its optional
differential-privacy noise):

- :class:`KSame` replaces each latent with the mean of its ``k`` nearest
  training latents;
- :class:`ConditionalVAESampler` fits a small conditional VAE on the
  training latents and replaces each latent with the decoder's output for a
  sample of its posterior.

Both are scikit-learn-style estimators on plain arrays; the peer supplies
the keyed random generators of the CVAE's samples (see
:func:`vfl_embed.peer.anonymization.anonymize`), so that the same entity
released again with the same training run gets the same values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..batching import in_fixed_batches, predict_rows

__all__ = ["ConditionalVAESampler", "KSame", "build_cvae", "load_anonymizer"]

_PARAMS_FILE = "anonymizer.json"
_KSAME_FILE = "k-same-latents.npy"
_CVAE_ENCODER = "cvae-encoder.keras"
_CVAE_DECODER = "cvae-decoder.keras"
# Training rows per distance block of KSame: bounds memory at
# block * n_train * dim floats; each row's distances do not depend on it.
_BLOCK = 64


class KSame:
    """Each release is the mean of the ``k`` nearest training latents.

    The neighbours of a row are the ``k`` training latents closest to it in
    Euclidean distance, ties broken by the lower training-row index. A
    training row is at distance 0 from itself, so its neighbours include it
    (or an identical latent); a new row's are its ``k`` nearest training
    latents. The rule is the same for both, so a prediction run re-releases
    bit for bit what the training run released for an unchanged entity.

    Unlike the original k-Same, which releases one mean per cluster of ``k``
    rows (k-anonymity), neighbourhoods here overlap and releases differ from
    row to row: they blur a row with its ``k - 1`` nearest, no more.

    Parameters
    ----------
    k : int (default: 5)
        Neighbours per release; at least 2, at most the training rows.

    Attributes
    ----------
    training_ : np.ndarray
        The training latents (float32), kept by the peer for new rows.
    """

    kind = "k-same"

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def fit(self, latents: np.ndarray) -> KSame:
        """Keep the training latents ``latents`` (rows by latent units)."""
        latents = _matrix(latents, "latents")
        if not 2 <= self.k <= len(latents):
            raise ValueError(f"k-Same needs 2 <= k <= {len(latents)} training rows, "
                             f"got k = {self.k}")
        self.training_ = np.ascontiguousarray(latents, dtype=np.float32)
        return self

    def neighbours(self, latents: np.ndarray) -> np.ndarray:
        """Return the training-row indices of each row's ``k`` neighbours, ascending."""
        training = self._fitted()
        latents = _matrix(latents, "latents", training.shape[1]).astype(np.float64)
        reference = training.astype(np.float64)
        parts = []
        for start in range(0, len(latents), _BLOCK):
            block = latents[start:start + _BLOCK]
            # Elementwise differences, not the |a|^2 - 2ab + |b|^2 product:
            # a row's distances are then the same bits in any block.
            distances = np.square(block[:, None, :] - reference[None, :, :]).sum(axis=2)
            nearest = np.argsort(distances, axis=1, kind="stable")[:, :self.k]
            parts.append(np.sort(nearest, axis=1))
        return np.concatenate(parts) if parts else np.empty((0, self.k), dtype=np.intp)

    def transform(self, latents: np.ndarray) -> np.ndarray:
        """Return the mean (float32) of each row's ``k`` nearest training latents."""
        chosen = self._fitted()[self.neighbours(latents)].astype(np.float64)
        return chosen.mean(axis=1).astype(np.float32)

    def save(self, directory: str | Path) -> None:
        """Write ``k`` and the training latents under ``directory``; no pickle."""
        directory = Path(directory)
        np.save(directory / _KSAME_FILE, self._fitted(), allow_pickle=False)
        (directory / _PARAMS_FILE).write_text(json.dumps({"kind": self.kind, "k": self.k}))

    @classmethod
    def load(cls, directory: str | Path) -> KSame:
        """Read a k-Same written by :meth:`save`."""
        directory = Path(directory)
        params = json.loads((directory / _PARAMS_FILE).read_text())
        loaded = cls(int(params["k"]))
        loaded.training_ = np.load(directory / _KSAME_FILE, allow_pickle=False)
        return loaded

    def _fitted(self) -> np.ndarray:
        if not hasattr(self, "training_"):
            raise ValueError("this KSame is not fitted yet; call fit first")
        return self.training_


def build_cvae(n_inputs: int, n_conditions: int, code_dim: int, hidden: int):  # noqa: ANN201
    """Build a conditional VAE; return ``(encoder, decoder)`` Keras models.

    The encoder maps a latent and its condition, concatenated, to the
    posterior's mean and log-variance (``2 * code_dim`` outputs); the
    decoder maps a code and the condition, concatenated, back to a latent.
    """
    import keras

    inputs = keras.Input(shape=(n_inputs + n_conditions,), name="latent_and_condition")
    hidden_enc = keras.layers.Dense(hidden, activation="tanh", name="enc_0")(inputs)
    posterior = keras.layers.Dense(2 * code_dim, name="posterior")(hidden_enc)
    codes = keras.Input(shape=(code_dim + n_conditions,), name="code_and_condition")
    hidden_dec = keras.layers.Dense(hidden, activation="tanh", name="dec_0")(codes)
    output = keras.layers.Dense(n_inputs, name="latent")(hidden_dec)
    return (keras.Model(inputs, posterior, name="cvae_encoder"),
            keras.Model(codes, output, name="cvae_decoder"))


class ConditionalVAESampler:
    """Replace each latent with the decoder's output for a posterior sample.

    A small conditional VAE is fitted on the standardized training latents.
    Its loss is the mean squared error per latent unit plus ``beta`` times
    the posterior's KL divergence from N(0, I) per latent unit. A row's
    release is ``decoder(mu + sigma * eps, c)``, back in the latents' scale,
    with ``eps`` drawn from the row's own generator.

    The condition ``c``: with training labels of a classification, the
    class probabilities a logistic regression fitted on the training
    latents and labels predicts from the row's latent. The peer knows the
    class of its training rows only; conditioning every row (training,
    held-out, a prediction run's) on the same function of its latent keeps
    their releases alike and needs no held-out label. Without labels, or
    for a regression, there is no condition (a plain VAE).

    Parameters
    ----------
    code_dim : int (default: 8)
        Width of the VAE's code.
    hidden : int (default: 64)
        Width of the encoder's and the decoder's hidden layer.
    beta : float (default: 1.0)
        Weight of the KL term; larger values give noisier samples.
    epochs : int (default: 100)
        Training epochs.
    batch_size : int (default: 128)
        Mini-batch size.
    learning_rate : float (default: 0.001)
        Adam learning rate.
    seed : int (default: 42)
        Seed of the initialization and of the training samples.

    Attributes
    ----------
    mean_, std_ : np.ndarray
        Standardization of the training latents.
    coef_, intercept_ : np.ndarray
        The condition's logistic regression (empty without a condition).
    encoder_, decoder_ : keras.Model
        The fitted CVAE (see :func:`build_cvae`).
    """

    kind = "cvae"

    def __init__(self, *, code_dim: int = 8, hidden: int = 64, beta: float = 1.0,
                 epochs: int = 100, batch_size: int = 128, learning_rate: float = 0.001,
                 seed: int = 42) -> None:
        self.code_dim = code_dim
        self.hidden = hidden
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, latents: np.ndarray, labels: np.ndarray | None = None) -> \
            ConditionalVAESampler:
        """Fit on training ``latents``; ``labels`` (class codes) add the condition."""
        import keras
        import tensorflow as tf

        latents = _matrix(latents, "latents").astype(np.float64)
        if labels is not None and len(labels) != len(latents):
            raise ValueError(f"labels must have one value per latent row ({len(latents)}), "
                             f"got {len(labels)}")
        self.mean_ = latents.mean(axis=0)
        self.std_ = np.where(latents.std(axis=0) > 0, latents.std(axis=0), 1.0)
        standard = self._standard(latents)
        self._fit_condition(standard, labels)
        keras.utils.set_random_seed(self.seed)
        tf.config.experimental.enable_op_determinism()
        conditions = self._condition(standard)
        self.encoder_, self.decoder_ = build_cvae(
            latents.shape[1], conditions.shape[1], self.code_dim, self.hidden)
        trainer = self._trainer(keras, latents.shape[1], conditions.shape[1])
        trainer.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                        loss={"reconstruction": "mse", "kl": _mean_output},
                        loss_weights={"reconstruction": 1.0,
                                      "kl": self.beta / latents.shape[1]})
        inputs = np.hstack([standard, conditions]).astype(np.float32)
        trainer.fit(inputs, {"reconstruction": standard.astype(np.float32),
                             "kl": np.zeros((len(inputs), 1), np.float32)},
                    epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
                    verbose=0)
        return self

    def transform(self, latents: np.ndarray,
                  generators: Sequence[np.random.Generator]) -> np.ndarray:
        """Return each row's sample (float32); row ``i`` draws from ``generators[i]``."""
        self._check_fitted()
        latents = _matrix(latents, "latents", len(self.mean_)).astype(np.float64)
        if len(generators) != len(latents):
            raise ValueError(f"one generator per latent row is needed ({len(latents)}), "
                             f"got {len(generators)}")
        standard = self._standard(latents)
        conditions = self._condition(standard)
        posterior = predict_rows(self.encoder_, np.hstack([standard, conditions]))
        mean, log_var = posterior[:, :self.code_dim], posterior[:, self.code_dim:]
        eps = np.array([g.standard_normal(self.code_dim) for g in generators],
                       dtype=np.float32).reshape(len(latents), self.code_dim)
        codes = mean + np.exp(0.5 * log_var) * eps
        sample = predict_rows(self.decoder_, np.hstack([codes, conditions]))
        return (sample * self.std_ + self.mean_).astype(np.float32)

    def save(self, directory: str | Path) -> None:
        """Write the CVAE (two ``.keras`` files) and its parameters; no pickle."""
        self._check_fitted()
        directory = Path(directory)
        self.encoder_.save(directory / _CVAE_ENCODER)
        self.decoder_.save(directory / _CVAE_DECODER)
        params = {k: getattr(self, k) for k in ("code_dim", "hidden", "beta", "epochs",
                                                "batch_size", "learning_rate", "seed")}
        arrays = {k: getattr(self, k).tolist() for k in ("mean_", "std_", "coef_",
                                                         "intercept_")}
        (directory / _PARAMS_FILE).write_text(json.dumps(
            {"kind": self.kind, "params": params, "arrays": arrays}))

    @classmethod
    def load(cls, directory: str | Path) -> ConditionalVAESampler:
        """Read a sampler written by :meth:`save`."""
        import keras

        directory = Path(directory)
        stored = json.loads((directory / _PARAMS_FILE).read_text())
        loaded = cls(**stored["params"])
        for name, values in stored["arrays"].items():
            setattr(loaded, name, np.asarray(values, dtype=np.float64))
        loaded.coef_ = loaded.coef_.reshape(len(loaded.intercept_), len(loaded.mean_))
        loaded.encoder_ = keras.models.load_model(directory / _CVAE_ENCODER, compile=False)
        loaded.decoder_ = keras.models.load_model(directory / _CVAE_DECODER, compile=False)
        return loaded

    def _standard(self, latents: np.ndarray) -> np.ndarray:
        return (latents - self.mean_) / self.std_

    def _fit_condition(self, standard: np.ndarray, labels: np.ndarray | None) -> None:
        width = standard.shape[1]
        self.coef_, self.intercept_ = np.zeros((0, width)), np.zeros(0)
        if labels is None or len(np.unique(labels)) < 2:
            return
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000).fit(standard, labels)
        self.coef_, self.intercept_ = model.coef_, model.intercept_

    def _condition(self, standard: np.ndarray) -> np.ndarray:
        # The class probabilities of the fitted logistic regression, computed
        # here in fixed batches so a row's condition has the same bits always.
        if not len(self.intercept_):
            return np.zeros((len(standard), 0))

        def probabilities(rows: np.ndarray) -> np.ndarray:
            scores = rows @ self.coef_.T + self.intercept_
            if scores.shape[1] == 1:  # binary: scikit-learn's one score, class 1
                scores = np.hstack([np.zeros_like(scores), scores])
            scores -= scores.max(axis=1, keepdims=True)
            weights = np.exp(scores)
            return weights / weights.sum(axis=1, keepdims=True)

        return in_fixed_batches(probabilities, standard)

    def _trainer(self, keras, n_inputs: int, n_conditions: int):  # noqa: ANN001, ANN202
        # Training only: encoder, a reparametrized sample, decoder, and the
        # per-row KL as a second output. The sample is drawn by Keras here;
        # releases draw theirs from the peer's keyed generators instead.
        inputs = keras.Input(shape=(n_inputs + n_conditions,))
        posterior = self.encoder_(inputs)
        mean, log_var = posterior[:, :self.code_dim], posterior[:, self.code_dim:]
        eps = _sampling(self.seed)(mean)
        codes = mean + keras.ops.exp(0.5 * log_var) * eps
        condition = inputs[:, n_inputs:]
        reconstruction = self.decoder_(keras.ops.concatenate([codes, condition], axis=1))
        kl = -0.5 * keras.ops.sum(1 + log_var - mean ** 2 - keras.ops.exp(log_var),
                                  axis=1, keepdims=True)
        return keras.Model(inputs, {"reconstruction": reconstruction, "kl": kl})

    def _check_fitted(self) -> None:
        if not hasattr(self, "decoder_"):
            raise ValueError("this ConditionalVAESampler is not fitted yet; call fit first")


def _sampling(seed: int):  # noqa: ANN202 - keras is imported lazily
    import keras

    class Sampling(keras.layers.Layer):
        """Standard normal noise of its input's shape, from a seeded generator."""

        def __init__(self) -> None:
            super().__init__()
            self.generator = keras.random.SeedGenerator(seed)

        def call(self, like):  # noqa: ANN001, ANN201
            return keras.random.normal(keras.ops.shape(like), seed=self.generator)

    return Sampling()


def _mean_output(y_true, y_pred):  # noqa: ANN001, ANN202, ARG001 - a Keras loss
    # The KL output is already the loss of its row.
    return y_pred[:, 0]


def _matrix(values: np.ndarray, what: str, width: int | None = None) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2 or (width is not None and values.shape[1] != width):
        expected = "a 2-D matrix" if width is None else f"a 2-D matrix of {width} columns"
        raise ValueError(f"{what} must be {expected}, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} must be finite")
    return values


def load_anonymizer(directory: str | Path) -> KSame | ConditionalVAESampler:
    """Read the anonymizer saved under ``directory`` by either class's ``save``."""
    kind = json.loads((Path(directory) / _PARAMS_FILE).read_text())["kind"]
    return {KSame.kind: KSame, ConditionalVAESampler.kind: ConditionalVAESampler}[
        kind].load(directory)
