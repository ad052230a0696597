"""Row-wise model calls whose output for a row does not depend on the other rows.

Both sides score rows this way: a peer encodes them, the server predicts them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ROW_BATCH", "in_fixed_batches", "predict_rows"]

# Rows per model call in in_fixed_batches. Every call has exactly this shape,
# so a row's output does not depend on which other rows are scored with it.
ROW_BATCH = 2048


def predict_rows(model, x: np.ndarray, output: str = "") -> np.ndarray:  # noqa: ANN001
    """Call a Keras ``model`` on the rows of ``x``, row by row reproducibly.

    See :func:`in_fixed_batches`; ``model.predict`` would also retrace the
    graph per model.

    Parameters
    ----------
    model : keras.Model
        A model with one input.
    x : numpy.ndarray
        ``(n, features)`` input rows.
    output : str (default: "")
        Name of the output to return, for models with several.
    """
    import keras

    def call(rows: np.ndarray) -> np.ndarray:
        out = model(rows, training=False)
        return keras.ops.convert_to_numpy(out[output] if output else out)

    return in_fixed_batches(call, np.asarray(x, dtype=np.float32)).astype(
        np.float32, copy=False)


def in_fixed_batches(
    function: Callable[[np.ndarray], np.ndarray], x: np.ndarray
) -> np.ndarray:
    """Apply a row-wise ``function`` to ``x`` in batches of exactly ``ROW_BATCH`` rows.

    CPU matrix kernels sum in an order that depends on the matrix shape and,
    when BLAS splits a product among threads, on a row's place in it; the
    same row can then come out a few ULPs apart when scored among other
    rows. Every call here gets a batch of the same shape (the last one
    zero-padded) and BLAS one thread (TensorFlow's and XGBoost's own thread
    pools are not affected), so each row's output is the same bits whatever
    rows surround it: scoring entities later gives what training gave them.
    """
    from threadpoolctl import threadpool_limits

    parts = []
    with threadpool_limits(1, user_api="blas"):
        for start in range(0, max(len(x), 1), ROW_BATCH):  # one call even for no rows
            rows = x[start:start + ROW_BATCH]
            padded = np.zeros((ROW_BATCH, *x.shape[1:]), dtype=x.dtype)
            padded[:len(rows)] = rows
            parts.append(np.asarray(function(padded))[:len(rows)])
    return np.concatenate(parts)


