"""End-to-end runs through the real flwr stack (local simulation federation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vfl_embed.alignment import KeyedHashAlignment
from vfl_embed.datasets import load_dataset, vertical_split
from vfl_embed.message_log import read_message_log

pytestmark = pytest.mark.slow
DEMO_SECRET = "vfl-embed-demo-secret"


# 3 peers: test_faults, the determinism and leak tests; 5 peers: test_cli.py.
@pytest.mark.parametrize("num_peers", [2])
def test_n_peers_metrics_land_in_report(run_app, num_peers):
    run = run_app(num_peers, dataset="digits", model="logistic", **{"latent-dim": 8})
    assert run.returncode == 0, run.output[-3000:]
    report = run.report
    assert sorted(report["peers"]) == [f"peer-{i}" for i in range(num_peers)]
    assert report["held_out_metrics"]["accuracy"] > 0.85
    assert set(report["held_out_metrics"]) == {"accuracy", "macro-f1", "roc-auc"}
    # Each peer holds 95 % of 1,797 entities; all of them share about 0.95^N.
    expected = 1797 * 0.95**num_peers
    assert abs(report["entities"]["aligned"] - expected) < 0.05 * 1797
    assert (run.report_path.parent / "report.png").stat().st_size > 10_000
    assert (run.report_path.parent / "downstream_model.joblib").exists()
    for phase in ("[align]", "[embed]", "[learn]"):
        assert phase in run.output


def test_same_command_twice_gives_same_metrics(run_app):
    """Determinism, on a run whose labels come from a label-holding peer."""
    first = run_app(3, dataset="titanic", **{"label-source": "peer"})
    second = run_app(3, dataset="titanic", **{"label-source": "peer"})
    assert first.returncode == second.returncode == 0, second.output[-3000:]
    assert "[align] asking peer-0 for the labels of aligned rows" in first.output
    assert first.report["held_out_metrics"]["accuracy"] > 0.7
    assert first.report["held_out_metrics"] == second.report["held_out_metrics"]
    assert first.report["peers"]["peer-1"]["reconstruction-mae"] == (
        second.report["peers"]["peer-1"]["reconstruction-mae"])


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


def _leaks(log_dir, dataset, num_peers: int) -> list[str]:
    """Every raw ID or raw numeric column found in what the peers sent."""
    ids = dataset.features["id"].astype(str)
    pseudonyms = KeyedHashAlignment(DEMO_SECRET).pseudonymize(ids)
    by_pseudonym = dict(zip(map(bytes, pseudonyms), range(len(ids)), strict=True))
    numeric = dataset.features.drop(columns="id").select_dtypes("number")
    found = []
    replies = read_message_log(log_dir)
    assert {r["message_type"] for r in replies} == {"query.pseudonyms", "train.embed"}
    for reply in replies:
        blob = b"".join(a.tobytes() for a in reply["arrays"].values())
        blob += str(reply["records"]).encode()
        found += [i for i in ids[:200] if i.encode() in blob]
    sent_pseudonyms = [r["arrays"]["pseudonyms.pseudonyms"] for r in replies
                       if r["message_type"] == "query.pseudonyms"]
    aligned = np.sort(np.intersect1d(*[
        p.view("V32").ravel() for p in sent_pseudonyms[:2]]))
    for other in sent_pseudonyms[2:]:
        aligned = np.intersect1d(aligned, other.view("V32").ravel())
    rows = [by_pseudonym[bytes(k)] for k in aligned]
    for reply in replies:
        if reply["message_type"] == "train.embed":
            latents = reply["arrays"]["latents.latents"]
            found += _affine_copies(latents, numeric.iloc[rows])
    return found


def test_peer_messages_hold_no_raw_value_and_no_raw_id(run_app, tmp_path):
    # Digits: 21-22 pixel columns per peer. (A peer holding a single numeric
    # column, like Titanic's 'age' peer, sends a monotone function of it
    # whatever the encoder; this check flags that too.)
    dataset = load_dataset("digits")
    common = {"dataset": "digits", "model": "logistic", "latent-dim": 8}
    log_dir = tmp_path / "log-ae"
    run = run_app(3, **common, **{"message-log-dir": str(log_dir)})
    assert run.returncode == 0, run.output[-3000:]
    assert _leaks(log_dir, dataset, 3) == []
    # The same check catches a leak: the raw-column baseline sends the
    # standardized columns themselves.
    leak_dir = tmp_path / "log-raw"
    leaking = run_app(3, **common, encoder="none", **{"message-log-dir": str(leak_dir)})
    assert leaking.returncode == 0, leaking.output[-3000:]
    assert "pixel_4_4" in _leaks(leak_dir, dataset, 3)


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
    assert not (run.report_path.parent / "report.png").exists()
    return report


def test_user_files_run(run_app, peer_files):
    paths, labels = peer_files
    run = _run_files(run_app, paths, labels)
    assert run.returncode == 0, run.output[-3000:]
    assert run.report["held_out_metrics"]["accuracy"] > 0.7


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


