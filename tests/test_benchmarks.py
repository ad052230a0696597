"""Smoke runs of the benchmark scripts, so they cannot rot (figures: docs/performance.md
and docs/privacy.md).

split_vs_oneshot.py in simulation runs in test_split_learning.py.
"""

import json

import numpy as np
import pytest

from vfl_embed.data.synthetic import SyntheticVerticalTable
from vfl_embed.testing.host_network import unavailable_reason

pytestmark = pytest.mark.slow
# A 2x1500x6 synthetic table with small settings.
SMALL_SYNTHETIC = ("--shape", "2x1500x6", "--config", "epochs=20", "--config", "latent-dim=4")


def test_scale_benchmark_reports_a_real_run(run_benchmark, tmp_path):
    run_benchmark("scale.py", tmp_path, *SMALL_SYNTHETIC)
    [row] = json.loads((tmp_path / "scale.json").read_text())["rows"]
    table = SyntheticVerticalTable(2, 1500, columns_per_peer=6)
    ids = [set(table.peer_frame(p)["id"]) for p in range(2)]
    assert row["entities_aligned"] == len(ids[0] & ids[1])
    # Up: 32-byte pseudonyms of every row, then float32 latents of the aligned rows.
    rows = sum(map(len, ids))
    assert row["bytes_up"] >= 32 * rows + 2 * 4 * 4 * row["entities_aligned"]
    assert row["bytes_up"] < 2 * (32 * rows + 2 * 4 * 4 * row["entities_aligned"])
    assert set(row["phase_seconds"]) >= {"align", "fit-embed", "learn"}
    assert row["peak_rss_bytes"] > 100 * 2**20  # a TensorFlow process was seen
    assert np.isfinite(row["metrics"]["r2"]) and row["metrics"]["r2"] > 0.1
    assert "| 2x1500x6 |" in (tmp_path / "scale.md").read_text()


def test_federation_overhead_benchmark_runs_the_same_pipeline_both_ways(run_benchmark,
                                                                        tmp_path):
    run_benchmark("federation_overhead.py", tmp_path, *SMALL_SYNTHETIC)
    result = json.loads((tmp_path / "federation_overhead.json").read_text())
    # Same data, models and seed: the in-process run must score exactly alike.
    assert result["same_metrics"] is True
    flower, in_process = result["runs"]["flower"][0], result["runs"]["in_process"][0]
    assert flower["metrics"]["r2"] == in_process["metrics"]["r2"] > 0.1
    assert result["ratio"] == result["flower_seconds"] / result["in_process_seconds"] > 0
    assert "Ratio (Flower / in process)" in (tmp_path / "federation_overhead.md").read_text()


@pytest.mark.skipif(bool(unavailable_reason()), reason=unavailable_reason())
@pytest.mark.xdist_group("hosts")  # builds hosts in 198.18.0.0/24, as test_deployment.py
def test_split_vs_oneshot_benchmark_runs_on_the_deployment_engine(run_benchmark, tmp_path):
    # One mini-batch per epoch: few rounds, since a SuperNode polls every 3 s.
    run_benchmark("split_vs_oneshot.py", tmp_path, "--engine", "deployment", "--dataset",
                  "digits", "--peers", "2", "--split-config", "epochs=1", "batch-size=2048",
                  "--oneshot-config", "epochs=20", "latent-dim=8")
    result = json.loads((tmp_path / "split_vs_oneshot-digits-deployment.json").read_text())
    split, oneshot = result["split"], result["oneshot"]
    assert result["engine"] == "deployment"
    assert split["entities"]["held_out"] == oneshot["entities"]["held_out"] > 0
    # Each peer ran on a host of its own and sent its own pseudonyms.
    assert sorted(split["details"]["peers"]) == ["peer-0", "peer-1"]
    assert split["details"]["traffic"]["query.pseudonyms"]["payload_up"] == 32 * sum(
        peer["rows"] for peer in split["details"]["peers"].values())
    assert oneshot["metrics"]["accuracy"] > 0.5 and oneshot["rounds"] <= 3
