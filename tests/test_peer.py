"""Tests of vfl_embed.peer: one peer's pseudonyms, labels and embeddings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vfl_embed.data.datasets import load_dataset, vertical_split
from vfl_embed.data.tables import PeerTable
from vfl_embed.errors import PeerDataError, PolicyError
from vfl_embed.peer.context import peer_from_context
from vfl_embed.peer.peer import Peer
from vfl_embed.peer.preprocessing import Preprocessor
from vfl_embed.wire.alignment import KeyedHashAlignment

SECRET = "for-the-peers-only"
# A small, fast encoder: a handful of epochs on a narrow network.
FAST = {"encoder": "autoencoder", "latent-dim": 3, "hidden-sizes": "16,8",
        "epochs": 4, "batch-size": 32, "validation-split": 0.0, "seed": 1}


@pytest.fixture
def frame() -> pd.DataFrame:
    """150 entities: numeric and categorical features, numeric and string labels."""
    rng = np.random.default_rng(0)
    n = 150
    income = rng.lognormal(10.0, 0.4, n).round(2)
    income[[5, 50]] = np.nan
    return pd.DataFrame({
        "key": [f"c-{k:04d}" for k in rng.permutation(1000)[:n]],
        "income": income,
        "age": rng.integers(18, 90, n).astype(float),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "price": rng.normal(100.0, 10.0, n),
        "churn": rng.choice(["stay", "left"], n),
    })


@pytest.fixture
def peer(frame: pd.DataFrame) -> Peer:
    table = PeerTable(frame.drop(columns=["churn"]), "key", "alice",
                      label_column="price")
    return Peer(table, KeyedHashAlignment(SECRET))


@pytest.fixture
def simulated_peer(frame: pd.DataFrame) -> Peer:
    table = PeerTable(frame.drop(columns=["price"]), "key", "alice",
                      label_column="churn")
    return Peer(table, KeyedHashAlignment(SECRET), simulated=True)


@pytest.fixture
def plan() -> tuple[np.ndarray, np.ndarray]:
    """120 of the 150 rows in a shuffled server order; every 4th held out."""
    positions = np.random.default_rng(2).permutation(150)[:120]
    is_test = np.arange(120) % 4 == 0
    return positions, is_test


# ----------------------------------------------------------------- pseudonyms
def test_name_is_the_table_peer(peer: Peer) -> None:
    assert peer.name == "alice"
    assert peer.simulated is False


def test_pseudonyms_are_keyed_hashes_of_the_ids(peer: Peer, frame) -> None:
    pseudonyms = peer.pseudonyms()
    assert pseudonyms.shape == (150, 32)
    assert pseudonyms.dtype == np.uint8
    expected = KeyedHashAlignment(SECRET).pseudonymize(list(frame["key"]))
    np.testing.assert_array_equal(pseudonyms, expected)
    other = KeyedHashAlignment("another secret of the peers").pseudonymize(list(frame["key"]))
    assert not np.array_equal(pseudonyms, other)


# ---------------------------------------------------------------------- embed
def test_embed_returns_latents_and_metrics(peer: Peer, plan) -> None:
    positions, is_test = plan
    latents, metrics = peer.embed(positions, is_test, FAST)
    assert latents.shape == (120, 3)
    assert latents.dtype == np.float32
    assert np.isfinite(latents).all()
    assert len(np.unique(latents, axis=0)) == 120
    assert 0.0 < metrics["reconstruction-mae"] < 5.0
    assert 0.0 <= metrics["within-5pct-min"] <= metrics["within-5pct"] <= 1.0
    assert metrics["n-columns"] == 3.0  # income, age, plan (price is the label)
    assert metrics["n-encoded-features"] == 2.0 + 4.0  # plan: 3 levels + rare
    assert metrics["latent-dim"] == 3.0
    assert metrics["epochs-run"] == 4.0
    assert metrics["fit-seconds"] > 0.0


def test_embed_is_deterministic(peer: Peer, plan) -> None:
    positions, is_test = plan
    first, metrics = peer.embed(positions, is_test, FAST)
    again, metrics_again = peer.embed(positions, is_test, FAST)
    np.testing.assert_array_equal(first, again)
    assert metrics["reconstruction-mae"] == metrics_again["reconstruction-mae"]


def test_latents_follow_the_order_of_positions(simulated_peer: Peer, frame,
                                               plan) -> None:
    positions, is_test = plan
    config = {"encoder": "none"}
    latents, metrics = simulated_peer.embed(positions, is_test, config)
    # With the identity encoder the latents are the preprocessed rows, fitted
    # on the training rows only, in the order of positions.
    features = frame.drop(columns=["key", "price", "churn"])
    selected = features.iloc[positions].reset_index(drop=True)
    expected = Preprocessor().fit(selected[~is_test]).transform(selected)
    np.testing.assert_allclose(latents, expected, rtol=1e-6)
    ages = frame["age"].to_numpy()[positions]
    train_ages = ages[~is_test]
    np.testing.assert_allclose(latents[:, 1] * train_ages.std() + train_ages.mean(),
                               ages, rtol=1e-5)
    # Reordering the plan reorders the latents and nothing else.
    order = np.random.default_rng(5).permutation(120)
    reordered, _ = simulated_peer.embed(positions[order], is_test[order], config)
    np.testing.assert_allclose(reordered, latents[order], rtol=1e-6)
    assert metrics["reconstruction-mae"] == 0.0
    assert metrics["within-5pct"] == 1.0
    assert metrics["latent-dim"] == metrics["n-encoded-features"] == latents.shape[1]
    assert metrics["epochs-run"] == 0.0


def test_embed_without_held_out_rows_scores_training_rows(simulated_peer) -> None:
    positions = np.arange(40)
    latents, metrics = simulated_peer.embed(positions, np.zeros(40, bool),
                                            {"encoder": "none"})
    assert latents.shape[0] == 40
    assert metrics["within-5pct"] == 1.0


def test_supervised_embed(peer: Peer, plan) -> None:
    positions, is_test = plan
    targets, _ = peer.labels(positions[~is_test])
    config = FAST | {"task": "regression"}
    with pytest.raises(PolicyError, match=r"alice: refused by its policy \(accept-labels\)"):
        peer.embed(positions, is_test, config, targets)  # a deployed peer's default
    peer.policy = replace(peer.policy, accept_labels="any")
    latents, metrics = peer.embed(positions, is_test, config, targets)
    assert latents.shape == (120, 3)
    assert metrics["latent-dim"] == 3.0


def test_encoder_none_is_refused_outside_simulation(peer: Peer, plan) -> None:
    positions, is_test = plan
    with pytest.raises(PeerDataError, match="alice: encoder 'none'") as err:
        peer.embed(positions, is_test, {"encoder": "none"})
    assert "only allowed in simulation" in str(err.value)


def test_unknown_encoder_is_refused(simulated_peer: Peer, plan) -> None:
    positions, is_test = plan
    with pytest.raises(PeerDataError, match="alice: unknown encoder 'pca'"):
        simulated_peer.embed(positions, is_test, {"encoder": "pca"})


@pytest.mark.parametrize(
    "positions",
    [np.array([0, 150]), np.array([-1, 3]), np.array([[0, 1]])],
    ids=["past-end", "negative", "2-D"],
)
def test_positions_out_of_range_raise(peer: Peer, positions: np.ndarray) -> None:
    with pytest.raises(PeerDataError, match="alice: the server sent row positions "
                                            "out of range for a table of 150 rows"):
        peer.embed(positions, np.zeros(positions.shape[-1], bool), FAST)
    with pytest.raises(PeerDataError, match="alice: .*out of range"):
        peer.labels(positions)


# --------------------------------------------------------------------- labels
def test_numeric_labels(peer: Peer, frame, plan) -> None:
    positions, _ = plan
    labels, classes = peer.labels(positions)
    assert labels.dtype == np.float64
    np.testing.assert_array_equal(labels, frame["price"].to_numpy()[positions])
    assert classes == []


def test_string_labels_become_class_codes(simulated_peer: Peer, frame) -> None:
    positions = np.array([3, 0, 7, 1])
    labels, classes = simulated_peer.labels(positions)
    assert classes == ["left", "stay"]
    expected = [classes.index(v) for v in frame["churn"].to_numpy()[positions]]
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.float64


def test_missing_labels_raise(frame: pd.DataFrame) -> None:
    frame.loc[[2, 9], "price"] = np.nan
    frame.loc[4, "churn"] = None
    numeric = Peer(PeerTable(frame, "key", "bob", label_column="price"),
                   KeyedHashAlignment(SECRET))
    with pytest.raises(PeerDataError, match="bob: label missing for 2 aligned rows"):
        numeric.labels(np.arange(20))
    assert len(numeric.labels(np.array([0, 1, 3]))[0]) == 3
    strings = Peer(PeerTable(frame, "key", "bob", label_column="churn"),
                   KeyedHashAlignment(SECRET))
    with pytest.raises(PeerDataError, match="bob: label missing"):
        strings.labels(np.arange(10))


def test_peer_without_label_column(frame: pd.DataFrame) -> None:
    unlabelled = Peer(PeerTable(frame, "key", "bob"), KeyedHashAlignment(SECRET))
    with pytest.raises(PeerDataError, match="bob: holds no label column"):
        unlabelled.labels(np.arange(3))


# -------------------------------------------------------------- from context
@pytest.fixture(scope="module")
def titanic():
    return load_dataset("titanic")


def _run_config(**overrides) -> dict:
    return {"dataset": "titanic", "alignment-secret": "demo-secret-of-the-test",
            "peer-coverage": 0.9, "seed": 42, "label-source": "server", **overrides}


def test_simulated_peer_from_titanic(titanic, simulated) -> None:
    peer = peer_from_context({"partition-id": 1, "num-partitions": 2},
                             _run_config())
    assert peer.name == "peer-1"
    assert peer.simulated is True
    assert peer.table.labels is None
    expected = vertical_split(titanic, 2, 1, coverage=0.9, seed=42)
    assert list(peer.table.features.columns) == list(expected.columns[1:])
    assert len(peer.table) == round(0.9 * 1309)
    np.testing.assert_array_equal(
        peer.pseudonyms(),
        KeyedHashAlignment("demo-secret-of-the-test").pseudonymize(list(expected["id"])),
    )


def test_simulated_label_peer_holds_the_labels(titanic, simulated) -> None:
    config = _run_config(**{"label-source": "peer"})
    first = peer_from_context({"partition-id": 0, "num-partitions": 2}, config)
    second = peer_from_context({"partition-id": 1, "num-partitions": 2}, config)
    assert second.table.labels is None
    assert first.table.labels is not None
    assert "survived" not in first.table.features.columns
    truth = titanic.labels.set_index("id")["survived"]
    np.testing.assert_array_equal(first.table.labels.to_numpy(),
                                  truth.loc[list(first.table.ids)].to_numpy())
    labels, classes = first.labels(np.arange(5))
    assert classes == [] and set(labels) <= {0.0, 1.0}


def test_simulated_peer_from_digits(simulated) -> None:
    peer = peer_from_context({"partition-id": 2, "num-partitions": 4},
                             _run_config(dataset="digits"))
    assert peer.name == "peer-2"
    # pixel_4_0 and pixel_4_7 are blank in every image: dropped as single-valued.
    assert peer.table.features.shape == (round(0.9 * 1797), 14)
    assert peer.table.features.columns[0] == "pixel_4_1"


def test_simulated_peers_from_user_files(frame: pd.DataFrame, tmp_path, simulated) -> None:
    paths = [tmp_path / "a.csv", tmp_path / "b.parquet"]
    frame[["key", "income", "price"]].to_csv(paths[0], index=False)
    frame[["key", "plan"]].to_parquet(paths[1], index=False)
    config = _run_config(**{"data-paths": f"{paths[0]}; {paths[1]}",
                            "id-column": "key", "target": "price",
                            "label-source": "peer"})
    first = peer_from_context({"partition-id": 0, "num-partitions": 2}, config)
    second = peer_from_context({"partition-id": 1, "num-partitions": 2}, config)
    assert list(first.table.features.columns) == ["income"]
    assert first.table.labels is not None
    assert list(second.table.features.columns) == ["plan"]
    assert second.table.labels is None
    np.testing.assert_array_equal(first.pseudonyms(), second.pseudonyms())


def test_a_label_column_among_a_peers_features_is_refused(frame, tmp_path, simulated) -> None:
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    frame[["key", "income", "price"]].to_csv(paths[0], index=False)
    frame[["key", "plan", "price"]].to_csv(paths[1], index=False)
    config = _run_config(**{"data-paths": f"{paths[0]};{paths[1]}", "id-column": "key",
                            "target": "price", "label-source": "server"})
    with pytest.raises(PeerDataError, match=f"peer-1: '{paths[1]}' has a column 'price', "
                                            "the run's label column"):
        peer_from_context({"partition-id": 1, "num-partitions": 2}, config)


def test_deployed_peer_refuses_the_runs_label_among_its_columns(deployment: dict) -> None:
    with pytest.raises(PeerDataError, match="crm: .*crm.csv' has a column 'churn'"):
        peer_from_context(deployment, {"target": "churn"})
    peer = peer_from_context(deployment | {"label-column": "churn"}, {"target": "churn"})
    assert "churn" not in peer.table.features.columns


def test_user_files_must_match_the_federation(frame, tmp_path, simulated) -> None:
    path = tmp_path / "a.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(PeerDataError, match="peer-0: run config 'data-paths' names "
                                            "1 files but the federation has 3"):
        peer_from_context({"partition-id": 0, "num-partitions": 3},
                          _run_config(**{"data-paths": str(path)}))


@pytest.fixture
def deployment(frame: pd.DataFrame, tmp_path) -> dict:
    data = tmp_path / "crm.csv"
    frame.to_csv(data, index=False)
    secret = tmp_path / "secret.txt"
    secret.write_text("the peers' secret\n")
    return {"data-path": str(data), "id-column": "key",
            "alignment-secret-file": str(secret)}


def test_deployed_peer_from_node_config(deployment: dict, frame) -> None:
    peer = peer_from_context(deployment, {"alignment-secret": "ignored-by-deployed-peers"})
    assert peer.name == "crm"  # the data file's stem
    assert peer.simulated is False
    assert peer.table.labels is None
    assert list(peer.table.features.columns) == ["income", "age", "plan", "price",
                                                 "churn"]
    expected = KeyedHashAlignment("the peers' secret").pseudonymize(list(frame["key"]))
    np.testing.assert_array_equal(peer.pseudonyms(), expected)


def test_deployed_peer_name_and_label_column(deployment: dict) -> None:
    config = deployment | {"peer-name": "bank", "label-column": "churn"}
    peer = peer_from_context(config, {})
    assert peer.name == "bank"
    assert peer.table.labels is not None
    assert "churn" not in peer.table.features.columns


def test_missing_secret_file_names_the_peer(deployment: dict, tmp_path) -> None:
    missing = tmp_path / "nope.txt"
    config = deployment | {"alignment-secret-file": str(missing)}
    with pytest.raises(PeerDataError, match="crm: alignment secret file") as err:
        peer_from_context(config, {})
    assert str(missing) in str(err.value)


def test_no_secret_names_the_peer(deployment: dict) -> None:
    config = {k: v for k, v in deployment.items() if k != "alignment-secret-file"}
    with pytest.raises(PeerDataError, match="crm: no alignment secret"):
        peer_from_context(config, {"alignment-secret": "run-wide-demo-secret"})


def test_empty_secret_file_names_the_peer(deployment: dict, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(PeerDataError, match="crm"):
        peer_from_context(deployment | {"alignment-secret-file": str(empty)}, {})


def test_missing_data_file_names_the_peer(deployment: dict, tmp_path) -> None:
    config = deployment | {"data-path": str(tmp_path / "gone.csv")}
    with pytest.raises(PeerDataError, match="gone: data file"):
        peer_from_context(config, {})


def test_node_config_without_data_raises() -> None:
    with pytest.raises(PeerDataError, match="peer: this SuperNode is not simulated, and "
                                            "its node config names no 'data-path'"):
        peer_from_context({}, _run_config())


def test_a_partition_id_does_not_make_a_deployed_peer_simulated(deployment: dict) -> None:
    # Outside Flower's simulation runtime the server's run config never picks
    # the peer's data, secret or raw-column encoder, whatever the node config says.
    spoofed = {"partition-id": 0, "num-partitions": 1}
    with pytest.raises(PeerDataError, match="not simulated"):
        peer_from_context(spoofed, _run_config())
    peer = peer_from_context(deployment | spoofed, _run_config())
    assert peer.simulated is False
    assert str(peer.table.source) == deployment["data-path"]


def test_unknown_node_config_keys_are_named(deployment: dict) -> None:
    with pytest.raises(PeerDataError, match=r"crm: unknown node-config key\(s\) "
                                            r"\['data-paht'\]"):
        peer_from_context(deployment | {"data-paht": "x.csv"}, {})


# ------------------------------------------------------------- saved encoders
@pytest.mark.parametrize("bits", [32, 16])
def test_embed_saves_the_state_that_encode_reuses(frame, plan, tmp_path, bits) -> None:
    table = PeerTable(frame.drop(columns=["churn"]), "key", "alice", label_column="price")
    peer = Peer(table, KeyedHashAlignment(SECRET), state_dir=tmp_path)
    positions, is_test = plan
    latents, _ = peer.embed(positions, is_test, FAST | {"latent-bits": bits}, run_id=11)
    assert (tmp_path / "alice" / "run-11" / "autoencoder.keras").is_file()
    # New rows in another order, encoded later without refitting, in the same width.
    later = positions[::-3]
    encoded, metrics = peer.encode(later, train_run=11)
    assert encoded.dtype == latents.dtype == {32: np.float32, 16: np.float16}[bits]
    np.testing.assert_array_equal(encoded, latents[::-3])
    assert metrics["rows"] == len(later)


def test_deployed_peer_keeps_its_state_next_to_its_data(deployment: dict) -> None:
    peer = peer_from_context(deployment, {})
    assert peer.state_dir == Path(deployment["data-path"]).parent / "vfl-embed-state"
    chosen = peer_from_context(deployment | {"state-dir": "/srv/state"}, {})
    assert chosen.state_dir == Path("/srv/state")


def test_unwritable_state_dir_names_the_peer_and_the_key(frame, plan, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    table = PeerTable(frame.drop(columns=["churn"]), "key", "alice")
    peer = Peer(table, KeyedHashAlignment(SECRET), state_dir=blocker / "state")
    with pytest.raises(PeerDataError, match="alice: cannot keep its encoder in .*"
                                            "'state-dir'"):
        peer.embed(*plan, FAST, run_id=1)


def test_encode_without_a_state_dir_is_refused(peer: Peer) -> None:
    with pytest.raises(PeerDataError, match="alice: keeps no encoder state"):
        peer.encode(np.arange(3), train_run=1)
