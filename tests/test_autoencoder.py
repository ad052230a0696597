"""Tests of vfl_embed.peer.autoencoder: architecture, training, metrics."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vfl_embed.peer.autoencoder import (
    Autoencoder,
    IdentityEncoder,
    build_autoencoder,
    decorrelation_penalty,
    representation_metrics,
)

# Small, fast settings: a low-rank problem needs neither width nor many epochs.
FAST = {"hidden_sizes": (32, 16), "learning_rate": 0.01, "batch_size": 64}


@pytest.fixture(scope="module")
def low_rank() -> tuple[np.ndarray, np.ndarray]:
    """400 x 12 standardized data generated from 3 latent factors, plus the factors."""
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(400, 3))
    x = factors @ rng.normal(size=(3, 12)) + 0.05 * rng.normal(size=(400, 12))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype(np.float32), factors


@pytest.fixture(scope="module")
def fitted(low_rank) -> Autoencoder:
    x, _ = low_rank
    return Autoencoder(latent_dim=3, loss="mse", epochs=40, validation_split=0.0,
                       **FAST).fit(x)


# ---------------------------------------------------------------- architecture
def test_build_autoencoder_shapes() -> None:
    model, encoder = build_autoencoder(12, 4, (16, 8))
    out = model(np.zeros((5, 12), dtype=np.float32))
    assert set(out) == {"reconstruction"}
    assert tuple(out["reconstruction"].shape) == (5, 12)
    assert tuple(encoder(np.zeros((5, 12), dtype=np.float32)).shape) == (5, 4)
    names = [layer.name for layer in model.layers[1:]]
    assert names == ["enc_0", "enc_1", "latent", "dec_0", "dec_1", "reconstruction"]
    widths = [layer.units for layer in model.layers[1:]]
    assert widths == [16, 8, 4, 8, 16, 12]  # the decoder mirrors the encoder


def test_build_autoencoder_with_supervised_head() -> None:
    model, encoder = build_autoencoder(10, 3, (8,), n_outputs=4,
                                       output_activation="softmax")
    out = model(np.ones((6, 10), dtype=np.float32))
    assert set(out) == {"reconstruction", "target"}
    assert tuple(out["reconstruction"].shape) == (6, 10)
    assert tuple(out["target"].shape) == (6, 4)
    np.testing.assert_allclose(np.asarray(out["target"]).sum(axis=1), 1.0, rtol=1e-5)
    assert tuple(encoder(np.ones((6, 10), dtype=np.float32)).shape) == (6, 3)
    # The head sits on the latent layer: encoder weights are shared.
    assert model.get_layer("latent") is encoder.get_layer("latent")


def test_latent_activation_is_applied() -> None:
    _, encoder = build_autoencoder(6, 5, (8,), latent_activation="relu")
    latents = np.asarray(encoder(np.random.default_rng(0).normal(size=(50, 6))))
    assert (latents >= 0).all()


# ------------------------------------------------------------------- training
def test_fit_reconstructs_low_rank_data(fitted: Autoencoder, low_rank) -> None:
    x, _ = low_rank
    reconstruction = fitted.reconstruct(x)
    assert reconstruction.shape == x.shape
    assert reconstruction.dtype == np.float32
    # Three latent units suffice for three factors: under 5 % of the variance lost.
    assert ((reconstruction - x) ** 2).mean() < 0.05 * x.var()
    assert fitted.epochs_run_ == 40


def test_latents_capture_the_factors(fitted: Autoencoder, low_rank) -> None:
    x, factors = low_rank
    latents = fitted.transform(x)
    assert latents.shape == (400, 3)
    assert latents.dtype == np.float32
    # The encoder is non-linear, so regress each true factor on the latents,
    # their squares and products: the factors are nearly determined by them.
    i, j = np.triu_indices(3)
    design = np.column_stack([np.ones(400), latents, latents[:, i] * latents[:, j]])
    for k in range(3):
        coef, *_ = np.linalg.lstsq(design, factors[:, k], rcond=None)
        residual = factors[:, k] - design @ coef
        assert residual.var() < 0.1 * factors[:, k].var()


def test_transform_works_on_new_rows(fitted: Autoencoder, low_rank) -> None:
    x, _ = low_rank
    np.testing.assert_allclose(fitted.transform(x[:7]), fitted.transform(x)[:7],
                               rtol=1e-5, atol=1e-6)


def test_same_seed_same_latents_other_seed_different(low_rank) -> None:
    x = low_rank[0][:120]
    settings = {"latent_dim": 2, "hidden_sizes": (8,), "epochs": 3}
    first = Autoencoder(seed=1, **settings).fit(x).transform(x)
    again = Autoencoder(seed=1, **settings).fit(x).transform(x)
    other = Autoencoder(seed=2, **settings).fit(x).transform(x)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_early_stopping_uses_the_validation_split(low_rank) -> None:
    x = low_rank[0][:200]
    model = Autoencoder(latent_dim=2, hidden_sizes=(8,), epochs=40, patience=1,
                        learning_rate=0.05, validation_split=0.2).fit(x)
    assert 2 <= model.epochs_run_ < 40


@pytest.mark.parametrize(("max_steps", "epochs_run"), [
    (35, 5),    # 400 rows at batch 64 are 7 steps per epoch: 35 steps, 5 epochs
    (36, 5),    # whole epochs only, rounded down
    (3, 1),     # at least one epoch, even when one epoch is over the budget
    (10**6, 12),
])
def test_the_step_budget_caps_the_epochs(low_rank, max_steps: int, epochs_run: int) -> None:
    model = Autoencoder(latent_dim=2, hidden_sizes=(8,), epochs=12, max_steps=max_steps,
                        validation_split=0.0, batch_size=64).fit(low_rank[0])
    assert model.epochs_run_ == epochs_run


def test_supervised_regression_head(low_rank) -> None:
    x, factors = low_rank
    y = factors[:, 0]
    model = Autoencoder(latent_dim=4, task="regression", epochs=30,
                        validation_split=0.0, **FAST).fit(x, y)
    assert model.transform(x).shape == (400, 4)
    assert model.reconstruct(x).shape == (400, 12)
    predicted = np.asarray(model.model_(x)["target"]).ravel()
    assert np.corrcoef(predicted, y)[0, 1] > 0.9


def test_supervised_classification_head(low_rank) -> None:
    x, factors = low_rank
    y = (factors[:, 0] > 0).astype(float) + (factors[:, 1] > 0)  # classes 0, 1, 2
    model = Autoencoder(latent_dim=4, task="classification", epochs=30,
                        validation_split=0.0, **FAST).fit(x, y)
    assert model.transform(x).shape == (400, 4)
    proba = np.asarray(model.model_(x)["target"])
    assert proba.shape == (400, 3)
    assert (proba.argmax(axis=1) == y).mean() > 0.8


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"loss": "huber"}, "loss must be 'mae' or 'mse'"),
        ({"task": "ranking"}, "task must be"),
        ({"latent_dim": 0}, "must be positive"),
        ({"hidden_sizes": (8, 0)}, "must be positive"),
        ({"validation_split": 1.0}, "validation_split must be in"),
        ({"validation_split": -0.1}, "validation_split must be in"),
        ({"task": "regression"}, "one target per row"),
        ({"max_steps": 0}, "max_steps and batch_size must be positive"),
        ({"epochs": 0}, "max_steps and batch_size must be positive"),
        ({"decorrelation_weight": -0.5}, "decorrelation_weight must be"),
        ({"decorrelation_weight": float("nan")}, "decorrelation_weight must be"),
    ],
)
def test_invalid_params_raise(low_rank, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Autoencoder(**params).fit(low_rank[0])


def test_invalid_inputs_raise(low_rank) -> None:
    x = low_rank[0]
    with pytest.raises(ValueError, match="2-D matrix"):
        Autoencoder().fit(x[:, 0])
    with pytest.raises(ValueError, match="2-D matrix"):
        Autoencoder().fit(x[:1])
    broken = x.copy()
    broken[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Autoencoder().fit(broken)
    with pytest.raises(ValueError, match="one target per row"):
        Autoencoder(task="regression").fit(x, np.zeros(5))


def test_transform_before_fit_raises(low_rank) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        Autoencoder().transform(low_rank[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        Autoencoder().reconstruct(low_rank[0])


# -------------------------------------------------------------------- metrics
@pytest.fixture
def encoded() -> dict:
    """Encoded rows: 2 numeric columns (original units) and one 3-level block."""
    rng = np.random.default_rng(3)
    numeric = rng.uniform(50.0, 150.0, size=(100, 2))
    levels = rng.integers(0, 3, size=100)
    x = np.column_stack([(numeric - 100.0) / 25.0, np.eye(3)[levels]])
    return {"x": x, "numeric": numeric, "scale": np.array([25.0, 25.0]),
            "blocks": [slice(2, 5)], "levels": levels}


def _metrics(encoded: dict, reconstruction: np.ndarray, numeric_hat: np.ndarray):
    return representation_metrics(
        encoded["x"], reconstruction, encoded["numeric"], numeric_hat,
        encoded["scale"], encoded["blocks"],
    )


def test_perfect_reconstruction(encoded: dict) -> None:
    metrics = _metrics(encoded, encoded["x"].copy(), encoded["numeric"].copy())
    assert metrics == {"reconstruction-mae": 0.0, "within-5pct": 1.0,
                       "within-5pct-min": 1.0}


def test_known_perturbation_gives_the_expected_share(encoded: dict) -> None:
    x = encoded["x"]
    numeric_hat = encoded["numeric"].copy()
    numeric_hat[:30, 0] *= 1.10  # 30 % of column 0 off by 10 %: outside 5 %
    numeric_hat[:, 1] *= 1.01  # all of column 1 off by 1 %: inside 5 %
    reconstruction = x.copy()
    reconstruction[:, :2] = (numeric_hat - 100.0) / 25.0
    wrong = np.arange(40)  # 40 % of rows reconstruct the next level
    reconstruction[wrong, 2:] = np.eye(3)[(encoded["levels"][wrong] + 1) % 3]
    metrics = _metrics(encoded, reconstruction, numeric_hat)
    assert metrics["within-5pct"] == pytest.approx((0.7 + 1.0 + 0.6) / 3)
    assert metrics["within-5pct-min"] == pytest.approx(0.6)
    assert metrics["reconstruction-mae"] == pytest.approx(
        np.abs(x - reconstruction).mean()
    )


def test_within_5pct_uses_the_scale_near_zero() -> None:
    x = np.zeros((4, 1))
    original = np.zeros((4, 1))
    hat = np.full((4, 1), 0.04)
    loose = representation_metrics(x, x, original, hat, np.array([1.0]), [])
    tight = representation_metrics(x, x, original, hat, np.array([0.5]), [])
    assert loose["within-5pct"] == 1.0
    assert tight["within-5pct"] == 0.0


def test_categorical_only_metrics() -> None:
    x = np.eye(2)[[0, 1, 1, 0]]
    reconstruction = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    metrics = representation_metrics(x, reconstruction, np.empty((4, 0)),
                                     np.empty((4, 0)), np.empty(0), [slice(0, 2)])
    assert metrics["within-5pct"] == pytest.approx(0.75)
    assert metrics["reconstruction-mae"] == pytest.approx(np.abs(x - reconstruction)
                                                          .mean())


# ----------------------------------------------------------- IdentityEncoder
def test_identity_encoder_passes_columns_through() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    encoder = IdentityEncoder()
    assert encoder.fit(x) is encoder
    assert encoder.n_features_ == 3
    latents = encoder.transform(x)
    assert latents.dtype == np.float32
    np.testing.assert_array_equal(latents, x)
    np.testing.assert_array_equal(encoder.reconstruct(x), x)
    assert not hasattr(encoder, "epochs_run_")


# ------------------------------------------------------------------ decoding
def test_decode_of_the_latents_is_the_reconstruction(fitted: Autoencoder, low_rank) -> None:
    x, _ = low_rank
    decoded = fitted.decode(fitted.transform(x))
    assert decoded.shape == x.shape
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, fitted.reconstruct(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2-D matrix of 3 columns"):
        fitted.decode(np.zeros((4, 5)))
    with pytest.raises(RuntimeError, match="not fitted"):
        Autoencoder().decode(np.zeros((4, 3)))


def test_identity_encoder_decodes_to_the_latents() -> None:
    latents = np.arange(6, dtype=np.float64).reshape(2, 3)
    decoded = IdentityEncoder().fit(latents).decode(latents)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, latents)


# ------------------------------------------------------------ decorrelation
def _mean_squared_correlation(latents: np.ndarray, x: np.ndarray) -> float:
    k = latents.shape[1]
    return float((np.corrcoef(latents.T, x.T)[:k, k:] ** 2).mean())


def test_decorrelation_penalty_is_the_mean_squared_correlation() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    x[:, 3] = 1.0  # a constant column counts as uncorrelated, not as NaN
    latent = np.column_stack([x[:, 0] + 0.5 * x[:, 1], rng.normal(size=200)])
    latent = latent.astype(np.float32)
    expected = (np.corrcoef(latent.T, x[:, :3].T)[:2, 2:] ** 2).sum() / 8
    assert float(decorrelation_penalty(latent, x)) == pytest.approx(expected, rel=1e-4)


def test_decorrelation_lowers_the_latent_input_correlation(
    fitted: Autoencoder, low_rank
) -> None:
    x, _ = low_rank
    settings = {"latent_dim": 3, "loss": "mse", "epochs": 40, "validation_split": 0.0}
    hidden = Autoencoder(decorrelation_weight=10.0, **settings, **FAST).fit(x)
    plain = _mean_squared_correlation(fitted.transform(x), x)
    decorrelated = _mean_squared_correlation(hidden.transform(x), x)
    assert plain > 0.2
    assert decorrelated < 0.1 * plain
    # The latent still carries the data: far better than predicting the means.
    assert ((hidden.reconstruct(x) - x) ** 2).mean() < 0.5 * x.var()


def test_decorrelated_autoencoder_is_seeded_and_saves_plainly(low_rank, tmp_path) -> None:
    x = low_rank[0][:200]
    settings = {"latent_dim": 2, "hidden_sizes": (8,), "epochs": 3,
                "decorrelation_weight": 1.0, "task": "regression"}
    first = Autoencoder(seed=4, **settings).fit(x, x[:, 0])
    again = Autoencoder(seed=4, **settings).fit(x, x[:, 0])
    np.testing.assert_array_equal(first.transform(x), again.transform(x))
    plain = Autoencoder(seed=4, **settings | {"decorrelation_weight": 0.0}).fit(
        x, x[:, 0])
    assert np.abs(first.transform(x) - plain.transform(x)).max() > 1e-4
    # The penalty is not part of the saved model: a fresh process loads it.
    path = first.save(tmp_path / "encoder.keras")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import numpy as np\n"
        "from vfl_embed.peer.autoencoder import Autoencoder\n"
        f"model = Autoencoder.load({str(path)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, model.decode(model.transform(x)))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"),
                                  first.decode(first.transform(x)))
    assert [layer.name for layer in first.model_.layers][-1] == "target"
    assert "decorrelation" not in [layer.name for layer in first.model_.layers]
