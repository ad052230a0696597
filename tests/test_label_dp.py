"""Label differential privacy: the mechanisms, the peers' policy, and the labels sent.

The mechanisms are checked against direct computation; the policy and the
supervised run go through the real ClientApp in process (messages serialized
as between Flower processes), with real XGBoost at the peers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Message
from in_process_grid import InProcessGrid, over_the_wire, two_peer_grid

from vfl_embed.client_app import app as client_app
from vfl_embed.peer.context import peer_from_context
from vfl_embed.peer.requests import read_request_plan
from vfl_embed.peer.runtime import simulated_runtime
from vfl_embed.privacy.label_dp import (
    LABEL_QUANTILES,
    LaplaceLabels,
    RandomizedResponse,
    private_labels,
)
from vfl_embed.report.files import write_report
from vfl_embed.server.builders import strategy_from_config
from vfl_embed.wire import protocol

# ------------------------------------------------------------ mechanisms


@pytest.mark.parametrize(("epsilon", "n_classes"), [(0.5, 2), (1.0, 3), (2.0, 10)])
def test_randomized_response_keeps_and_flips_at_the_computed_rates(epsilon, n_classes):
    keep = math.exp(epsilon) / (math.exp(epsilon) + n_classes - 1)
    mechanism = RandomizedResponse(epsilon, n_classes)
    assert mechanism.keep_probability == pytest.approx(keep, rel=1e-12)
    n = 200_000
    codes = np.arange(n) % n_classes
    sent = mechanism.release(codes, np.random.default_rng(0))
    kept = float((sent == codes).mean())
    assert abs(kept - keep) < 4 * math.sqrt(keep * (1 - keep) / n)
    # A flipped label lands on each other class alike.
    offsets = ((sent - codes) % n_classes)[sent != codes]
    share = np.bincount(offsets.astype(int), minlength=n_classes)[1:] / len(offsets)
    expected = 1 / (n_classes - 1)
    assert np.all(np.abs(share - expected) <= 4 * math.sqrt(
        expected * (1 - expected) / len(offsets)))


@pytest.mark.parametrize(("epsilon", "n_classes"), [(0.1, 2), (1.0, 3), (2.0, 7)])
def test_the_randomized_response_matrix_bounds_the_likelihood_ratio_by_e_to_epsilon(
        epsilon, n_classes):
    matrix = RandomizedResponse(epsilon, n_classes).matrix()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-12)
    # For each label sent, the most and least likely true labels.
    ratio = (matrix.max(axis=0) / matrix.min(axis=0)).max()
    assert ratio == pytest.approx(math.exp(epsilon), rel=1e-12)  # tight, not loose


def test_laplace_noise_has_the_scale_range_over_epsilon():
    labels = np.random.default_rng(1).lognormal(12.0, 0.4, 5000)
    low, high = np.quantile(labels, LABEL_QUANTILES)
    mechanism = LaplaceLabels.from_labels(2.0, labels)
    assert (mechanism.low, mechanism.high) == (low, high)
    assert mechanism.scale == pytest.approx((high - low) / 2.0, rel=1e-12)
    values = np.full(400_000, (low + high) / 2)
    noise = mechanism.release(values, np.random.default_rng(2)) - values
    # |Laplace(0, b)| is exponential with mean b and standard deviation b.
    assert abs(np.abs(noise).mean() - mechanism.scale) < 4 * mechanism.scale / math.sqrt(
        len(noise))
    assert abs(noise.mean()) < 4 * math.sqrt(2) * mechanism.scale / math.sqrt(len(noise))
    # Clipping: a label far outside the range is released as the range's edge + noise.
    outlier = mechanism.release(np.array([1e12]), np.random.default_rng(3))
    assert abs(outlier[0] - high) < 50 * mechanism.scale


def test_laplace_densities_of_two_labels_differ_by_at_most_e_to_epsilon():
    mechanism = LaplaceLabels(1.5, 0.0, 10.0)
    outputs = np.linspace(-60.0, 70.0, 2001)

    def density(label: float) -> np.ndarray:
        centre = np.clip(label, mechanism.low, mechanism.high)
        return np.exp(-np.abs(outputs - centre) / mechanism.scale) / (2 * mechanism.scale)

    ratio = (density(-100.0) / density(100.0)).max()  # both clip to the edges
    assert ratio == pytest.approx(math.exp(1.5), rel=1e-9)


def test_the_same_seed_gives_the_same_noised_labels():
    codes = np.arange(500) % 4.0
    values = np.linspace(0.0, 1.0, 500)
    for labels, task in ((codes, "classification"), (values, "regression")):
        first = private_labels(labels, task=task, epsilon=1.0, seed=9, n_classes=4)
        again = private_labels(labels, task=task, epsilon=1.0, seed=9, n_classes=4)
        other = private_labels(labels, task=task, epsilon=1.0, seed=10, n_classes=4)
        np.testing.assert_array_equal(first.labels, again.labels)
        assert not np.array_equal(first.labels, other.labels)
    assert first.statement["mechanism"] == "Laplace mechanism on clipped labels"
    assert first.statement["range"] == list(np.quantile(values, LABEL_QUANTILES))
    assert any("clipping range" in item for item in first.statement["not_covered"])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        RandomizedResponse(0.0, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        RandomizedResponse(1.0, 1)
    with pytest.raises(ValueError, match="class codes must be in 0..2"):
        RandomizedResponse(1.0, 3).release(np.array([0.0, 3.0]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="low < high"):
        LaplaceLabels(1.0, 2.0, 2.0)


# ------------------------------------------------------------ the peers' policy
N_ROWS = 60
NODE = 101


@pytest.fixture
def grid(tmp_path, server_identity) -> InProcessGrid:
    """Two simulated peers over 60 entities whose policy accepts private labels only."""
    grid = two_peer_grid(tmp_path, N_ROWS, label=False)
    for context in grid.contexts.values():
        context.node_config["accept-labels"] = "private"
    return grid


def _embed_with_labels(grid: InProcessGrid, label_epsilon: object) -> Message:
    (reply,) = grid.send_and_receive([protocol.pseudonyms_request(NODE, ConfigRecord({}))])
    fingerprint = protocol.read_pseudonyms(reply, "peer-0")[1][protocol.FINGERPRINT]
    is_test = np.arange(N_ROWS) % 4 == 0
    request = protocol.embed_request(
        NODE, np.arange(N_ROWS), is_test,
        ConfigRecord({protocol.FINGERPRINT: fingerprint, "encoder": "none",
                      "audit": False}),
        np.zeros(int((~is_test).sum())))
    request.content[protocol.CONFIG][protocol.LABEL_EPSILON] = label_epsilon
    (reply,) = grid.send_and_receive([request])
    return reply


def _refusal(reply: Message) -> str:
    assert reply.has_error() and reply.error.code == protocol.PEER_INPUT_ERROR
    return str(reply.error.reason)


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_a_private_peer_accepts_labels_within_its_label_epsilon(grid, epsilon):
    assert not _embed_with_labels(grid, epsilon).has_error()


def test_a_private_peer_refuses_clear_labels(grid):
    assert _refusal(_embed_with_labels(grid, 0.0)) == (
        "peer-0: refused by its policy (accept-labels): the request sends training "
        "labels in clear")


def test_a_private_peer_refuses_a_label_epsilon_above_its_limit(grid):
    assert _refusal(_embed_with_labels(grid, 2.5)) == (
        "peer-0: refused by its policy (max-label-epsilon): the request's labels carry "
        "label epsilon 2.5, more than 2")
    grid.contexts[NODE].node_config["max-label-epsilon"] = 0.25
    assert "more than 0.25" in _refusal(_embed_with_labels(grid, 0.5))


@pytest.mark.parametrize("declared", ["1.0", float("nan"), -1.0])
def test_a_malformed_label_epsilon_is_refused(grid, declared):
    assert _refusal(_embed_with_labels(grid, declared)) == (
        "peer-0: the request's 'label-epsilon' must be a finite number >= 0")


# ------------------------------------------------------------ the labels a run sends
N = 300


def _files(directory, task: str) -> tuple[list[str], pd.Series]:
    """Three peers' files over one set of entities, each in its own row order;
    the label (three classes, or a number) depends on every peer's columns."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, N, 2))
    ids = [f"E{k:04d}" for k in range(N)]
    y = x[0, :, 0] + x[1, :, 0] + x[2, :, 0]
    if task == "classification":
        y = np.digitize(y, [-0.8, 0.8]).astype(float)
    paths = []
    for peer in range(3):
        frame = pd.DataFrame(x[peer], columns=[f"p{peer}c{j}" for j in range(2)])
        frame.insert(0, "id", ids)
        if peer == 0:
            frame["y"] = y
        paths.append(str(directory / f"peer-{peer}.csv"))
        frame.sample(frac=1.0, random_state=peer).to_csv(paths[-1], index=False)
    return paths, pd.Series(y, index=ids)


def _received_training_labels(
    tmp_path, task: str = "classification", **overrides
) -> tuple[dict, object, pd.Series]:
    """Run a supervised training in process; return per peer (IDs of its training
    rows, the labels it received, the declared label epsilon) in the request's
    order, the result and the true labels by ID."""
    paths, truth = _files(tmp_path, task)
    config = {"task": task, "data-paths": ";".join(paths), "id-column": "id", "target": "y",
              "label-source": "peer", "alignment-secret": "secret-of-the-peers",
              "encoder": "prediction", "audit": False, "test-fraction": 0.25,
              "seed": 3, "min-entities": 50, "timeout": 60.0} | overrides
    sent: list[Message] = []

    def record(messages: list[Message], replies: list[Message]) -> list[Message]:
        sent.extend(over_the_wire(m) for m in messages
                    if m.metadata.message_type == protocol.TRAIN_EMBED)
        return replies

    grid = InProcessGrid(client_app, config, 3, tamper=record)
    strategy = strategy_from_config(config)
    strategy.label_seed = 11
    strategy.start(grid, timeout=60.0)
    write_report(strategy.result, tmp_path / "report", config)
    received = {}
    for message in sent:
        context = grid.contexts[message.metadata.dst_node_id]
        with simulated_runtime():
            peer = peer_from_context(context.node_config, context.run_config)
        plan = read_request_plan(message, peer.name, len(peer.table))
        ids = np.asarray(peer.table.ids)[plan.positions[~plan.is_test]]
        declared = message.content[protocol.CONFIG][protocol.LABEL_EPSILON]
        received[peer.name] = (ids, plan.train_targets, declared)
    return received, strategy.result, truth


@pytest.mark.usefixtures("server_identity")
def test_each_peer_receives_its_training_rows_own_labels_in_clear(tmp_path):
    received, result, truth = _received_training_labels(tmp_path)
    assert sorted(received) == ["peer-0", "peer-1", "peer-2"]
    for ids, labels, declared in received.values():
        assert declared == 0.0
        assert len(ids) == result.n_train
        np.testing.assert_array_equal(labels, truth[ids].to_numpy())
    assert result.label_privacy == {"labels_sent": "clear"}
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["label_privacy"] == {"labels_sent": "clear"}
    assert "Training labels: **labels sent in clear to every peer**" in (
        tmp_path / "report" / "report.md").read_text()


@pytest.mark.usefixtures("server_identity")
def test_each_peer_receives_the_same_noised_copy_of_its_rows_labels(tmp_path):
    received, result, truth = _received_training_labels(
        tmp_path, **{"label-dp-epsilon": 1.0})
    copies = []
    for ids, labels, declared in received.values():
        assert declared == 1.0
        # The server noised the training labels once, in its plan's order: each
        # peer's labels are that one noised copy, aligned to the peer's rows.
        expected = private_labels(truth[ids].to_numpy(), task="classification",
                                  epsilon=1.0, seed=11, n_classes=3)
        np.testing.assert_array_equal(labels, expected.labels)
        copies.append(pd.Series(labels, index=ids).sort_index())
    for copy in copies[1:]:
        pd.testing.assert_series_equal(copy, copies[0])
    flipped = float((copies[0] != truth[copies[0].index]).mean())
    assert 0.3 < flipped < 0.6  # 1 - e / (e + 2) = 0.42
    assert result.label_privacy["labels_sent"] == "label-dp"
    assert result.label_privacy["mechanism"] == "K-ary randomized response"
    assert result.label_privacy["epsilon"] == 1.0
    assert result.label_privacy["n_classes"] == 3
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["label_privacy"]["epsilon"] == 1.0
    assert ("Training labels: **labels sent to every peer with K-ary randomized "
            "response, label epsilon 1** per entity (3 classes, keep probability "
            "0.5761)") in (
        tmp_path / "report" / "report.md").read_text()


@pytest.mark.usefixtures("server_identity")
def test_numeric_labels_go_with_laplace_noise_clipped_to_the_training_quantiles(tmp_path):
    received, result, truth = _received_training_labels(
        tmp_path, "regression", **{"label-dp-epsilon": 2.0})
    for ids, labels, declared in received.values():
        assert declared == 2.0
        expected = private_labels(truth[ids].to_numpy(), task="regression",
                                  epsilon=2.0, seed=11)
        np.testing.assert_array_equal(labels, expected.labels)
    train = truth[ids].to_numpy()
    low, high = np.quantile(train, LABEL_QUANTILES)
    assert result.label_privacy["range"] == [low, high]
    assert result.label_privacy["scale"] == pytest.approx((high - low) / 2.0)
    assert "range [" in (tmp_path / "report" / "report.md").read_text()
