"""End-to-end runs through the real flwr stack (local simulation federation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl_embed.data.datasets import load_dataset, vertical_split
from vfl_embed.peer.message_log import read_message_log
from vfl_embed.wire.alignment import KeyedHashAlignment, intersect
from vfl_embed.wire.psi import hash_to_group

pytestmark = pytest.mark.slow
DEMO_SECRET = "vfl-embed-demo-secret"


def _affine_copies(latents: np.ndarray, raw: pd.DataFrame) -> list[str]:
    """Raw numeric columns that some latent column reproduces up to scale."""
    copies = []
    for column in raw.columns:
        values = raw[column].to_numpy(dtype=float)
        known = ~np.isnan(values)
        if known.sum() < 10 or values[known].std() == 0:
            continue
        for j in range(latents.shape[1]):
            if abs(np.corrcoef(values[known], latents[known, j])[0, 1]) > 0.9999:
                copies.append(column)
    return copies


def _peer_ids(dataset, num_peers: int = 3) -> dict[str, np.ndarray]:
    """Each simulated peer's IDs in its row order (as the app splits the dataset)."""
    return {f"peer-{k}": vertical_split(dataset, num_peers, k, coverage=0.95,
                                        seed=42)["id"].to_numpy()
            for k in range(num_peers)}


def _aligned_ids(log_dir, dataset) -> dict[str, np.ndarray]:
    """Per peer, the IDs of the rows the server asked it to embed, in server order."""
    ids = _peer_ids(dataset)
    return {m["peer"]: ids[m["peer"]][m["arrays"]["plan.positions"]]
            for m in read_message_log(log_dir, "received")
            if m["message_type"] == "train.embed"}


def _leaks(log_dir, dataset) -> list[str]:
    """Every raw ID or raw numeric column found in what the peers sent."""
    ids = dataset.features["id"].astype(str)
    numeric = dataset.features.set_index("id").select_dtypes("number")
    found = []
    for reply in read_message_log(log_dir):
        blob = b"".join(a.tobytes() for a in reply["arrays"].values())
        blob += str(reply["records"]).encode()
        found += [i for i in ids[:200] if i.encode() in blob]
    aligned = _aligned_ids(log_dir, dataset)
    for reply in read_message_log(log_dir):
        if reply["message_type"] == "train.embed":
            rows = numeric.loc[aligned[reply["peer"]]]
            found += _affine_copies(reply["arrays"]["latents.latents"], rows)
    return found


def _unblinded(log_dir, dataset) -> list[str]:
    """Kinds of unblinded ID found in any message a peer sent or received."""
    ids = dataset.features["id"].astype(str).tolist()
    forms = {"ID hashed to the group": hash_to_group(ids),
             "keyed pseudonym": KeyedHashAlignment(DEMO_SECRET).pseudonymize(ids)}
    seen = set()
    for direction in ("sent", "received"):
        for message in read_message_log(log_dir, direction):
            for values in message["arrays"].values():
                if values.dtype == np.uint8 and values.ndim == 2 and values.shape[1] == 32:
                    seen |= set(map(bytes, values))
    return [kind for kind, rows in forms.items() if seen & set(map(bytes, rows))]


def test_psi_run_joins_like_keyed_hash_and_leaks_nothing(run_app, tmp_path):
    # Digits: 21-22 pixel columns per peer. (A peer holding a single numeric
    # column, like Titanic's 'age' peer, sends a monotone function of it
    # whatever the encoder; this check flags that too.)
    dataset = load_dataset("digits")
    common = {"dataset": "digits", "model": "logistic", "latent-dim": 8,
              "label-source": "peer"}
    log_dir = tmp_path / "log-psi"
    run = run_app(3, **common, alignment="psi", audit=True,
                  **{"message-log-dir": str(log_dir)})
    assert run.returncode == 0, run.output[-3000:]
    assert "[align] PSI round 3 of 3" in run.output
    assert "[align] asking peer-0 for the labels of aligned rows" in run.output
    assert run.report["alignment"] == "psi"
    assert run.report["held_out_metrics"]["accuracy"] > 0.85
    assert _leaks(log_dir, dataset) == []
    # The server never held an unblinded ID: none travelled, in any form.
    kinds = {m["message_type"] for m in read_message_log(log_dir, "received")}
    assert kinds == {"query.pseudonyms", "query.blind", "query.labels", "train.embed"}
    assert _unblinded(log_dir, dataset) == []
    # The same join as keyed-hash alignment: every peer embeds the entities all
    # peers hold, each peer's rows in the same server order.
    aligned = _aligned_ids(log_dir, dataset)
    peer_ids = _peer_ids(dataset)
    keyed = intersect({p: KeyedHashAlignment(DEMO_SECRET).pseudonymize(i)
                       for p, i in peer_ids.items()}, 0.2, 42)
    for peer, ids in aligned.items():
        assert sorted(ids) == sorted(peer_ids[peer][keyed.positions[peer]])
        np.testing.assert_array_equal(ids, aligned["peer-0"])
    # Every peer audited its latents: an 8-dim latent is harder to invert than the raw columns.
    privacy = run.report["privacy"]
    assert sorted(privacy) == ["peer-0", "peer-1", "peer-2"]
    assert all(f["attack_r2"] < f["raw_r2"] for f in privacy.values())
    # The same checks catch a leak: keyed-hash pseudonyms and the raw-column
    # baseline, which sends the standardized columns themselves.
    leak_dir = tmp_path / "log-raw"
    leaking = run_app(3, **common, encoder="none", **{"message-log-dir": str(leak_dir)})
    assert leaking.returncode == 0, leaking.output[-3000:]
    assert "pixel_4_4" in _leaks(leak_dir, dataset)
    assert _unblinded(leak_dir, dataset) == ["keyed pseudonym"]
    assert {p: sorted(i) for p, i in _aligned_ids(leak_dir, dataset).items()} == {
        p: sorted(i) for p, i in aligned.items()}


# ----------------------------------------------------------------- bad input
@pytest.fixture
def peer_files(tmp_path):
    """Three peers' CSV files and a label file cut from the Titanic table."""
    dataset = load_dataset("titanic")
    paths = []
    for peer in range(3):
        table = vertical_split(dataset, 3, peer, coverage=0.95, seed=7)
        path = tmp_path / f"org{peer}.csv"
        table.to_csv(path, index=False)
        paths.append(path)
    labels = tmp_path / "labels.csv"
    dataset.labels.to_csv(labels, index=False)
    return paths, labels


def _run_files(run_app, paths, labels, **config):
    return run_app(3, **{
        "dataset": "", "data-paths": ";".join(map(str, paths)),
        "label-path": str(labels), "target": "survived",
    } | config)


def _stopped_with(run, *messages: str) -> dict:
    """Check the run stopped before any training, with ``messages``; return its report."""
    report = run.report  # a stopped run keeps a report of what it finished
    for message in messages:
        assert message in run.output, run.output[-3000:]
        assert message in report["error"]
    assert "[embed]" not in run.output  # stopped before any training
    assert (report["status"], report["phase"]) == ("failed", "align")
    assert report["model_file"] is None
    assert not (run.report_path.parent / "predictions.csv").exists()
    return report


def test_same_command_twice_gives_same_metrics(run_app, peer_files):
    """Determinism, on a run of a user's own files and label file."""
    paths, labels = peer_files
    first = _run_files(run_app, paths, labels)
    second = _run_files(run_app, paths, labels)
    assert first.returncode == second.returncode == 0, second.output[-3000:]
    assert first.report["held_out_metrics"]["accuracy"] > 0.7
    assert first.report["held_out_metrics"] == second.report["held_out_metrics"]
    assert first.report["peers"]["peer-1"]["reconstruction-mae"] == (
        second.report["peers"]["peer-1"]["reconstruction-mae"])
    for phase in ("[align]", "[embed]", "[learn]"):
        assert phase in first.output


def test_every_broken_peer_is_named_in_one_stop(run_app, peer_files):
    paths, labels = peer_files
    table = pd.read_csv(paths[0])
    pd.concat([table, table.head(3)]).to_csv(paths[0], index=False)
    paths[1] = paths[1].with_name("nowhere.csv")
    pd.read_csv(paths[2]).rename(columns={"id": "key"}).to_csv(paths[2], index=False)
    report = _stopped_with(
        _run_files(run_app, paths, labels),
        f"peer-0: data file '{paths[0]}': ID column 'id' has 3 duplicate IDs",
        f"; peer-1: data file '{paths[1]}' does not exist; ",
        f"; peer-2: data file '{paths[2]}': ID column 'id' not found",
    )
    assert report["peers"] == {} and report["entities"]["aligned"] == 0




def test_strong_preset_releases_one_prediction_per_peer(run_app):
    """The per-peer supervised release through Flower: breast cancer, 3 peers.

    Each peer trains XGBoost on its own columns with the label holder's training
    labels and sends one cross-fitted probability per entity; the report names
    the preset and states the audit's verdict."""
    run = run_app(3, dataset="breast-cancer", privacy="strong", audit=True,
                  **{"peer-coverage": 1.0})
    assert run.returncode == 0, run.output[-3000:]
    report = run.report
    assert report["privacy_preset"] == "strong"
    assert report["run_config"]["encoder"] == "prediction"
    assert {peer["latent-dim"] for peer in report["peers"].values()} == {1.0}
    assert report["held_out_metrics"]["accuracy"] > 0.9
    strongest = max(f["attack_r2"] for f in report["privacy"].values())
    assert strongest < 0.5  # one probability per entity is far from invertible
    assert "[privacy] preset strong: The audit's strongest attack" in run.output


def test_bottleneck_k_same_and_label_dp_through_flower(run_app):
    """Three of the release mechanisms in one Flower run: breast cancer, 3 peers.

    Each peer trains a supervised information bottleneck on labels sent with
    randomized response at epsilon 2, replaces each released sample by the mean
    of its 5 nearest training samples (k-Same), and reports the bottleneck's KL
    and the label floor of the labels it received."""
    run = run_app(3, dataset="breast-cancer", encoder="bottleneck", supervised=True,
                  audit=True, **{"peer-coverage": 1.0, "latent-dim": 4,
                                 "label-dp-epsilon": 2.0, "release-mode": "k-same"})
    assert run.returncode == 0, run.output[-3000:]
    report = run.report
    assert report["label_privacy"]["labels_sent"] == "label-dp"
    assert report["label_privacy"]["epsilon"] == 2.0
    assert report["run_config"]["release-mode"] == "k-same"
    for figures in report["privacy"].values():
        assert figures["bottleneck_kl_nats"] > 0
        # Held-out R²: about 0, or a little below, where the noised label says little.
        assert -0.1 < figures["floor_label_r2"] <= figures["floor_label_r2_worst"] <= 1
    assert {peer["latent-dim"] for peer in report["peers"].values()} == {4.0}
    assert report["held_out_metrics"]["accuracy"] > 0.8
