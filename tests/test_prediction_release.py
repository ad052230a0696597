"""The per-peer supervised release (``encoder = "prediction"``) through the real ClientApp.

The strategy and the peers' ClientApp meet in the in-process grid (messages
serialized as between Flower processes); XGBoost is real throughout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl_embed.client_app import app as client_app
from vfl_embed.data.tables import PeerTable
from vfl_embed.peer.peer import Peer
from vfl_embed.peer.state import PeerState
from vfl_embed.server.builders import strategy_from_config
from vfl_embed.testing.in_process import InProcessGrid
from vfl_embed.wire.alignment import KeyedHashAlignment

N = 400


def _columns(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, N, 3))
    # Each peer holds one nonlinear part of the label.
    y = x[0, :, 0] + x[1, :, 1] + x[2, :, 2] ** 2 / 2
    return x, y + rng.normal(0.0, 0.05, N)


def _files(directory, reverse_labels: bool = False) -> list[str]:
    x, y = _columns()
    paths = []
    for peer in range(3):
        frame = pd.DataFrame(x[peer], columns=[f"p{peer}c{j}" for j in range(3)])
        frame.insert(0, "id", [f"E{k:04d}" for k in range(N)])
        if peer == 0:
            frame["y"] = y[::-1] if reverse_labels else y
        paths.append(str(directory / f"peer-{peer}.csv"))
        frame.sample(frac=1.0, random_state=peer).to_csv(paths[-1], index=False)
    return paths


def _run(paths: list[str], **overrides) -> object:
    config = {"data-paths": ";".join(paths), "id-column": "id", "target": "y",
              "label-source": "peer", "alignment-secret": "secret-of-the-peers",
              "encoder": "prediction", "audit": False, "test-fraction": 0.25,
              "seed": 3, "min-entities": 50, "timeout": 60.0} | overrides
    strategy = strategy_from_config(config)
    strategy.start(InProcessGrid(client_app, config, 3), timeout=60.0)
    return strategy.result


@pytest.mark.usefixtures("server_identity")
def test_each_peer_trains_on_the_labels_of_its_own_rows(tmp_path):
    """Each peer's release is a prediction of the label from its own columns, so
    it only helps if the peer got each training row's own label: a run whose
    label column is shuffled against the features (as a reversed target order
    would be) learns nothing."""
    result = _run(_files(tmp_path))
    assert result.metrics["r2"] > 0.55, result.metrics  # 0.64 measured
    assert {m["latent-dim"] for m in result.peer_metrics.values()} == {1.0}
    shuffled = _run(_files(tmp_path / "..", reverse_labels=True))
    assert shuffled.metrics["r2"] < 0.1, shuffled.metrics


@pytest.mark.usefixtures("server_identity")
def test_each_peer_reports_the_label_floor_of_its_training_labels(tmp_path):
    """Peers 0 and 1 each hold one column that is a linear part of the label
    (variance 1 of the label's 2.5): the label alone recovers that column at
    R² 1 / 2.5 = 0.4 and the peer's two other columns at 0, which the floor
    each peer reports must show."""
    result = _run(_files(tmp_path), audit=True, **{"audit-leak-fraction": 0.2})
    floors = {peer: (f["floor_label_r2"], f["floor_label_r2_worst"])
              for peer, f in result.privacy.items()}
    assert sorted(floors) == ["peer-0", "peer-1", "peer-2"]
    for peer in ("peer-0", "peer-1"):
        mean, worst = floors[peer]
        assert 0.3 < worst < 0.5, floors
        assert mean == pytest.approx(worst / 3, abs=0.05), floors


@pytest.fixture
def peer() -> Peer:
    x, y = _columns()
    frame = pd.DataFrame(x[0], columns=["a", "b", "c"])
    frame.insert(0, "id", [f"E{k:04d}" for k in range(N)])
    frame["y"] = y
    return Peer(PeerTable(frame, "id", "peer-0", label_column="y"),
                KeyedHashAlignment("secret-of-the-peers"), simulated=True)


def test_training_rows_get_out_of_fold_values_and_prediction_runs_repeat(peer, tmp_path):
    peer.state_dir = tmp_path
    positions = np.arange(N)
    is_test = positions % 4 == 0
    targets, _ = peer.labels(positions[~is_test])
    config = {"encoder": "prediction", "task": "regression", "audit": False, "seed": 1}
    released, metrics = peer.embed(positions, is_test, config, targets, run_id=11)
    assert released.shape == (N, 1) and metrics["latent-dim"] == 1.0
    state = PeerState.load(tmp_path, "peer-0", 11)
    full_model = state.transform(peer.features(positions))
    # Held-out rows: the full model's prediction, which a prediction run repeats.
    np.testing.assert_array_equal(released[is_test], full_model[is_test])
    again, _ = peer.encode(positions[is_test], train_run=11)
    np.testing.assert_array_equal(again, released[is_test])
    # Training rows: the fold model that did not see the row, never the full model.
    assert np.abs(released[~is_test] - full_model[~is_test]).mean() > 0.01
    truth = peer.features(positions)["a"].to_numpy()
    r = np.corrcoef(released[~is_test, 0], truth[~is_test])[0, 1]
    assert r > 0.7  # 0.79 measured: out of fold, and still the peer's part of the label


def test_classification_releases_class_probabilities(peer):
    positions = np.arange(N)
    is_test = positions % 4 == 0
    labels = (peer.table.labels.to_numpy() > np.median(peer.table.labels)).astype(float)
    labels += peer.table.labels.to_numpy() > np.quantile(peer.table.labels, 0.8)
    config = {"encoder": "prediction", "task": "classification", "audit": False}
    released, _ = peer.embed(positions, is_test, config, labels[~is_test])
    assert released.shape == (N, 2)  # three classes: two free probabilities
    assert ((released >= 0) & (released <= 1)).all()


def test_the_prediction_release_needs_labels(peer):
    positions = np.arange(N)
    with pytest.raises(ValueError, match="peer-0: the prediction release needs the "
                                         "training labels"):
        peer.embed(positions, positions % 4 == 0, {"encoder": "prediction"})
