"""Predict mode through the real strategy, ClientApp and Keras encoders, in process.

A training run saves each peer's encoder and the server's model; a later
prediction run scores entities with them. The same path through a real
Flower simulation is ``test_e2e.py::test_predict_run_reproduces_training``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import set_server_identity
from in_process_grid import InProcessGrid

from vfl_embed.client_app import app as client_app
from vfl_embed.data.datasets import load_dataset
from vfl_embed.errors import PeerReplyError, VerticalRunError
from vfl_embed.report.charts import render_report
from vfl_embed.report.files import write_prediction_report, write_report
from vfl_embed.report.folders import results_directory, training_run_directory
from vfl_embed.report.training_run import load_training_run
from vfl_embed.server.builders import prediction_from_config, strategy_from_config
from vfl_embed.server.prediction import impute_missing
from vfl_embed.wire.protocol import parse_run_id

pytestmark = pytest.mark.usefixtures("server_identity")
RUN_ID = 7  # the run id InProcessGrid gives every node's Context


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-peer digits training run, its config and its held-out predictions."""
    with pytest.MonkeyPatch.context() as patch:
        set_server_identity(patch)
        yield train(tmp_path_factory.mktemp("predict"))


def train(base):
    config = {
        "dataset": "digits", "model": "xgboost", "latent-dim": 6, "epochs": 4,
        "patience": 2, "peer-coverage": 0.9, "alignment-secret": "secret-of-the-peers",
        "seed": 42,
        "test-fraction": 0.2, "results-dir": str(base / "results"), "audit": False,
    }
    result = strategy_from_config(config).start(
        InProcessGrid(client_app, config, 3), timeout=5)
    directory = results_directory(config, RUN_ID)
    write_report(result, directory, config, RUN_ID)
    held_out = pd.read_csv(directory / "predictions.csv", dtype={"id": str})
    return config, base, held_out


def predict(config: dict, **overrides):
    config = config | {"mode": "predict", "train-run": str(RUN_ID)} | overrides
    train_run = parse_run_id(config["train-run"], "run config 'train-run'")
    trained = load_training_run(training_run_directory(config, train_run), train_run)
    prediction = prediction_from_config(config, trained)
    return prediction, prediction.start(InProcessGrid(client_app, config, 3), timeout=5)


def ids_file(directory, ids, name="ids.csv") -> str:
    path = directory / name
    pd.DataFrame({"id": ids}).to_csv(path, index=False)
    return str(path)


def test_peers_save_their_state_under_their_own_directory(trained):
    config, base, _ = trained
    for peer in ("peer-0", "peer-1", "peer-2"):
        state = base / "results" / "peer-state" / peer / f"run-{RUN_ID}"
        assert sorted(p.name for p in state.iterdir()) == ["autoencoder.keras",
                                                           "state.json"]
    server = load_training_run(training_run_directory(config, RUN_ID), RUN_ID)
    assert server.blocks == [("peer-0", 6), ("peer-1", 6), ("peer-2", 6)]
    assert server.task == "classification" and len(server.classes) == 10
    assert not list(server.directory.rglob("*.keras"))  # no peer encoder on the server


def test_prediction_equals_training_evaluation_bit_for_bit(trained, tmp_path):
    config, _, held_out = trained
    # Reverse the order: the predictions must follow the IDs, not the rows.
    ids = held_out["id"].to_numpy()[::-1]
    prediction, result = predict(config, **{"predict-ids": ids_file(tmp_path, ids)})
    assert result.status == "completed" and result.scored == len(ids)
    assert list(result.ids) == list(ids)
    out = write_prediction_report(result, tmp_path / "out", config, 8)
    predicted = pd.read_csv(out["predictions"], dtype={"id": str})
    expected = held_out.set_index("id").loc[ids]
    assert (predicted["predicted"].astype(str).to_numpy()
            == expected["predicted"].astype(str).to_numpy()).all()
    probabilities = [c for c in predicted.columns if c.startswith("proba_")]
    assert len(probabilities) == 10
    np.testing.assert_array_equal(predicted[probabilities].to_numpy(),
                                  expected[probabilities].to_numpy())
    assert (predicted["imputed_peers"].isna()).all()
    # `vfl-embed report` renders a prediction run too, saying what it lacks.
    charts = render_report(out["json"])
    assert "holds no held-out labels (a prediction run)" in charts["markdown"].read_text()
    assert json.loads(out["json"].read_text())["entities"] == {
        "requested": len(ids), "scored": len(ids), "imputed": 0, "not_scored": 0,
        "missing_by_peer": {"peer-0": 0, "peer-1": 0, "peer-2": 0}}


def test_missing_entities_are_dropped_or_imputed_and_counted(trained, tmp_path):
    config, _, held_out = trained
    everyone = load_dataset("digits").labels["id"].astype(str).to_numpy()
    ids_path = ids_file(tmp_path, everyone)
    _, dropped = predict(config, **{"predict-ids": ids_path})
    _, imputed = predict(config, **{"predict-ids": ids_path, "missing-policy": "impute"})
    # Each peer holds a random 90 %: about 0.9^3 of the entities are everywhere.
    assert abs(dropped.scored / len(everyone) - 0.9**3) < 0.05
    assert set(dropped.missing_rows) == {"peer-0", "peer-1", "peer-2"}
    assert all(abs(n / len(everyone) - 0.1) < 0.03 for n in dropped.missing_rows.values())
    lacking = sum(1 for names in imputed.imputed if names)
    assert imputed.scored == dropped.scored + lacking
    # Only entities no peer holds (about 0.1^3 of them) are lost.
    assert len(everyone) - imputed.scored < 0.005 * len(everyone)
    # Imputed latents still carry signal: far above chance (0.1) on 10 digits.
    digits = load_dataset("digits")
    truth = digits.labels.set_index("id")[digits.target].astype(str)
    rows = [k for k, names in enumerate(imputed.imputed) if names]
    named = np.asarray(imputed.classes)[imputed.predictions[rows].astype(int)]
    accuracy = float((named == truth.loc[imputed.ids[rows]].to_numpy()).mean())
    print(f"accuracy on {len(rows)} entities with an imputed peer block: {accuracy:.3f}")
    assert accuracy > 0.5
    # Complete entities get the same prediction under either policy.
    complete = dict(zip(dropped.ids, dropped.predictions, strict=True))
    both = [(complete[i], p) for i, p, names in zip(imputed.ids, imputed.predictions,
                                                    imputed.imputed, strict=True)
            if not names]
    assert len(both) == dropped.scored and all(a == b for a, b in both)


def test_imputation_is_the_gaussian_conditional_mean():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5000, 1))
    x = np.hstack([z, 2 * z + 0.01 * rng.normal(size=(5000, 1)), rng.normal(size=(5000, 1))])
    mean, cov = x.mean(axis=0), np.cov(x, rowvar=False)
    rows = np.array([[1.0, np.nan, 0.5], [np.nan, np.nan, np.nan]], dtype=np.float32)
    filled = impute_missing(rows, mean, cov)
    assert abs(filled[0, 1] - 2.0) < 0.05 and filled[0, 2] == 0.5
    np.testing.assert_allclose(filled[1], mean, atol=1e-6)


def test_unknown_training_run_stops_with_a_clear_error(trained):
    config, base, _ = trained
    with pytest.raises(VerticalRunError, match="no training run 123 under"):
        predict(config, **{"train-run": "123"})
    with pytest.raises(Exception, match="is not a Flower run ID"):
        predict(config, **{"train-run": "../etc"})


def test_a_peer_without_the_saved_encoder_is_named(trained, tmp_path):
    config, base, held_out = trained
    state = base / "results" / "peer-state" / "peer-1" / f"run-{RUN_ID}"
    moved = state.rename(tmp_path / "moved")
    try:
        with pytest.raises(PeerReplyError, match="peer-1: no saved encoder of training "
                                                 "run 7"):
            predict(config, **{"predict-ids": ids_file(tmp_path, held_out["id"][:20])})
    finally:
        moved.rename(state)


def test_ids_no_peer_holds_stop_the_run(trained, tmp_path):
    config, _, _ = trained
    with pytest.raises(VerticalRunError, match="none of the 2 requested entities"):
        predict(config, **{"predict-ids": ids_file(tmp_path, ["nope", "nada"])})
