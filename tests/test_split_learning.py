"""The split-learning baseline (benchmarks/split_learning) through the real flwr stack."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vfl_embed.alignment import KeyedHashAlignment, intersect, locate
from vfl_embed.datasets import load_dataset, vertical_split

pytestmark = pytest.mark.slow
SPLIT_APP = Path(__file__).resolve().parent.parent / "benchmarks" / "split_learning"
DEMO_SECRET = "vfl-embed-demo-secret"
PEERS, EPOCHS, BATCH, CUT = 2, 2, 64, 8


def test_split_learning_learns_and_counts_its_traffic(federation, tmp_path):
    config = {"dataset": "digits", "num-peers": PEERS, "epochs": EPOCHS,
              "batch-size": BATCH, "cut-dim": CUT, "learning-rate": 0.005,
              "results-dir": str(tmp_path)}
    run = federation.run(config, num_peers=PEERS, timeout=300, app_dir=SPLIT_APP)
    assert run.report_path is not None, run.output[-3000:]
    report = run.report
    assert report["status"] == "completed" and report["task"] == "classification"

    # The same entities and held-out split as vfl_embed's simulation of digits.
    dataset = load_dataset("digits")
    keys = KeyedHashAlignment(DEMO_SECRET)
    sets = {f"peer-{i}": keys.pseudonymize(vertical_split(dataset, PEERS, i)["id"])
            for i in range(PEERS)}
    sets["labels"] = keys.pseudonymize(dataset.labels["id"])
    plan = intersect(sets, 0.2, 42)
    entities = report["entities"]
    assert entities["aligned"] == len(plan)
    assert entities["held_out"] == entities["held_out_evaluated"] == plan.is_test.sum()

    # Better than always answering the held-out entities' most frequent class.
    rows = locate(plan.pseudonyms[plan.is_test], sets["labels"])
    majority = np.bincount(dataset.labels["digit"].to_numpy()[rows]).max() / len(rows)
    assert report["held_out_metrics"]["accuracy"] > majority + 0.4

    # Rounds: alignment, setup, per epoch one forward and one backward per
    # mini-batch plus a validation forward, and the held-out forward.
    fit, val, test = entities["fit"], entities["validation"], entities["held_out"]
    steps = math.ceil(fit / BATCH)
    assert report["steps_per_epoch"] == steps and report["epochs_run"] == EPOCHS
    traffic = report["traffic"]
    assert traffic["query.forward"]["rounds"] == EPOCHS * (steps + 1) + 1
    assert traffic["train.backward"]["rounds"] == EPOCHS * steps
    assert report["totals"]["rounds"] == 2 + EPOCHS * (2 * steps + 1) + 1
    for kind in traffic.values():
        assert kind["messages"] == 2 * PEERS * kind["rounds"]
    # Bytes: every fit row goes up once per epoch as CUT float32 activations
    # and comes back as CUT float32 gradients, with its int64 row index.
    rows_forwarded = EPOCHS * (fit + val) + test
    assert traffic["query.forward"]["payload_up"] == PEERS * rows_forwarded * CUT * 4
    assert traffic["query.forward"]["payload_down"] == PEERS * rows_forwarded * 8
    assert traffic["train.backward"]["payload_down"] == PEERS * EPOCHS * fit * (CUT * 4 + 8)
    assert traffic["train.backward"]["payload_up"] == 0
    assert traffic["query.pseudonyms"]["payload_up"] == 32 * sum(
        peer["rows"] for peer in report["peers"].values())
    totals = report["totals"]
    assert totals["wire_up"] > totals["payload_up"] and totals["wire_down"] > totals[
        "payload_down"]
