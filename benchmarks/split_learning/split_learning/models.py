"""The Keras models of split learning: a peer's bottom MLP, the server's top MLP.

Training goes through :class:`Trainable`: a model, its Adam optimizer, and
their state as NumPy arrays, so a peer can keep both in its Flower
``Context.state`` between messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def parse_sizes(text: object) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; an empty text means no hidden layer."""
    sizes = tuple(int(part) for part in str(text).split(",") if part.strip())
    if any(size < 1 for size in sizes):
        raise ValueError(f"hidden sizes must be positive integers, got '{text}'")
    return sizes


def peer_seed(seed: int, name: str) -> int:
    """Derive a peer's own seed from the run's seed and its name."""
    digest = hashlib.sha256(f"{seed}:split:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def build_mlp(n_inputs: int, hidden_sizes: Sequence[int], n_outputs: int,
              activation: str, seed: int, name: str):  # noqa: ANN201 - keras is lazy
    """Build a seeded MLP ``n_inputs -> hidden_sizes -> n_outputs`` (linear output)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(n_inputs,), name="inputs")
    x = inputs
    for i, width in enumerate(hidden_sizes):
        x = keras.layers.Dense(width, activation=activation, name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(n_outputs, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


class Trainable:
    """A Keras model with its Adam optimizer; one gradient step at a time.

    Parameters
    ----------
    model : keras.Model
        The model to train.
    learning_rate : float
        Adam's learning rate.
    """

    def __init__(self, model, learning_rate: float) -> None:  # noqa: ANN001
        import keras

        self.model = model
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(model.trainable_variables)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Return the model's output (float32) for ``x``."""
        return np.asarray(self.model(x, training=False), dtype=np.float32)

    def step_from_output_gradients(self, x: np.ndarray, gradients: np.ndarray) -> None:
        """Back-propagate ``gradients`` (d loss / d output at ``x``) and step Adam."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            output = self.model(x, training=True)
        grads = tape.gradient(output, self.model.trainable_variables,
                              output_gradients=tf.constant(gradients))
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables,
                                           strict=True))

    def step_on_loss(self, x: np.ndarray, y: np.ndarray, loss) -> tuple[float, np.ndarray]:  # noqa: ANN001
        """Take one Adam step on ``loss(y, model(x))``; return it and d loss / d ``x``.

        The input gradient is taken with the weights before the step.
        """
        import tensorflow as tf

        inputs = tf.constant(x)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            value = loss(y, self.model(inputs, training=True))
        input_grad, *grads = tape.gradient(value, [inputs, *variables])
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return float(value), np.asarray(input_grad, dtype=np.float32)

    @property
    def steps(self) -> int:
        """Optimizer steps taken."""
        return int(self.optimizer.iterations.numpy())

    def get_state(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Return ``(weights, optimizer variables)`` as NumPy arrays."""
        return (self.model.get_weights(),
                [np.asarray(v.numpy()) for v in self.optimizer.variables])

    def set_state(self, weights: list[np.ndarray],
                  optimizer: list[np.ndarray] | None = None) -> None:
        """Set the weights and, if given, the optimizer variables."""
        self.model.set_weights(weights)
        if optimizer is not None:
            for variable, value in zip(self.optimizer.variables, optimizer, strict=True):
                variable.assign(value)
