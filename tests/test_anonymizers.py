"""The release modes `k-same` and `cvae`: anonymizers, their keys, their state, a run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import FAST

from vfl_embed.data.tables import PeerTable
from vfl_embed.errors import PeerDataError
from vfl_embed.peer.anonymization import anonymize
from vfl_embed.peer.peer import Peer
from vfl_embed.privacy.anonymizers import ConditionalVAESampler, KSame, load_anonymizer
from vfl_embed.testing.in_process import run_in_process
from vfl_embed.wire.alignment import KeyedHashAlignment

N = 240
IDS = [f"E{k:04d}" for k in range(N)]


def _secret() -> bytes:
    return b"k" * 32


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, 5)).astype(np.float32)


@pytest.fixture(scope="module")
def cvae(latents) -> ConditionalVAESampler:
    classes = (latents[:, 0] + latents[:, 1] > 0).astype(float)
    return ConditionalVAESampler(epochs=10, seed=3).fit(latents, classes)


def test_k_same_equals_a_brute_force_nearest_neighbour_mean(latents):
    train, new = latents[:200], latents[200:]
    released = KSame(k=7).fit(train).transform(latents)
    for row, point in enumerate(latents):
        distances = np.linalg.norm(train.astype(np.float64) - point, axis=1)
        nearest = np.argsort(distances, kind="stable")[:7]
        np.testing.assert_allclose(released[row], train[nearest].mean(axis=0), atol=1e-6)
    assert np.abs(released[200:] - new).mean() > 0.1  # a release is not the row


def test_each_release_is_the_mean_of_k_training_rows_including_its_own(latents):
    k_same = KSame(k=5).fit(latents)
    neighbours = k_same.neighbours(latents)
    assert neighbours.shape == (N, 5)
    assert all(len(set(row)) == 5 for row in neighbours)
    assert all(row in neighbours[row] for row in range(N))  # a training row is its own
    np.testing.assert_array_equal(
        k_same.transform(latents),
        latents[neighbours].astype(np.float64).mean(axis=1).astype(np.float32))


def test_k_same_releases_a_row_alike_in_any_batch_and_after_reload(latents, tmp_path):
    k_same = KSame(k=5).fit(latents)
    all_rows = k_same.transform(latents)
    np.testing.assert_array_equal(k_same.transform(latents[37:41]), all_rows[37:41])
    k_same.save(tmp_path)
    np.testing.assert_array_equal(load_anonymizer(tmp_path).transform(latents), all_rows)


def test_k_same_refuses_k_beyond_the_training_rows(latents):
    with pytest.raises(ValueError, match=r"k-Same needs 2 <= k <= 4 training rows, got k = 5"):
        KSame(k=5).fit(latents[:4])


def test_cvae_samples_repeat_per_entity_and_differ_across_entities(cvae, latents):
    first = anonymize(cvae, latents, IDS, _secret, 9, "peer-0")
    # The same entities in another order and batch: the same values.
    order = np.arange(N)[::-3]
    again = anonymize(cvae, latents[order], [IDS[i] for i in order], _secret, 9, "peer-0")
    np.testing.assert_array_equal(again, first[order])
    # The same latent under two entities, or another training run: other samples.
    twin = anonymize(cvae, latents[:1], ["E9999"], _secret, 9, "peer-0")
    assert np.abs(twin - first[:1]).max() > 1e-3
    other_run = anonymize(cvae, latents, IDS, _secret, 10, "peer-0")
    assert np.abs(other_run - first).mean() > 1e-2
    assert first.shape == latents.shape and np.isfinite(first).all()


def test_cvae_is_conditioned_on_the_class_only_with_labels(cvae, latents):
    assert cvae.coef_.shape == (1, 5)  # binary: one logistic score
    plain = ConditionalVAESampler(epochs=2).fit(latents)
    assert plain.coef_.shape == (0, 5)
    assert plain.encoder_.input_shape[-1] == 5 and cvae.encoder_.input_shape[-1] == 7


def test_cvae_save_and_load_release_the_same_bits(cvae, latents, tmp_path):
    before = anonymize(cvae, latents, IDS, _secret, 9, "peer-0")
    cvae.save(tmp_path)
    loaded = load_anonymizer(tmp_path)
    np.testing.assert_array_equal(anonymize(loaded, latents, IDS, _secret, 9, "peer-0"),
                                  before)


def test_cvae_needs_the_peer_secret(cvae, latents):
    with pytest.raises(PeerDataError, match="peer-0: has no secret to key its CVAE"):
        anonymize(cvae, latents, IDS, None, 9, "peer-0")


@pytest.mark.parametrize("mode", ["k-same", "cvae"])
def test_a_prediction_run_re_releases_the_training_run_values(mode, tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(N, 6)), columns=[f"c{j}" for j in range(6)])
    frame.insert(0, "id", IDS)
    peer = Peer(PeerTable(frame, "id", "peer-0"), KeyedHashAlignment("secret-of-the-peers"),
                simulated=True, state_dir=tmp_path, secret=_secret)
    positions = np.arange(N)
    is_test = positions % 4 == 0
    config = {"latent-dim": 3, "epochs": 5, "audit": False, "release-mode": mode,
              "k-same-k": 4, "seed": 2}
    released, _ = peer.embed(positions, is_test, config, run_id=21)
    again, _ = peer.encode(positions[::-1], train_run=21)
    np.testing.assert_array_equal(again, released[::-1])
    saved = json.loads((tmp_path / "peer-0" / "run-21" / "state.json").read_text())
    assert saved["release_mode"] == mode


@pytest.mark.usefixtures("server_identity")
def test_a_k_same_run_through_the_client_app_reports_its_audit(tmp_path):
    config = FAST | {"dataset": "breast-cancer", "release-mode": "k-same", "k-same-k": 5,
                     "audit": True, "latent-dim": 8, "peer-coverage": 1.0, "seed": 0,
                     "results-dir": str(tmp_path)}
    report = json.loads(run_in_process(config, num_peers=2, run_id=12).read_text())
    assert report["status"] == "completed"
    assert report["held_out_metrics"]["accuracy"] > 0.85, report["held_out_metrics"]
    assert sorted(report["privacy"]) == ["peer-0", "peer-1"]
    for figures in report["privacy"].values():
        assert 0.0 < figures["attack_r2"] < 1.0, figures
        assert figures["leak_fraction"] == pytest.approx(0.1)
