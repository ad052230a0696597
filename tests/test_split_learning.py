"""The split-learning baseline (benchmarks/split_learning) and its comparison with
one-shot latents (benchmarks/split_vs_oneshot.py), through the real flwr stack.

One run of the comparison script on digits (2 peers) serves both tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vfl_embed.data.datasets import load_dataset, vertical_split
from vfl_embed.wire.alignment import KeyedHashAlignment, intersect, locate

pytestmark = pytest.mark.slow
DEMO_SECRET = "vfl-embed-demo-secret"
PEERS, EPOCHS, BATCH, CUT, LATENT = 2, 2, 64, 8, 8


@pytest.fixture(scope="module")
def comparison(run_benchmark, tmp_path_factory) -> dict:
    """The result of ``split_vs_oneshot.py`` on digits with small settings."""
    out = tmp_path_factory.mktemp("split-vs-oneshot")
    # A tolerance of 1 accuracy point is met by any first epoch.
    run_benchmark("split_vs_oneshot.py", out, "--dataset", "digits", "--peers", str(PEERS),
                  "--split-config", f"epochs={EPOCHS}", f"batch-size={BATCH}",
                  f"cut-dim={CUT}", "learning-rate=0.005",
                  "--oneshot-config", "epochs=20", f"latent-dim={LATENT}", "latent-bits=16",
                  "--tolerance", "1.0")
    result = json.loads((out / "split_vs_oneshot-digits.json").read_text())
    result["markdown"] = (out / "split_vs_oneshot-digits.md").read_text()
    return result


def test_split_learning_learns_and_counts_its_traffic(comparison):
    report = json.loads(Path(comparison["split"]["report"]).read_text())
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
    # mini-batch plus a validation forward, and the held-out forward. The
    # held-out curve's forwards are counted apart, out of the totals.
    fit, val, test = entities["fit"], entities["validation"], entities["held_out"]
    steps = math.ceil(fit / BATCH)
    assert report["steps_per_epoch"] == steps and report["epochs_run"] == EPOCHS
    traffic = report["traffic"]
    curve = traffic.pop("held-out curve")
    assert curve["rounds"] == EPOCHS and curve["payload_up"] == PEERS * EPOCHS * test * CUT * 4
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

    # The curve: training cost so far after each epoch, and the held-out
    # metrics of that epoch's weights (the best epoch's are the final ones).
    history = report["history"]
    assert [point["rounds"] for point in history] == [
        2 + (epoch + 1) * (2 * steps + 1) for epoch in range(EPOCHS)]
    assert 0 < history[0]["elapsed"] < history[1]["elapsed"] < report["seconds"]["total"]
    assert 0 < history[0]["payload_up"] < history[1]["payload_up"] < totals["payload_up"]
    assert history[report["best_epoch"]]["held_out_metrics"] == report["held_out_metrics"]
    assert report["seconds"]["curve"] > 0


def test_comparison_finds_split_learnings_cost_at_equal_metric(comparison):
    split, oneshot, equal = (comparison[k] for k in ("split", "oneshot", "equal_metric"))
    assert comparison["engine"] == "simulation"
    assert split["entities"]["held_out"] == oneshot["entities"]["held_out"] > 0
    assert oneshot["rounds"] <= 3 < split["rounds"]
    # One-shot's latents went up as float16: 2 bytes per value, once.
    latent_bytes = oneshot["details"]["by_message_type"]["train.embed"]["up"]
    assert latent_bytes == PEERS * oneshot["entities"]["aligned"] * LATENT * 2
    assert oneshot["metrics"]["accuracy"] > 0.8
    first = split["details"]["curve"][0]
    assert equal["epoch"] == 1 and equal["metric"] == "accuracy"
    assert equal["split_bytes"] == first["payload_up"] + first["payload_down"]
    assert equal["split_bytes"] < split["bytes_up"] + split["bytes_down"]
    assert 0 < equal["split_seconds"] < split["wall_seconds"]
    assert equal["time_ratio"] == equal["split_seconds"] / oneshot["wall_seconds"]
    assert equal["split_better_by"] == (split["metrics"]["accuracy"]
                                        - oneshot["metrics"]["accuracy"])
    assert "**At equal metric**" in comparison["markdown"]
