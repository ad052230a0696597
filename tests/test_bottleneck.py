"""Tests of vfl_embed.peer.bottleneck and the peer's bottleneck release."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import FAST

from vfl_embed.data.tables import PeerTable
from vfl_embed.peer.bottleneck import InformationBottleneck, gaussian_kl, mean_kl_nats
from vfl_embed.peer.peer import Peer
from vfl_embed.peer.release import bottleneck_release, keyed_normal
from vfl_embed.testing.in_process import run_in_process
from vfl_embed.wire.alignment import KeyedHashAlignment

N = 300
SECRET = b"s" * 32


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 6)).astype(np.float32)
    return x, x[:, 0] + x[:, 1] ** 2


def _fit(seed: int = 1, **params) -> InformationBottleneck:
    x, y = _data()
    params = {"latent_dim": 3, "hidden_sizes": (16,), "epochs": 15, "task": "regression",
              "seed": seed} | params
    return InformationBottleneck(**params).fit(x, y)


@pytest.fixture(scope="module")
def fitted() -> InformationBottleneck:
    return _fit()


def test_fit_gives_a_posterior_of_latent_dim_and_counts_its_weights(fitted):
    x, _ = _data()
    mean, log_variance = fitted.posterior(x)
    assert mean.shape == log_variance.shape == (N, 3)
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(fitted.transform(x), mean)
    assert fitted.reconstruct(x).shape == (N, 6)
    # Every weight but the supervised head's (3 + 1 weights).
    assert fitted.n_weights(6) == fitted.model_.count_params() - 4 == 380
    assert fitted.n_steps(270) == 15 * 3


def test_the_same_seed_fits_the_same_bottleneck_and_another_does_not(fitted):
    x, _ = _data()
    again, other = _fit(seed=1), _fit(seed=2)
    np.testing.assert_array_equal(again.posterior(x)[0], fitted.posterior(x)[0])
    assert np.abs(other.posterior(x)[0] - fitted.posterior(x)[0]).mean() > 0.01


def test_a_larger_beta_carries_fewer_nats():
    x, _ = _data()
    loose, tight = _fit(beta=0.001, epochs=80), _fit(beta=1.0, epochs=80)
    assert mean_kl_nats(*tight.posterior(x)) < 0.5 * mean_kl_nats(*loose.posterior(x))


def test_a_detached_decoder_leaves_the_encoder_to_the_label_and_the_kl():
    """With the decoder detached, the reconstruction loss cannot move the
    encoder: another reconstruction loss trains the very same encoder (early
    stopping, which watches the total loss, is off)."""
    x, _ = _data()
    fits = {(detach, loss): _fit(epochs=10, validation_split=0.0, loss=loss,
                                 detach_decoder=detach)
            for detach in (False, True) for loss in ("mse", "mae")}
    np.testing.assert_array_equal(fits[True, "mse"].posterior(x)[0],
                                  fits[True, "mae"].posterior(x)[0])
    assert (fits[False, "mse"].posterior(x)[0] != fits[False, "mae"].posterior(x)[0]).any()
    # The detached decoder still learns (from the sample): it is not left at
    # its initial weights.
    assert (fits[True, "mse"].reconstruct(x) != fits[True, "mae"].reconstruct(x)).any()


def test_bad_settings_are_refused():
    x, y = _data()
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -1"):
        InformationBottleneck(beta=-1.0).fit(x, y)
    with pytest.raises(ValueError, match="decorrelation_weight does not apply"):
        InformationBottleneck(decorrelation_weight=1.0).fit(x, y)
    with pytest.raises(ValueError, match="detach_decoder needs a supervised task"):
        InformationBottleneck(detach_decoder=True).fit(x, y)
    with pytest.raises(RuntimeError, match="InformationBottleneck is not fitted"):
        InformationBottleneck().posterior(x)


def test_the_sample_repeats_for_the_same_secret_run_and_entity_only(fitted):
    x, _ = _data()
    ids = np.array([f"E{k}" for k in range(N)])
    first, _ = bottleneck_release(fitted, x, ids, lambda: SECRET, 5, "peer-0")
    again, _ = bottleneck_release(fitted, x, ids, lambda: SECRET, 5, "peer-0")
    np.testing.assert_array_equal(first, again)
    for secret, run, names in ((b"t" * 32, 5, ids), (SECRET, 6, ids),
                               (SECRET, 5, np.roll(ids, 1))):
        other, _ = bottleneck_release(fitted, x, names, lambda s=secret: s, run, "peer-0")
        assert (other != first).all()
    # The sample is mean + sigma * standard normal noise.
    mean, log_variance = fitted.posterior(x)
    noise = (first - mean) / np.exp(0.5 * log_variance)
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1.0) < 0.1


def test_the_release_needs_a_secret(fitted):
    x, _ = _data()
    with pytest.raises(ValueError, match="peer-0: has no secret to key its bottleneck"):
        bottleneck_release(fitted, x, ["a"] * N, None, 5, "peer-0")


def test_keyed_normal_is_standard_normal_and_keyed_by_the_row_too():
    rows = np.zeros((4000, 2), dtype=np.float32)
    ids = [str(k) for k in range(4000)]
    values = keyed_normal(SECRET, "label", ids, rows)
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1.0) < 0.05
    moved = rows.copy()
    moved[0, 0] = 1.0
    changed = keyed_normal(SECRET, "label", ids, moved)
    assert (changed[0] != values[0]).all()
    np.testing.assert_array_equal(changed[1:], values[1:])


def _posterior(seed: int = 3, rows: int = 50, dim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.5, (rows, dim)), rng.normal(-1.0, 1.0, (rows, dim))


def test_the_kl_agrees_with_the_multivariate_closed_form():
    mean, log_variance = _posterior()
    direct = []
    for mu, lv in zip(mean, log_variance, strict=True):
        covariance = np.diag(np.exp(lv))
        _, log_det = np.linalg.slogdet(covariance)
        direct.append(0.5 * (np.trace(covariance) + mu @ mu - len(mu) - log_det))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gaussian_kl(mean, log_variance)),
                               direct,
                               rtol=1e-12)
    assert mean_kl_nats(mean, log_variance) == pytest.approx(np.mean(direct), rel=1e-12)


def test_the_kl_agrees_with_a_monte_carlo_estimate():
    """The KL is the mean of log q(z|x) - log p(z) over samples z of q(z|x)."""
    mean, log_variance = _posterior()
    rng = np.random.default_rng(4)
    sigma = np.exp(0.5 * log_variance)
    eps = rng.standard_normal((2000, *mean.shape))
    z = mean + sigma * eps
    log_q = -0.5 * (eps ** 2 + np.log(2 * np.pi) + log_variance).sum(axis=-1)
    log_p = -0.5 * (z ** 2 + np.log(2 * np.pi)).sum(axis=-1)
    samples = (log_q - log_p).mean(axis=1)  # per sample, the mean over rows
    error = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - mean_kl_nats(mean, log_variance)) < 3 * error
    assert error < 0.02 * samples.mean()  # the check is not vacuous


def test_save_and_load_give_the_same_bits(fitted, tmp_path):
    x, _ = _data()
    loaded = InformationBottleneck.load(fitted.save(tmp_path / "bottleneck.keras"))
    for got, want in zip(loaded.posterior(x), fitted.posterior(x), strict=True):
        np.testing.assert_array_equal(got, want)
    latents = fitted.posterior(x)[0]
    np.testing.assert_array_equal(loaded.decode(latents), fitted.decode(latents))


@pytest.fixture
def peer(tmp_path) -> Peer:
    x, y = _data()
    frame = pd.DataFrame(x, columns=[f"c{j}" for j in range(6)])
    frame.insert(0, "id", [f"E{k:04d}" for k in range(N)])
    frame["y"] = y
    return Peer(PeerTable(frame, "id", "peer-0", label_column="y"),
                KeyedHashAlignment("secret-of-the-peers"), simulated=True,
                state_dir=tmp_path, secret=lambda: SECRET)


def test_a_prediction_run_re_releases_the_training_runs_sample(peer):
    positions = np.arange(N)
    is_test = positions % 4 == 0
    targets, _ = peer.labels(positions[~is_test])
    config = {"encoder": "bottleneck", "task": "regression", "latent-dim": 3,
              "hidden-sizes": "16", "epochs": 10, "bottleneck-beta": 0.05, "seed": 2,
              "audit-leak-fraction": 0.2}
    released, metrics = peer.embed(positions, is_test, config, targets, run_id=11)
    assert released.shape == (N, 3)
    assert metrics["privacy/bottleneck_kl_nats"] > 0
    assert 0 <= metrics["privacy/attack_r2"] <= 1
    subset = positions[::-7][:40]
    again, _ = peer.encode(subset, train_run=11)
    np.testing.assert_array_equal(again, released[subset])


@pytest.mark.usefixtures("server_identity")
def test_a_run_through_the_client_app_releases_the_bottleneck_and_reports_its_kl(tmp_path):
    config = FAST | {"dataset": "breast-cancer", "results-dir": str(tmp_path),
                     "num-peers": 2, "encoder": "bottleneck", "supervised": True,
                     "latent-dim": 4, "audit": True}
    report = json.loads(run_in_process(config, num_peers=2, run_id=12).read_text())
    assert report["status"] == "completed"
    assert report["held_out_metrics"]["accuracy"] > 0.85
    for peer in ("peer-0", "peer-1"):
        figures = report["privacy"][peer]
        assert 0 < figures["bottleneck_kl_nats"] < 50
        assert "attack_r2" in figures
