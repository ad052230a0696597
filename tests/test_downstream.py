"""Tests of vfl_embed.server.downstream: the server's models and metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_classification

from vfl_embed.server.downstream import MODELS, XGB_SEARCH_SPACE, DownstreamModel, score


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, ...]:
    """400 rows of a smooth non-linear target: train on 300, test on 100."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = 2 * x[:, 0] + np.sin(2 * x[:, 1]) + x[:, 2] * x[:, 3]
    y = y + 0.1 * rng.normal(size=400)
    return x[:300], y[:300], x[300:], y[300:]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, ...]:
    """sklearn digits, 1,300 training and 497 test rows."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1300], order[1300:]
    return x[train], y[train], x[test], y[test]


@pytest.fixture(scope="module")
def xgb_regressor(regression) -> DownstreamModel:
    x, y, _, _ = regression
    return DownstreamModel("xgboost", "regression").fit(x, y)


@pytest.fixture(scope="module")
def xgb_classifier(digits) -> DownstreamModel:
    x, y, _, _ = digits
    return DownstreamModel("xgboost", "classification").fit(x, y)


@pytest.fixture(scope="module")
def logistic(digits) -> DownstreamModel:
    x, y, _, _ = digits
    return DownstreamModel("logistic", "classification").fit(x, y)


@pytest.fixture(scope="module")
def ridge(linear) -> DownstreamModel:
    x, y, _, _ = linear
    return DownstreamModel("ridge", "regression").fit(x, y)


@pytest.fixture(scope="module")
def linear() -> tuple[np.ndarray, ...]:
    """1,200 rows of a noisy linear target: the MLP stops early in ~50 epochs."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 3)).astype(np.float32)
    y = 2 * x[:, 0] + x[:, 1] + 0.3 * rng.normal(size=1200)
    return x[:1000], y[:1000], x[1000:], y[1000:]


@pytest.fixture(scope="module")
def mlp(linear) -> DownstreamModel:
    x, y, _, _ = linear
    return DownstreamModel("mlp", "regression").fit(x, y)


# ---------------------------------------------------------------------- models
def test_xgboost_regression_is_accurate(xgb_regressor, regression) -> None:
    _, _, x_test, y_test = regression
    metrics = xgb_regressor.evaluate(x_test, y_test)
    assert set(metrics) == {"r2", "rmse", "mae", "mape"}
    assert metrics["r2"] > 0.85
    assert xgb_regressor.predict(x_test).shape == (100,)
    assert xgb_regressor.model_.n_estimators >= 50


@pytest.mark.parametrize("fitted", ["xgb_classifier", "logistic"])
def test_classifiers_on_digits(fitted: str, digits, request) -> None:
    model: DownstreamModel = request.getfixturevalue(fitted)
    _, _, x_test, y_test = digits
    assert model.n_classes_ == 10
    metrics = model.evaluate(x_test, y_test)
    assert set(metrics) == {"accuracy", "macro-f1", "roc-auc"}
    assert metrics["accuracy"] > 0.9
    assert metrics["roc-auc"] > 0.98
    predicted = model.predict(x_test)
    assert predicted.shape == (497,)
    assert set(np.unique(predicted)) <= set(range(10))
    proba = model.predict_proba(x_test)
    assert proba.shape == (497, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), predicted)


def test_mlp_regression_runs(mlp, linear) -> None:
    _, _, x_test, y_test = linear
    predicted = mlp.predict(x_test)
    assert predicted.shape == (200,)
    assert np.isfinite(predicted).all()
    metrics = mlp.evaluate(x_test, y_test)
    assert set(metrics) == {"r2", "rmse", "mae", "mape"}
    assert metrics["r2"] > 0.9  # the noise alone leaves r2 = 5 / 5.09 = 0.98


def test_xgboost_is_seeded(regression, xgb_regressor) -> None:
    x, y, x_test, _ = regression
    again = DownstreamModel("xgboost", "regression").fit(x, y)
    np.testing.assert_array_equal(again.predict(x_test),
                                  xgb_regressor.predict(x_test))


# --------------------------------------------------------------------- scoring
def test_regression_score_values() -> None:
    metrics = score("regression", np.array([1.0, 2.0, 3.0, 4.0]),
                    np.array([1.0, 2.0, 3.0, 5.0]))
    assert metrics == pytest.approx(
        {"r2": 0.8, "rmse": 0.5, "mae": 0.25, "mape": 0.0625}
    )


def test_binary_score_values() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.35, 0.65], [0.2, 0.8]])
    metrics = score("classification", y, proba.argmax(axis=1), proba)
    assert set(metrics) == {"accuracy", "macro-f1", "roc-auc"}
    assert metrics["accuracy"] == 0.75
    assert metrics["roc-auc"] == pytest.approx(0.75)  # 3 of 4 pairs ranked right


def test_multiclass_score_uses_one_vs_rest_auc() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[y] * 0.7 + 0.1
    metrics = score("classification", y, y, proba)
    assert metrics == {"accuracy": 1.0, "macro-f1": 1.0, "roc-auc": 1.0}


def test_auc_is_left_out_when_a_class_is_missing() -> None:
    y = np.array([0, 1, 0, 1])
    proba = np.full((4, 3), 1 / 3)
    metrics = score("classification", y, np.array([0, 1, 1, 1]), proba)
    assert set(metrics) == {"accuracy", "macro-f1"}
    assert score("classification", y, y) == {"accuracy": 1.0, "macro-f1": 1.0}


# ------------------------------------------------------------------ validation
def test_logistic_needs_a_classification_task(regression) -> None:
    x, y, _, _ = regression
    with pytest.raises(ValueError, match="logistic regression needs a classification"):
        DownstreamModel("logistic", "regression").fit(x, y)


def test_unknown_kind_raises(regression) -> None:
    x, y, _, _ = regression
    with pytest.raises(ValueError, match="model must be one of") as err:
        DownstreamModel("forest", "regression").fit(x, y)
    assert "'forest'" in str(err.value)
    assert MODELS == ("xgboost", "logistic", "ridge", "mlp")


def test_unknown_task_raises(regression) -> None:
    x, y, _, _ = regression
    with pytest.raises(ValueError, match="task must be 'regression' or"):
        DownstreamModel("xgboost", "ranking").fit(x, y)


def test_mismatched_rows_raise(regression) -> None:
    x, y, _, _ = regression
    with pytest.raises(ValueError, match="one row per target"):
        DownstreamModel().fit(x, y[:-1])
    with pytest.raises(ValueError, match="one row per target"):
        DownstreamModel().fit(x[:, 0], y)


def test_predict_before_fit_raises(regression, tmp_path) -> None:
    x = regression[0]
    model = DownstreamModel("xgboost", "classification")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict(x)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict_proba(x)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.save(tmp_path)


def test_predict_proba_needs_classification(xgb_regressor, regression) -> None:
    with pytest.raises(RuntimeError, match="only defined for classification"):
        xgb_regressor.predict_proba(regression[2])


# ------------------------------------------------------------------ save, load
@pytest.mark.parametrize(("name", "data", "file_name"), [
    ("xgb_classifier", "digits", "downstream_model.json"),
    ("xgb_regressor", "regression", "downstream_model.json"),
    ("logistic", "digits", "downstream_model.logistic.json"),
    ("ridge", "linear", "downstream_model.ridge.json"),
    ("mlp", "linear", "downstream_model.keras"),
])
def test_saved_model_reloads_with_identical_predictions(request, name, data, file_name,
                                                        tmp_path) -> None:
    model, x_test = request.getfixturevalue(name), request.getfixturevalue(data)[2]
    path = model.save(tmp_path / "out")
    assert path == tmp_path / "out" / file_name
    loaded = DownstreamModel.load(path, model.task)
    assert loaded.kind == model.kind
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))
    if model.task == "classification":
        np.testing.assert_array_equal(loaded.predict_proba(x_test),
                                      model.predict_proba(x_test))


@pytest.mark.parametrize(("name", "data"), [
    ("xgb_classifier", "digits"), ("logistic", "digits"), ("ridge", "linear"),
    ("mlp", "linear"),
])
def test_a_rows_prediction_does_not_depend_on_the_other_rows(request, name, data) -> None:
    model, x_test = request.getfixturevalue(name), request.getfixturevalue(data)[2]
    scores = model.predict_proba if model.task == "classification" else model.predict
    everything = scores(x_test)
    for rows in (np.arange(len(x_test))[::-1], np.arange(0, len(x_test), 7), [3]):
        np.testing.assert_array_equal(scores(x_test[rows]), everything[rows])


def test_ridge_recovers_a_linear_target_and_picks_its_penalty(ridge, linear) -> None:
    _, _, x_test, y_test = linear
    # y = 2 x0 + x1 + noise (std 0.3): the fit explains all but the noise.
    assert ridge.evaluate(x_test, y_test)["r2"] > 0.97
    coef = ridge.model_.named_steps["ridge"].coef_ / ridge.model_.named_steps[
        "standardscaler"].scale_
    np.testing.assert_allclose(coef, [2.0, 1.0, 0.0], atol=0.05)


def test_ridge_needs_a_regression_task(digits) -> None:
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="ridge regression needs a regression"):
        DownstreamModel("ridge", "classification").fit(x, y)


def test_load_refuses_what_is_not_a_saved_model(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a saved downstream model"):
        DownstreamModel.load(tmp_path / "notes.txt", "regression")


def test_xgboost_keeps_the_early_stopped_model_on_many_rows(regression,
                                                           xgb_regressor) -> None:
    x, y, x_test, y_test = regression
    probe = DownstreamModel("xgboost", "regression", refit_max_rows=len(x)).fit(x, y)
    # The refitted model has exactly the early-stopped number of trees; the
    # kept one has the trees grown after its best iteration too, unused.
    refit_trees = xgb_regressor.model_.get_booster().num_boosted_rounds()
    assert probe.model_.get_booster().num_boosted_rounds() == (
        probe.model_.best_iteration + 1 + 150)
    assert refit_trees == max(probe.model_.best_iteration + 1, 50)
    assert probe.evaluate(x_test, y_test)["r2"] > 0.8


# ---------------------------------------------------------------------- search
def test_search_sets_best_params_for_logistic() -> None:
    x, y = make_classification(n_samples=300, n_features=6, n_informative=4,
                               n_classes=3, random_state=0)
    model = DownstreamModel("logistic", "classification", search_iterations=3)
    model.fit(x[:240], y[:240])
    assert set(model.best_params_) == {"logisticregression__C"}
    assert 1e-3 <= model.best_params_["logisticregression__C"] <= 1e2
    assert model.evaluate(x[240:], y[240:])["accuracy"] > 0.6


def test_search_sets_best_params_for_xgboost(regression) -> None:
    x, y, x_test, y_test = regression
    model = DownstreamModel("xgboost", "regression", search_iterations=2)
    model.fit(x[:200], y[:200])
    assert set(model.best_params_) == set(XGB_SEARCH_SPACE)
    for name, value in model.best_params_.items():
        assert value in XGB_SEARCH_SPACE[name]
    assert model.model_.n_estimators == 500
    assert model.evaluate(x_test, y_test)["r2"] > 0.5


def test_no_search_leaves_no_best_params(xgb_regressor) -> None:
    assert not hasattr(xgb_regressor, "best_params_")
