"""Downstream models trained by the server on the joined latents, and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from ..batching import in_fixed_batches, predict_rows
from ..boosting import fit_early_stopped, holdout_rows, xgboost_estimator

__all__ = ["MODEL_FILES", "MODELS", "DownstreamModel", "score"]

MODELS = ("xgboost", "logistic", "ridge", "mlp")
# The file each kind of model is saved as; nothing else is ever loaded.
_FILE_OF_KIND = {"xgboost": "downstream_model.json", "mlp": "downstream_model.keras",
                 "logistic": "downstream_model.logistic.json",
                 "ridge": "downstream_model.ridge.json"}
# The scikit-learn step name of each linear model's regression.
_LINEAR_STEP = {"logistic": "logisticregression", "ridge": "ridge"}
# Ridge penalties tried by leave-one-out cross-validation.
RIDGE_ALPHAS = np.logspace(-3, 3, 13)
MODEL_FILES = {name: kind for kind, name in _FILE_OF_KIND.items()}

# The paper's randomized search space for XGBoost.
XGB_SEARCH_SPACE = {
    "learning_rate": [0.01, 0.02, 0.05, 0.1, 0.2],
    "max_depth": [2, 3, 4, 5, 6, 8],
    "min_child_weight": [1, 2, 4, 8],
    "gamma": [0.0, 0.01, 0.1, 0.3],
    "colsample_bytree": [0.3, 0.5, 0.7, 0.9, 1.0],
}


class DownstreamModel:
    """XGBoost, a linear model or a Keras MLP behind one interface.

    Parameters
    ----------
    kind : str (default: "xgboost")
        ``"xgboost"`` (regressor or classifier, ``hist`` trees, all cores),
        ``"logistic"`` (multinomial logistic regression; classification only),
        ``"ridge"`` (ridge regression, its penalty picked by leave-one-out
        cross-validation; regression only: the combiner of stacked
        ``prediction`` releases) or ``"mlp"`` (Keras multilayer perceptron).
    task : str (default: "regression")
        ``"regression"`` or ``"classification"`` (targets ``0..K-1``).
    search_iterations : int (default: 0)
        If positive, the number of randomized hyper-parameter settings tried
        with 3-fold cross-validation on the training rows (XGBoost and
        logistic regression).
    seed : int (default: 42)
        Seed of every random choice.
    refit_max_rows : int (default: 100000)
        XGBoost picks its number of trees by early stopping on 15 % of the
        training rows, then refits on all of them; from this many training
        rows on it keeps the early-stopped model instead, since the rows it
        did not see add little and the refit would double the learn time.
    """

    def __init__(
        self,
        kind: str = "xgboost",
        task: str = "regression",
        search_iterations: int = 0,
        seed: int = 42,
        refit_max_rows: int = 100_000,
    ) -> None:
        self.kind = kind
        self.task = task
        self.search_iterations = search_iterations
        self.seed = seed
        self.refit_max_rows = refit_max_rows

    def fit(self, x: np.ndarray, y: np.ndarray) -> DownstreamModel:
        """Train on features ``x`` and targets ``y``."""
        self._validate(x, y)
        if self.task == "classification":
            self.n_classes_ = int(np.max(y)) + 1
        self.model_ = getattr(self, f"_fit_{self.kind}")(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict targets (class indices for classification).

        A row's prediction does not depend on the other rows of ``x`` (see
        :func:`~vfl_embed.batching.in_fixed_batches`).
        """
        self._check_fitted()
        if self.kind == "mlp":
            out = predict_rows(self.model_, x)
            return out.argmax(axis=1) if self.task == "classification" else out.ravel()
        return in_fixed_batches(self.model_.predict, x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(n, n_classes)``; classification only."""
        self._check_fitted()
        if self.task != "classification":
            raise RuntimeError("predict_proba is only defined for classification")
        if self.kind == "mlp":
            return predict_rows(self.model_, x)
        return in_fixed_batches(self.model_.predict_proba, x)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Return the task's metrics on ``(x, y)``; see :func:`score`."""
        proba = self.predict_proba(x) if self.task == "classification" else None
        return score(self.task, y, self.predict(x), proba)

    def save(self, directory: str | Path) -> Path:
        """Write the model into ``directory`` and return the file's path.

        The file is ``downstream_model.json`` (XGBoost's own format),
        ``downstream_model.keras`` (Keras) or ``downstream_model.logistic.json``
        / ``downstream_model.ridge.json`` (the scaler's and the regression's
        fitted arrays): no pickle, so loading a model never runs code.
        """
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _FILE_OF_KIND[self.kind]
        if self.kind == "xgboost":
            self.model_.save_model(path)
        elif self.kind == "mlp":
            self.model_.save(path)
        else:
            path.write_text(json.dumps(_linear_state(self.model_, _LINEAR_STEP[self.kind])))
        return path

    @classmethod
    def load(cls, path: str | Path, task: str) -> DownstreamModel:
        """Load a model written by :meth:`save`; its kind follows from the file name.

        Parameters
        ----------
        path : str | Path
            A file named as :meth:`save` names it (see :data:`MODEL_FILES`).
        task : str
            The task the model was trained for.
        """
        path = Path(path)
        kind = MODEL_FILES.get(path.name)
        if kind is None or not path.is_file():
            raise ValueError(f"'{path}' is not a saved downstream model")
        loaded = cls(kind, task)
        if kind == "xgboost":
            import xgboost as xgb

            estimator = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
            loaded.model_ = estimator()
            loaded.model_.load_model(path)
        elif kind == "mlp":
            import keras

            loaded.model_ = keras.models.load_model(path, safe_mode=True)
        else:
            loaded.model_ = _linear_from_state(json.loads(path.read_text()),
                                               _LINEAR_STEP[kind])
        return loaded

    def _fit_xgboost(self, x: np.ndarray, y: np.ndarray):  # noqa: ANN202
        if self.search_iterations > 0:
            model = xgboost_estimator(self.task, n_estimators=500, subsample=0.8, n_jobs=-1,
                                      random_state=self.seed)
            return self._search(model, XGB_SEARCH_SPACE, x, y)
        return fit_early_stopped(self.task, x, y, seed=self.seed,
                                 refit_max_rows=self.refit_max_rows)

    def _fit_logistic(self, x: np.ndarray, y: np.ndarray):  # noqa: ANN202
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=5000, random_state=self.seed)
        )
        if self.search_iterations > 0:
            space = {"logisticregression__C": np.logspace(-3, 2, 30).tolist()}
            return self._search(model, space, x, y)
        return model.fit(x, y)

    def _fit_ridge(self, x: np.ndarray, y: np.ndarray):  # noqa: ANN202
        from sklearn.linear_model import Ridge, RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        scaled = StandardScaler().fit(x)
        alpha = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaled.transform(x), y).alpha_
        # A plain Ridge at the chosen penalty is what is saved and reloaded.
        return make_pipeline(scaled, Ridge(alpha=float(alpha))).fit(x, y)

    def _fit_mlp(self, x: np.ndarray, y: np.ndarray):  # noqa: ANN202
        import keras

        keras.utils.set_random_seed(self.seed)
        classes = self.task == "classification"
        model = keras.Sequential([
            keras.Input(shape=(x.shape[1],)),
            keras.layers.Normalization(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(self.n_classes_ if classes else 1,
                               activation="softmax" if classes else "linear"),
        ])
        model.layers[0].adapt(x)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy" if classes else "mse",
        )
        fit_rows, val_rows = holdout_rows(len(x), 0.15, self.seed)
        model.fit(
            x[fit_rows], y[fit_rows], validation_data=(x[val_rows], y[val_rows]),
            epochs=500, batch_size=64, verbose=0,
            callbacks=[keras.callbacks.EarlyStopping(patience=30,
                                                     restore_best_weights=True)],
        )
        return model

    def _search(self, model, space: dict, x: np.ndarray, y: np.ndarray):  # noqa: ANN001, ANN202
        from sklearn.model_selection import RandomizedSearchCV

        search = RandomizedSearchCV(
            model, space, n_iter=self.search_iterations, cv=3,
            random_state=self.seed, n_jobs=1,
            scoring="r2" if self.task == "regression" else "accuracy",
        )
        search.fit(x, y)
        self.best_params_ = search.best_params_
        return search.best_estimator_

    def _validate(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.kind not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.kind!r}")
        if self.task not in ("regression", "classification"):
            raise ValueError(
                f"task must be 'regression' or 'classification', got {self.task!r}"
            )
        if self.kind == "logistic" and self.task != "classification":
            raise ValueError("logistic regression needs a classification target")
        if self.kind == "ridge" and self.task != "regression":
            raise ValueError("ridge regression needs a regression target")
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(
                f"x must be 2-D with one row per target; got x {x.shape}, y {y.shape}"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("DownstreamModel is not fitted; call fit() first")


def score(
    task: str, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None = None
) -> dict[str, float]:
    """Regression: r2, rmse, mae, mape. Classification: accuracy, macro-f1, roc-auc.

    ``roc-auc`` is the binary AUC, or the one-vs-rest macro AUC for more
    classes; it is omitted when a class is missing from ``y_true``.
    """
    if task == "regression":
        return {
            "r2": float(skm.r2_score(y_true, y_pred)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "mape": float(skm.mean_absolute_percentage_error(y_true, y_pred)),
        }
    result = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro-f1": float(skm.f1_score(y_true, y_pred, average="macro")),
    }
    if proba is not None and len(np.unique(y_true)) == proba.shape[1]:
        result["roc-auc"] = float(
            skm.roc_auc_score(y_true, proba[:, 1])
            if proba.shape[1] == 2
            else skm.roc_auc_score(y_true, proba, multi_class="ovr")
        )
    return result


def _linear_state(pipeline, step: str) -> dict:  # noqa: ANN001 - a scaler + linear pipeline
    scaler, regression = pipeline.named_steps["standardscaler"], pipeline.named_steps[step]
    fitted = [k for k in ("coef_", "intercept_", "classes_") if hasattr(regression, k)]
    return {"scaler": {k: _array_state(getattr(scaler, k))
                       for k in ("mean_", "scale_", "var_")}
            | {"n_features_in_": int(scaler.n_features_in_),
               "n_samples_seen_": int(np.sum(scaler.n_samples_seen_))},
            "regression": {k: _array_state(np.asarray(getattr(regression, k)))
                           for k in fitted}
            | {"params": regression.get_params()}}


def _array_state(values: np.ndarray) -> dict:
    # The dtype is kept so that a loaded model computes in the trained one's
    # precision: predictions then repeat bit for bit.
    return {"values": values.tolist(), "dtype": values.dtype.str}


def _array_from_state(state: dict) -> np.ndarray:
    return np.asarray(state["values"], dtype=np.dtype(state["dtype"]))


def _linear_from_state(state: dict, step: str):  # noqa: ANN202
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for key, value in state["scaler"].items():
        setattr(scaler, key, _array_from_state(value) if isinstance(value, dict) else value)
    kind = {"logisticregression": LogisticRegression, "ridge": Ridge}[step]
    regression = kind(**state["regression"].pop("params"))
    for key, value in state["regression"].items():
        setattr(regression, key, _array_from_state(value))
    regression.n_features_in_ = scaler.n_features_in_
    return make_pipeline(scaler, regression)
