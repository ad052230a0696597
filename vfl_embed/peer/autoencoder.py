"""Keras autoencoders a peer trains on its own columns, and their metrics.

The paper's reference architecture (encoder ``N -> 128 -> 64 -> 40 -> M``,
mirrored decoder, ReLU, MAE loss, Adam 1e-4) stays one run-config away
(``hidden-sizes="128,64,40" activation="relu" latent-activation="relu"
loss="mae" learning-rate=0.0001``). Our default differs where measurement on
Ames told us to: a linear latent layer (a ReLU latent collapses units to
zero), one tanh hidden layer, MSE loss, a 32-dim latent, Adam 1e-3 and early
stopping on a validation split (see the scenario table in docs/scenarios.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..batching import predict_rows

__all__ = ["Autoencoder", "IdentityEncoder", "build_autoencoder",
           "decorrelation_penalty", "representation_metrics"]

def build_autoencoder(
    n_inputs: int,
    latent_dim: int,
    hidden_sizes: Sequence[int],
    activation: str = "relu",
    latent_activation: str = "linear",
    n_outputs: int = 0,
    output_activation: str = "linear",
):  # noqa: ANN201 - keras types are only importable lazily
    """Build an autoencoder and return ``(model, encoder)``.

    Parameters
    ----------
    n_inputs : int
        Width of the encoded input matrix.
    latent_dim : int
        Width of the latent layer.
    hidden_sizes : Sequence[int]
        Encoder hidden layer widths; the decoder mirrors them.
    activation : str (default: "relu")
        Activation of the hidden layers.
    latent_activation : str (default: "linear")
        Activation of the latent layer.
    n_outputs : int (default: 0)
        If positive, add a supervised head of this width on the latent layer;
        the model then has two outputs, ``reconstruction`` and ``target``.
    output_activation : str (default: "linear")
        Activation of the supervised head.
    """
    import keras

    inputs = keras.Input(shape=(n_inputs,), name="features")
    x = inputs
    for i, width in enumerate(hidden_sizes):
        x = keras.layers.Dense(width, activation=activation, name=f"enc_{i}")(x)
    latent = keras.layers.Dense(latent_dim, activation=latent_activation, name="latent")(x)
    x = latent
    for i, width in enumerate(reversed(hidden_sizes)):
        x = keras.layers.Dense(width, activation=activation, name=f"dec_{i}")(x)
    reconstruction = keras.layers.Dense(n_inputs, name="reconstruction")(x)
    outputs = {"reconstruction": reconstruction}
    if n_outputs > 0:
        outputs["target"] = keras.layers.Dense(
            n_outputs, activation=output_activation, name="target"
        )(latent)
    model = keras.Model(inputs, outputs, name="autoencoder")
    encoder = keras.Model(inputs, latent, name="encoder")
    return model, encoder


def decorrelation_penalty(latent, inputs, epsilon: float = 1e-12):  # noqa: ANN001, ANN201
    """Mean squared Pearson correlation between latent units and input columns.

    Correlations are taken across the rows (a mini-batch in training) for
    every pair (latent unit, input column) and squared; the mean over pairs
    is returned as a scalar tensor. ``epsilon`` is added to the product of
    the two variances, so a constant column counts as uncorrelated.

    Parameters
    ----------
    latent : tensor
        ``(rows, latent units)`` latents.
    inputs : tensor
        ``(rows, columns)`` inputs of the encoder.
    epsilon : float (default: 1e-12)
        Guard against zero variance.
    """
    from keras import ops

    latent = latent - ops.mean(latent, axis=0, keepdims=True)
    inputs = inputs - ops.mean(inputs, axis=0, keepdims=True)
    rows = ops.cast(ops.shape(latent)[0], latent.dtype)
    covariance = ops.matmul(ops.transpose(latent), inputs) / rows
    variances = ops.outer(ops.mean(latent * latent, axis=0),
                          ops.mean(inputs * inputs, axis=0))
    return ops.mean(ops.square(covariance) / (variances + epsilon))


def _layers(model, prefix: str) -> list:  # noqa: ANN001
    """Return the layers of ``model`` named ``<prefix><k>``, in order of ``k``."""
    named = [layer for layer in model.layers if layer.name.startswith(prefix)]
    return sorted(named, key=lambda layer: int(layer.name[len(prefix):]))


def _rewired(model, latent_of, name: str, detach_decoder: bool = False):  # noqa: ANN001, ANN202
    """Return a training model that shares ``model``'s layers.

    Its decoder and supervised head read ``latent_of(inputs, hidden, latent)``
    instead of the latent layer's output, where ``hidden`` is the last encoder
    hidden layer's output (the inputs if there is none): a training-only term
    or sampling step goes in there, and ``model`` itself, which is saved,
    keeps the plain architecture. With ``detach_decoder`` the decoder reads
    the latent through a stopped gradient: it learns to reconstruct, but its
    loss does not shape the encoder.
    """
    import keras

    inputs = model.input
    x = inputs
    for layer in _layers(model, "enc_"):
        x = layer(x)
    latent = latent_of(inputs, x, model.get_layer("latent")(x))
    x = keras.ops.stop_gradient(latent) if detach_decoder else latent
    for layer in _layers(model, "dec_"):
        x = layer(x)
    outputs = {"reconstruction": model.get_layer("reconstruction")(x)}
    if any(layer.name == "target" for layer in model.layers):
        outputs["target"] = model.get_layer("target")(latent)
    return keras.Model(inputs, outputs, name=name)


def _with_decorrelation(model, weight: float):  # noqa: ANN001, ANN202
    """Return a training model (see :func:`_rewired`) with a decorrelation term.

    Its loss adds ``weight`` times the :func:`decorrelation_penalty` of its
    latents and inputs on each batch.
    """
    import keras

    class DecorrelationPenalty(keras.layers.Layer):
        def call(self, tensors):  # noqa: ANN001, ANN202
            inputs, latent = tensors
            self.add_loss(weight * decorrelation_penalty(latent, inputs))
            return latent

    penalty = DecorrelationPenalty(name="decorrelation")
    return _rewired(model, lambda inputs, hidden, latent: penalty([inputs, latent]),
                    "autoencoder_decorrelated")


def _decoder(model):  # noqa: ANN001, ANN202
    """Return the decoder half of an autoencoder ``model``: latents to reconstruction."""
    import keras

    latents = keras.Input(shape=(model.get_layer("latent").units,), name="latents")
    x = latents
    for layer in _layers(model, "dec_"):
        x = layer(x)
    return keras.Model(latents, model.get_layer("reconstruction")(x), name="decoder")


class Autoencoder:
    """A peer's autoencoder with a scikit-learn-like interface.

    Parameters
    ----------
    latent_dim : int (default: 32)
        Width of the latent vectors the peer shares.
    hidden_sizes : Sequence[int] (default: (128,))
        Encoder hidden widths; the decoder mirrors them. The paper's are
        ``(128, 64, 40)``.
    activation : str (default: "tanh")
        Hidden-layer activation; the paper used ``"relu"``.
    latent_activation : str (default: "linear")
        Latent-layer activation; the paper used ``"relu"``.
    loss : str (default: "mse")
        Reconstruction loss, ``"mae"`` (the paper's) or ``"mse"``.
    learning_rate : float (default: 1e-3)
        Adam learning rate; the paper used 1e-4.
    epochs : int (default: 200)
        Maximum number of epochs.
    max_steps : int (default: 20000)
        Budget of optimizer steps (mini-batches), so that fitting time stops
        growing with the number of rows: the number of epochs is capped at
        ``max_steps`` divided by the steps of one epoch, rounded down, and is
        at least one. It does not bind below about ``max_steps * batch_size /
        epochs`` training rows (12,800 with the defaults); at 500,000 rows
        it allows 5 epochs.
    batch_size : int (default: 128)
        Mini-batch size.
    validation_split : float (default: 0.1)
        Share of training rows held out for early stopping; 0 disables it.
    patience : int (default: 20)
        Epochs without validation improvement before stopping.
    task : str (default: "")
        ``""`` for a plain autoencoder; ``"regression"`` or
        ``"classification"`` adds a supervised head (the paper's "non-naive"
        autoencoder) trained on ``y`` passed to :meth:`fit`.
    supervised_weight : float (default: 1.0)
        Weight of the supervised loss against the reconstruction loss.
    seed : int (default: 42)
        Seed of weight initialization, shuffling and the validation split.
    decorrelation_weight : float (default: 0.0)
        If positive, training adds this weight times the mean, over latent
        units and input columns, of their squared Pearson correlation on each
        mini-batch (see :func:`decorrelation_penalty`). Experimental: it
        lowers each unit's own correlations, but the units together can stay
        a linear function of the inputs; on one Ames peer (16-dim latent,
        weights 1 and 10) a ridge inversion attacker did not get worse while
        reconstruction and downstream accuracy did. Early stopping watches
        the total loss. The saved model does not contain the term.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        hidden_sizes: Sequence[int] = (128,),
        activation: str = "tanh",
        latent_activation: str = "linear",
        loss: str = "mse",
        learning_rate: float = 1e-3,
        epochs: int = 200,
        max_steps: int = 20000,
        batch_size: int = 128,
        validation_split: float = 0.1,
        patience: int = 20,
        task: str = "",
        supervised_weight: float = 1.0,
        seed: int = 42,
        decorrelation_weight: float = 0.0,
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden_sizes = tuple(hidden_sizes)
        self.activation = activation
        self.latent_activation = latent_activation
        self.loss = loss
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.patience = patience
        self.task = task
        self.supervised_weight = supervised_weight
        self.seed = seed
        self.decorrelation_weight = decorrelation_weight

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> Autoencoder:
        """Train on the encoded matrix ``x`` (and targets ``y`` if supervised)."""
        import keras
        import tensorflow as tf

        self._validate(x, y)
        keras.utils.set_random_seed(self.seed)
        tf.config.experimental.enable_op_determinism()
        n_outputs, head_activation, head_loss = self._head(y)
        self._attach(self._build(x.shape[1], n_outputs, head_activation))
        losses = {"reconstruction": self.loss}
        weights = {"reconstruction": 1.0}
        targets = {"reconstruction": x}
        if n_outputs:
            losses["target"] = head_loss
            weights["target"] = self.supervised_weight
            targets["target"] = y
        trainer = self._trainer()
        trainer.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=losses,
            loss_weights=weights,
        )
        train, val = self._split(len(x))
        fit_targets = {k: v[train] for k, v in targets.items()}
        validation = (x[val], {k: v[val] for k, v in targets.items()}) if len(val) else None
        callbacks = []
        if validation is not None:
            callbacks.append(keras.callbacks.EarlyStopping(
                patience=self.patience, restore_best_weights=True
            ))
        history = trainer.fit(
            x[train], fit_targets, validation_data=validation,
            epochs=self._epoch_budget(len(train)),
            batch_size=self.batch_size, shuffle=True, callbacks=callbacks, verbose=0,
        )
        self.epochs_run_ = len(history.history["loss"])
        return self

    def _build(self, n_inputs: int, n_outputs: int, head_activation: str):  # noqa: ANN202
        """Return the untrained model that :meth:`save` writes."""
        model, _ = build_autoencoder(
            n_inputs, self.latent_dim, self.hidden_sizes, self.activation,
            self.latent_activation, n_outputs, head_activation,
        )
        return model

    def _trainer(self):  # noqa: ANN202
        """Return the model :meth:`fit` trains; it shares ``model_``'s layers."""
        if self.decorrelation_weight > 0:
            return _with_decorrelation(self.model_, self.decorrelation_weight)
        return self.model_

    def _attach(self, model) -> None:  # noqa: ANN001
        """Keep ``model`` and the encoder and decoder that share its layers."""
        import keras

        self.model_ = model
        self.encoder_ = keras.Model(model.input, model.get_layer("latent").output,
                                    name="encoder")
        self.decoder_ = _decoder(model)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return the latent vectors (float32) of the rows of ``x``."""
        self._check_fitted()
        return predict_rows(self.encoder_, x)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Return the decoder's reconstruction of ``x``."""
        self._check_fitted()
        return predict_rows(self.model_, x, "reconstruction")

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Return the decoder's output (float32) for latent rows.

        ``decode(transform(x))`` is ``reconstruct(x)`` up to float rounding.
        """
        self._check_fitted()
        latents = np.asarray(latents)
        if latents.ndim != 2 or latents.shape[1] != self.decoder_.input_shape[-1]:
            raise ValueError(
                f"latents must be a 2-D matrix of {self.decoder_.input_shape[-1]} "
                f"columns, got shape {latents.shape}"
            )
        return predict_rows(self.decoder_, latents)

    def save(self, path: str | Path) -> Path:
        """Write the fitted autoencoder (encoder and decoder) as a ``.keras`` file."""
        self._check_fitted()
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"the autoencoder is saved as a .keras file, got '{path}'")
        self.model_.save(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Autoencoder:
        """Load an autoencoder written by :meth:`save`, ready to ``transform``.

        The training settings are not stored; only the fitted model is.
        """
        import keras

        model = keras.models.load_model(Path(path), compile=False)
        loaded = cls(latent_dim=int(model.get_layer("latent").units))
        loaded._attach(model)
        return loaded

    def n_weights(self, n_inputs: int) -> int:
        """Return the weights of the encoder and decoder for ``n_inputs`` columns.

        A peer checks this against its policy before it builds the model (the
        supervised head, one more small layer, is left out).
        """
        widths = [n_inputs, *self.hidden_sizes, self.latent_dim,
                  *reversed(self.hidden_sizes), n_inputs]
        return sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))

    def n_steps(self, n_rows: int) -> int:
        """Return the most optimizer steps :meth:`fit` takes on ``n_rows`` rows."""
        return self._epoch_budget(n_rows) * -(-n_rows // self.batch_size)

    def _head(self, y: np.ndarray | None) -> tuple[int, str, str]:
        if not self.task:
            return 0, "linear", ""
        if self.task == "regression":
            return 1, "linear", "mse"
        return int(np.max(y)) + 1, "softmax", "sparse_categorical_crossentropy"

    def _epoch_budget(self, n_rows: int) -> int:
        steps_per_epoch = -(-n_rows // self.batch_size)
        return max(1, min(self.epochs, self.max_steps // steps_per_epoch))

    def _split(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng(self.seed).permutation(n_rows)
        n_val = int(round(self.validation_split * n_rows))
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _validate(self, x: np.ndarray, y: np.ndarray | None) -> None:
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"x must be a 2-D matrix with rows, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("x has non-finite values")
        if self.task not in ("", "regression", "classification"):
            raise ValueError(
                f"task must be '', 'regression' or 'classification', got {self.task!r}"
            )
        if self.task and (y is None or len(y) != len(x)):
            raise ValueError("a supervised autoencoder needs one target per row of x")
        if self.loss not in ("mae", "mse"):
            raise ValueError(f"loss must be 'mae' or 'mse', got {self.loss!r}")
        if min(self.epochs, self.max_steps, self.batch_size) < 1:
            raise ValueError(
                "epochs, max_steps and batch_size must be positive, got "
                f"{self.epochs}, {self.max_steps} and {self.batch_size}")
        if self.latent_dim < 1 or any(w < 1 for w in self.hidden_sizes):
            raise ValueError("latent_dim and hidden_sizes must be positive")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(
                f"validation_split must be in [0, 1), got {self.validation_split}"
            )
        if not (np.isfinite(self.decorrelation_weight) and self.decorrelation_weight >= 0):
            raise ValueError(
                "decorrelation_weight must be a finite number >= 0, got "
                f"{self.decorrelation_weight}"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_"):
            raise RuntimeError("Autoencoder is not fitted; call fit() first")


class IdentityEncoder:
    """Pass the preprocessed columns through unchanged.

    The raw-column baseline (scenario S0) in simulation; it shares the peer's
    scaled raw values and is refused outside simulation.
    """

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> IdentityEncoder:
        """Remember the input width."""
        self.n_features_ = x.shape[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` as float32."""
        return np.asarray(x, dtype=np.float32)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` as float32: the identity reconstructs perfectly."""
        return np.asarray(x, dtype=np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Return ``latents`` as float32: the latents are the columns."""
        return np.asarray(latents, dtype=np.float32)


def representation_metrics(
    x: np.ndarray,
    reconstruction: np.ndarray,
    numeric_original: np.ndarray,
    reconstructed_original: np.ndarray,
    numeric_scale: np.ndarray,
    categorical_blocks: Sequence[slice],
) -> dict[str, float]:
    """Compute the paper's two representation metrics on some rows.

    ``reconstruction-mae`` is the mean absolute error between the encoded
    (standardized, one-hot) matrix ``x`` and its reconstruction.
    ``within-5pct`` is the share of (row, feature) observations that are
    reconstructed within 5 %, averaged over features: a numeric value counts
    when ``|x_hat - x| <= 0.05 * max(|x|, s)`` in original units, where ``s``
    is the feature's training standard deviation (so zeros are not divided
    by); a categorical value counts when the largest reconstructed one-hot
    entry is the true level. ``within-5pct-min`` is the worst feature's share.
    """
    shares = []
    if numeric_original.shape[1]:
        tolerance = 0.05 * np.maximum(np.abs(numeric_original), numeric_scale)
        within = np.abs(reconstructed_original - numeric_original) <= tolerance
        shares.extend(within.mean(axis=0).tolist())
    for block in categorical_blocks:
        hits = x[:, block].argmax(axis=1) == reconstruction[:, block].argmax(axis=1)
        shares.append(float(hits.mean()))
    return {
        "reconstruction-mae": float(np.abs(x - reconstruction).mean()),
        "within-5pct": float(np.mean(shares)),
        "within-5pct-min": float(np.min(shares)),
    }
