"""The per-peer supervised release: a cross-fitted prediction of the label.

Instead of a latent that carries all of its columns, a peer fits XGBoost
(the project's early-stopped recipe, :mod:`vfl_embed.boosting`) on its own
columns to predict the label and releases only that prediction: one
number per entity for a regression, the class probabilities (less the last,
which the others determine) for a classification. This is stacking with the
peers as base learners. A training row's release comes from the fold model
that did not see it (cross-fitting), so the server's model learns from
predictions as noisy as those of new entities. The release carries what the
task needs, and the audit shows how little else: what any label-useful
release must leak is the label floor.

The peer needs the label of its training rows for this (the request's
training targets); its policy's ``accept-labels`` decides whether it takes
them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..boosting import MAX_TREES, RECIPE, fit_early_stopped, xgboost_estimator

__all__ = ["CrossFittedPredictor"]

_PARAMS_FILE = "predictor.json"


class CrossFittedPredictor:
    """XGBoost on one peer's columns, released out of fold on the training rows.

    Parameters
    ----------
    task : str
        ``"regression"`` or ``"classification"``.
    n_classes : int (default: 0)
        Number of classes of a classification (the release's width is one
        less); :meth:`fit` raises it to the labels' own if they hold more.
    n_folds : int (default: 5)
        Folds of the cross-fitting.
    seed : int (default: 42)
        Seed of the folds and of XGBoost.

    Attributes
    ----------
    model_ : xgboost.XGBModel
        The model fitted on every training row; it predicts new entities.
    oof_ : np.ndarray
        The out-of-fold release of the training rows, in their order.
    n_classes_ : int
        Number of classes (0 for a regression).
    """

    def __init__(self, task: str, n_classes: int = 0, n_folds: int = 5,
                 seed: int = 42) -> None:
        self.task = task
        self.n_classes = n_classes
        self.n_folds = n_folds
        self.seed = seed

    @property
    def latent_dim(self) -> int:
        """Width of the release: 1, or the number of classes less one."""
        classes = getattr(self, "n_classes_", self.n_classes)
        return 1 if self.task == "regression" else max(1, classes - 1)

    def n_weights(self, n_inputs: int) -> int:
        """Return the most leaves of the fold and full models (the policy's size)."""
        return (self.n_folds + 1) * MAX_TREES * 2 ** RECIPE["max_depth"]

    def n_steps(self, n_rows: int) -> int:
        """Return the most boosting rounds of the fold and full models."""
        return (self.n_folds + 1) * MAX_TREES

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> CrossFittedPredictor:
        """Fit the fold models (for :attr:`oof_`) and the full model on ``x``, ``y``."""
        from sklearn.model_selection import KFold, StratifiedKFold

        self._validate(x, y)
        self.n_classes_ = (max(self.n_classes, int(np.max(y)) + 1)
                           if self.task == "classification" else 0)
        splitter = (StratifiedKFold if self.task == "classification" else KFold)(
            n_splits=self.n_folds, shuffle=True, random_state=self.seed)
        self.oof_ = np.zeros((len(x), self.latent_dim), dtype=np.float32)
        for fold, (train, held) in enumerate(splitter.split(x, y)):
            model = self._fit(x[train], y[train], self.seed + fold + 1)
            self.oof_[held] = self._predict(model, x[held])
        self.model_ = self._fit(x, y, self.seed)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Return the full model's release for rows ``x`` (new entities)."""
        return self._predict(self.model_, x)

    def release(self, x: np.ndarray, train: np.ndarray) -> np.ndarray:
        """Return the release of every row: out of fold where ``train`` is True."""
        released = self.transform(x)
        released[train] = self.oof_
        return released

    def save(self, directory: str | Path) -> None:
        """Write the full model (XGBoost's JSON) and the parameters; no pickle."""
        directory = Path(directory)
        self.model_.save_model(directory / "predictor_model.json")
        params = {k: getattr(self, k) for k in ("task", "n_classes", "n_folds", "seed",
                                                "n_classes_")}
        (directory / _PARAMS_FILE).write_text(json.dumps(params))

    @classmethod
    def load(cls, directory: str | Path) -> CrossFittedPredictor:
        """Read a predictor written by :meth:`save` (the full model only)."""
        directory = Path(directory)
        params = json.loads((directory / _PARAMS_FILE).read_text())
        n_classes = params.pop("n_classes_")
        loaded = cls(**params)
        loaded.n_classes_ = n_classes
        loaded.model_ = xgboost_estimator(loaded.task)
        loaded.model_.load_model(directory / "predictor_model.json")
        return loaded

    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int):  # noqa: ANN202
        # One thread: the peer's models are small, and a deployed peer shares its host.
        return fit_early_stopped(self.task, x, y, seed=seed, n_jobs=1)

    def _predict(self, model, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
        if self.task == "regression":
            return model.predict(x).astype(np.float32).reshape(-1, 1)
        proba = model.predict_proba(x).astype(np.float32)
        return proba[:, :self.latent_dim]

    def _validate(self, x: np.ndarray, y: np.ndarray | None) -> None:
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be regression or classification, got {self.task!r}")
        if y is None or len(y) != len(x):
            raise ValueError("the prediction release needs one training label per row")
        if len(x) < 2 * self.n_folds:
            raise ValueError(f"cross-fitting with {self.n_folds} folds needs at least "
                             f"{2 * self.n_folds} training rows")
