"""The inversion attackers of the privacy audit: ridge, k-NN and an MLP.

Each attacker is trained on the leaked rows (latent -> every encoded column,
numeric and one-hot, at once), is tuned on them only, and predicts the
held-out rows. The latents come in two scalings, both with the statistics of
all released latents (:func:`latent_views`): each column to unit variance
(``"standardized"``), or all columns by one common scale, which keeps the
latent's geometry (``"scaled"``).

- ``"ridge"``: ridge regression; scaling and penalty by efficient
  leave-one-out (``RidgeCV``), once for the numeric and once for the one-hot
  targets (a penalty per feature proved unstable with a few dozen rows);
- ``"knn"``: mean of the k nearest leaked rows; scaling and ``k`` per
  numeric feature and per categorical column by leave-one-out;
- ``"mlp"``: a one-hidden-layer ``MLPRegressor`` (tanh, L-BFGS, at most
  ``MLP_MAX_ITER`` iterations) on standardized latents, width and L2 penalty
  by ``MLP_FOLDS``-fold cross-validation over ``MLP_GRID`` (``MLP_GRID_LARGE``
  from ``MLP_LARGE_FROM`` leaked rows), on at most ``MLP_MAX_ROWS`` of the
  leaked rows.

See :class:`~vfl_embed.privacy.audit.ReconstructionAudit` for the protocol.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Protocol

import numpy as np

__all__ = ["ATTACKERS", "Layout", "Views", "attack", "latent_views"]

# Attackers the suite knows, in the order ties are broken.
ATTACKERS = ("ridge", "knn", "mlp")
# Ridge penalties tried (efficient leave-one-out on the leaked rows).
RIDGE_ALPHAS = np.logspace(-3, 4, 15)
# Neighbour counts tried (leave-one-out on the leaked rows, per feature);
# only those below the number of leaked rows.
KNN_NEIGHBOURS = (1, 2, 3, 5, 8, 13, 21, 34)
# MLP settings tried ((hidden width, L2 penalty), MLP_FOLDS-fold CV on the
# leaked rows); the larger grid once at least MLP_LARGE_FROM rows leaked. The
# MLP is most of the audit's time: keep these short.
MLP_GRID = ((32, 1.0), (128, 1.0), (128, 10.0))
MLP_GRID_LARGE = ((32, 1.0), (128, 0.1), (128, 1.0), (128, 10.0))
MLP_LARGE_FROM = 100
MLP_FOLDS = 3
MLP_MAX_ITER = 200
# The MLP trains on at most this many of the leaked rows (a seeded subset),
# ridge and k-NN on all of them.
MLP_MAX_ROWS = 2000
# Rows per block of a distance computation (memory: CHUNK_ROWS x leaked rows).
CHUNK_ROWS = 1024

# Per view name, the (leaked rows, held-out rows) of the scaled latents.
Views = Mapping[str, tuple[np.ndarray, np.ndarray]]


class Layout(Protocol):
    """What an attacker needs to know of the encoded columns."""

    n_numeric: int
    blocks: tuple[slice, ...]


def attack(
    name: str, views: Views, y: np.ndarray, layout: Layout, seed: int
) -> tuple[np.ndarray, str]:
    """Train attacker ``name`` on the leaked rows; predict the held-out rows.

    Parameters
    ----------
    name : str
        One of :data:`ATTACKERS`.
    views : Views
        The latents' scalings from :func:`latent_views`.
    y : numpy.ndarray
        ``(leaked rows, d)`` encoded columns of the leaked rows.
    layout : Layout
        Where the numeric columns and one-hot blocks of ``y`` are.
    seed : int
        Seed of the CV folds, the row subset and the MLP's initialization.

    Returns
    -------
    tuple[numpy.ndarray, str]
        The ``(held-out rows, d)`` prediction and the setting tuning chose.
    """
    return _ATTACKS[name](views, y, layout, seed)


def latent_views(
    values: np.ndarray, leaked: np.ndarray, held: np.ndarray
) -> Views:
    """Return the two scalings of the released latents the attackers may use.

    Both use the statistics of all rows (the server holds every released
    latent): ``"standardized"`` gives each column unit variance, ``"scaled"``
    divides all columns by one common scale and so keeps the latent's own
    geometry (a low-variance column stays small). Each view is split into the
    leaked and the scored held-out rows.
    """
    centred = values - values.mean(axis=0)
    std = centred.std(axis=0)
    common = np.sqrt(np.mean(std ** 2))
    views = {
        "standardized": centred / np.where(std > 0, std, 1.0),
        "scaled": centred / (common if common > 0 else 1.0),
    }
    return {name: (view[leaked], view[held]) for name, view in views.items()}




def _target_groups(n_numeric: int, width: int) -> list[tuple[str, slice]]:
    """Numeric columns and one-hot columns: each group gets its own tuning."""
    groups = []
    if n_numeric:
        groups.append(("numeric", slice(0, n_numeric)))
    if n_numeric < width:
        groups.append(("categorical", slice(n_numeric, width)))
    return groups


def _ridge(views: Views, y: np.ndarray, layout: Layout, seed: int) -> tuple[np.ndarray, str]:
    """Ridge; view and penalty per group of targets by efficient leave-one-out.

    One penalty per group rather than per feature: with a few dozen leaked
    rows a per-feature choice is noisy and sometimes picks a penalty that
    explodes on the held-out rows.
    """
    from sklearn.linear_model import RidgeCV

    n_new = len(next(iter(views.values()))[1])
    predicted = np.empty((n_new, y.shape[1]))
    settings = []
    for group_name, group in _target_groups(layout.n_numeric, y.shape[1]):
        fits = []
        for view, (z, z_new) in views.items():
            model = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, y[:, group])
            fits.append((-model.best_score_, view, model, z_new))
        _, view, model, z_new = min(fits, key=lambda fit: fit[0])
        predicted[:, group] = model.predict(z_new).reshape(n_new, -1)
        settings.append(f"{group_name}: {view}, alpha {model.alpha_:.3g}")
    return predicted, "; ".join(settings)


def _knn(views: Views, y: np.ndarray, layout: Layout, seed: int) -> tuple[np.ndarray, str]:
    """k-NN mean; view and k per numeric feature and per one-hot block, by leave-one-out.

    A one-hot block is scored by its Brier score (squared error summed over
    its columns), so it gets one k.
    """
    ks = np.array([k for k in KNN_NEIGHBOURS if k < len(y)])
    k_max = int(ks.max())
    groups = [slice(j, j + 1) for j in range(layout.n_numeric)] + list(layout.blocks)
    errors, orders_new = [], []
    for z, z_new in views.values():
        order = _nearest(z, z, k_max, leave_one_out=True)
        column_errors = np.zeros((len(ks), y.shape[1]))
        for start in range(0, len(y), CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            means = np.cumsum(y[order[rows]], axis=1)[:, ks - 1] / ks[None, :, None]
            column_errors += ((means - y[rows, None, :]) ** 2).sum(axis=0)
        errors.append([column_errors[:, group].sum(axis=1) for group in groups])
        orders_new.append(_nearest(z_new, z, k_max))
    errors = np.array(errors)  # (views, groups, ks)
    predicted = np.empty((len(orders_new[0]), y.shape[1]))
    chosen_k = []
    for g, group in enumerate(groups):
        v, i = np.unravel_index(errors[:, g, :].argmin(), errors[:, g, :].shape)
        k = int(ks[i])
        predicted[:, group] = y[orders_new[v][:, :k]][:, :, group].mean(axis=1)
        chosen_k.append(k)
    return predicted, f"k in [{min(chosen_k)}, {max(chosen_k)}]"


def _nearest(
    query: np.ndarray, reference: np.ndarray, k: int, leave_one_out: bool = False
) -> np.ndarray:
    """Return the ``k`` nearest reference rows of each query row (ties: lower index).

    With ``leave_one_out``, ``query`` is ``reference`` and a row is not its
    own neighbour. Computed in chunks of rows to bound memory.
    """
    nearest = np.empty((len(query), k), dtype=np.intp)
    for start in range(0, len(query), CHUNK_ROWS):
        distances = _sq_distances(query[start:start + CHUNK_ROWS], reference)
        if leave_one_out:
            rows = np.arange(len(distances))
            distances[rows, start + rows] = np.inf
        nearest[start:start + len(distances)] = np.argsort(
            distances, axis=1, kind="stable")[:, :k]
    return nearest


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a ** 2).sum(axis=1)[:, None] + (b ** 2).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.maximum(squared, 0.0)


def _mlp(views: Views, y: np.ndarray, layout: Layout, seed: int) -> tuple[np.ndarray, str]:
    """MLP on standardized latents; width and L2 penalty by k-fold CV on the leaked rows."""
    from sklearn.model_selection import KFold

    # float32 halves the time of a fit and changes no figure that matters.
    z, z_new = (view.astype(np.float32) for view in views["standardized"])
    y = y.astype(np.float32)
    if len(z) > MLP_MAX_ROWS:  # bound the cost on very large leaks
        rows = np.sort(np.random.default_rng(seed).choice(len(z), MLP_MAX_ROWS,
                                                          replace=False))
        z, y = z[rows], y[rows]
    grid = MLP_GRID_LARGE if len(z) >= MLP_LARGE_FROM else MLP_GRID
    folds = list(KFold(MLP_FOLDS, shuffle=True, random_state=seed).split(z))
    errors = []
    for width, alpha in grid:
        error = 0.0
        for train, test in folds:
            model = _fit_mlp(z[train], y[train], width, alpha, seed)
            error += ((model.predict(z[test]).reshape(len(test), -1) - y[test]) ** 2).sum()
        errors.append(error)
    width, alpha = grid[int(np.argmin(errors))]
    model = _fit_mlp(z, y, width, alpha, seed)
    predicted = model.predict(z_new).reshape(len(z_new), -1).astype(np.float64)
    return predicted, f"width {width}, alpha {alpha:g}"


def _fit_mlp(z: np.ndarray, y: np.ndarray, width: int, alpha: float, seed: int):  # noqa: ANN202
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    model = MLPRegressor(hidden_layer_sizes=(width,), activation="tanh", solver="lbfgs",
                         alpha=alpha, max_iter=MLP_MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        # Bounded iterations are the budget, not a failure.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(z, y if y.shape[1] > 1 else y.ravel())


_ATTACKS = {"ridge": _ridge, "knn": _knn, "mlp": _mlp}
