"""A variational information bottleneck a peer trains on its own columns.

The encoder gives each row a Gaussian posterior ``q(z|x) = N(mean,
diag(exp(log_variance)))``; training minimizes the reconstruction loss (plus
the supervised loss) plus ``beta`` times ``KL(q(z|x) || N(0, I))``, so the
latent keeps what the decoder and the head need and pays for every nat of
the rest. The peer releases one *sample* of ``q(z|x)`` per row, not its
mean: the sample's noise is what hides the row (this is the MID defence of
VFLAIR and SecretFlow; Alemi et al., ICLR 2017, "Deep Variational
Information Bottleneck").

The mean KL over the released rows bounds, given the encoder, the mutual
information between a row and its one release (see docs/bottleneck.md).
"""

from __future__ import annotations

import numpy as np

from ..batching import predict_rows
from .autoencoder import Autoencoder, _rewired, build_autoencoder

__all__ = ["InformationBottleneck", "gaussian_kl", "mean_kl_nats", "posterior_sample"]


def gaussian_kl(mean, log_variance):  # noqa: ANN001, ANN201 - arrays or tensors
    """Return each row's ``KL(N(mean, diag(exp(log_variance))) || N(0, I))`` in nats.

    Works on numpy arrays and on Keras tensors alike (training uses it too).

    Parameters
    ----------
    mean, log_variance : array or tensor
        ``(rows, latent units)`` posterior means and log-variances.
    """
    from keras import ops

    return 0.5 * ops.sum(ops.square(mean) + ops.exp(log_variance) - 1.0 - log_variance,
                         axis=-1)


def mean_kl_nats(mean: np.ndarray, log_variance: np.ndarray) -> float:
    """Return the mean over rows of :func:`gaussian_kl`, in nats, computed in float64."""
    from keras import ops

    kl = gaussian_kl(np.asarray(mean, dtype=np.float64),
                     np.asarray(log_variance, dtype=np.float64))
    return float(np.mean(ops.convert_to_numpy(kl)))


def posterior_sample(mean: np.ndarray, log_variance: np.ndarray,
                     noise: np.ndarray) -> np.ndarray:
    """Return ``mean + exp(log_variance / 2) * noise`` as float32.

    ``noise`` holds standard normal values of the same shape as ``mean``.
    """
    if noise.shape != mean.shape:
        raise ValueError(f"noise must have shape {mean.shape}, got {noise.shape}")
    spread = np.exp(0.5 * np.asarray(log_variance, dtype=np.float64))
    return (mean + spread * noise).astype(np.float32)


def _stochastic(model, beta: float, seed: int, detach_decoder: bool):  # noqa: ANN001, ANN202
    """Return a training model that decodes a sample of the posterior.

    Its loss adds ``beta`` times the batch's mean :func:`gaussian_kl`; see
    :func:`~vfl_embed.peer.autoencoder._rewired` for ``detach_decoder``.
    """
    import keras

    class GaussianSample(keras.layers.Layer):
        def __init__(self, **kwargs) -> None:  # noqa: ANN003
            super().__init__(**kwargs)
            self.generator = keras.random.SeedGenerator(seed)

        def call(self, tensors):  # noqa: ANN001, ANN202
            mean, log_variance = tensors
            self.add_loss(beta * keras.ops.mean(gaussian_kl(mean, log_variance)))
            noise = keras.random.normal(keras.ops.shape(mean), seed=self.generator)
            return mean + keras.ops.exp(0.5 * log_variance) * noise

    sample = GaussianSample(name="sample")
    log_variance = model.get_layer("log_variance")
    return _rewired(model, lambda inputs, hidden, mean: sample([mean, log_variance(hidden)]),
                    "bottleneck_trainer", detach_decoder)


class InformationBottleneck(Autoencoder):
    """A peer's variational information bottleneck, scikit-learn-like.

    It trains like :class:`~vfl_embed.peer.autoencoder.Autoencoder` (same
    architecture, early stopping, step budget and supervised head; the
    latent layer gives the posterior mean, a second layer beside it the
    log-variance) and is saved and loaded alike. ``transform`` returns the
    posterior mean and ``reconstruct`` decodes it (the peer's representation
    metrics); the release is :meth:`sample`.

    Parameters
    ----------
    beta : float (default: 0.01)
        Weight of the KL term against the (mean per column) reconstruction
        loss. Larger values carry fewer nats per row, and less of the row.
    detach_decoder : bool (default: False)
        Train the decoder on the sample through a stopped gradient, so that
        reconstruction does not shape the latent: the latent then keeps what
        the supervised head needs (the VIB of Alemi et al. and the MID
        defence); the decoder still learns, for the audit's ceiling. Needs a
        supervised ``task``.
    **params
        :class:`~vfl_embed.peer.autoencoder.Autoencoder`'s parameters, but
        ``decorrelation_weight`` must stay 0.

    Attributes
    ----------
    model_ : keras.Model
        The fitted model: reconstruction (decoded from the mean), log-variance
        and, if supervised, target outputs.
    posterior_ : keras.Model
        Rows to ``{"mean", "log_variance"}``.
    epochs_run_ : int
        Epochs trained.
    """

    def __init__(self, beta: float = 0.01, detach_decoder: bool = False,
                 **params: object) -> None:
        super().__init__(**params)
        self.beta = beta
        self.detach_decoder = detach_decoder

    def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the posterior ``(mean, log_variance)`` (float32) of the rows of ``x``."""
        self._check_fitted()
        return (predict_rows(self.posterior_, x, "mean"),
                predict_rows(self.posterior_, x, "log_variance"))

    def sample(self, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Return :func:`posterior_sample` of the rows of ``x`` with standard normal noise."""
        return posterior_sample(*self.posterior(x), noise)

    def n_weights(self, n_inputs: int) -> int:
        """Return the weights of the encoder (both heads) and decoder for ``n_inputs``."""
        last = self.hidden_sizes[-1] if self.hidden_sizes else n_inputs
        return super().n_weights(n_inputs) + (last + 1) * self.latent_dim

    def _build(self, n_inputs: int, n_outputs: int, head_activation: str):  # noqa: ANN202
        import keras

        model, _ = build_autoencoder(
            n_inputs, self.latent_dim, self.hidden_sizes, self.activation,
            self.latent_activation, n_outputs, head_activation,
        )
        hidden = model.get_layer(f"enc_{len(self.hidden_sizes) - 1}").output \
            if self.hidden_sizes else model.input
        log_variance = keras.layers.Dense(self.latent_dim, name="log_variance")(hidden)
        return keras.Model(model.input, model.output | {"log_variance": log_variance},
                           name="bottleneck")

    def _trainer(self):  # noqa: ANN202
        return _stochastic(self.model_, self.beta, self.seed, self.detach_decoder)

    def _attach(self, model) -> None:  # noqa: ANN001
        import keras

        super()._attach(model)
        self.posterior_ = keras.Model(
            model.input, {"mean": model.get_layer("latent").output,
                          "log_variance": model.get_layer("log_variance").output},
            name="posterior")

    def _validate(self, x: np.ndarray, y: np.ndarray | None) -> None:
        super()._validate(x, y)
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        if self.detach_decoder and not self.task:
            raise ValueError("detach_decoder needs a supervised task: without one "
                             "nothing but the KL would train the encoder")
        if self.decorrelation_weight:
            raise ValueError("decorrelation_weight does not apply to the information "
                             "bottleneck; leave it 0")

    def _check_fitted(self) -> None:
        if not hasattr(self, "posterior_"):
            raise RuntimeError("InformationBottleneck is not fitted; call fit() first")
