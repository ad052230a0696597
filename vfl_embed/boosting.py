"""The project's XGBoost recipe, shared by the server's model and the peers' releases.

Early stopping on a seeded share of the training rows picks the number of
trees, then the model is refitted on all of them. The server's downstream
model (:class:`~vfl_embed.server.downstream.DownstreamModel`) and each
peer's prediction release
(:class:`~vfl_embed.peer.predictor.CrossFittedPredictor`) fit the same way,
so a stacked run and the raw-column baseline differ in what they see, not
in how they learn.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_TREES", "RECIPE", "fit_early_stopped", "holdout_rows", "xgboost_estimator"]

# Shrinkage, depth and sampling of every early-stopped model.
RECIPE = {"learning_rate": 0.03, "max_depth": 4, "subsample": 0.8,
          "colsample_bytree": 0.6, "min_child_weight": 2}
MAX_TREES = 3000
PATIENCE = 150
VALIDATION_SHARE = 0.15


def xgboost_estimator(task: str, **params: object):  # noqa: ANN201 - an XGBoost estimator
    """Return an unfitted XGBoost regressor or classifier with ``hist`` trees."""
    import xgboost as xgb

    kind = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    return kind(tree_method="hist", **params)


def fit_early_stopped(
    task: str, x: np.ndarray, y: np.ndarray, *, seed: int, n_jobs: int = -1,
    refit_max_rows: int = 100_000, **overrides: object,
):  # noqa: ANN201 - an XGBoost estimator
    """Fit the recipe on ``x``, ``y``: early stopping picks the trees, then a refit.

    Parameters
    ----------
    task : str
        ``"regression"`` or ``"classification"`` (targets ``0..K-1``).
    x, y : numpy.ndarray
        Training rows and targets.
    seed : int
        Seed of the held-out rows and of XGBoost.
    n_jobs : int (default: -1)
        XGBoost's threads (-1: all cores).
    refit_max_rows : int (default: 100000)
        From this many rows on, the early-stopped model is kept instead of
        refitted: the held-out rows add little, and the refit would double
        the learn time.
    **overrides
        XGBoost parameters that replace the :data:`RECIPE`'s.
    """
    params = RECIPE | {"random_state": seed, "n_jobs": n_jobs} | overrides
    fit_rows, val_rows = holdout_rows(len(x), VALIDATION_SHARE, seed)
    probe = xgboost_estimator(task, n_estimators=MAX_TREES, early_stopping_rounds=PATIENCE,
                              **params)
    probe.fit(x[fit_rows], y[fit_rows], eval_set=[(x[val_rows], y[val_rows])],
              verbose=False)
    if len(x) >= refit_max_rows:
        return probe
    return xgboost_estimator(task, n_estimators=max(probe.best_iteration + 1, 50),
                             **params).fit(x, y)


def holdout_rows(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n_rows`` row numbers, seeded, into fitting rows and ``fraction`` held out."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_val = max(1, int(round(fraction * n_rows)))
    return order[n_val:], order[:n_val]
