"""Tests of vfl_embed.testing.in_process: the app without Flower's runtime."""

from __future__ import annotations

import json

import pytest
from conftest import FAST

from vfl_embed.run.local_federation import LocalFederation
from vfl_embed.testing.in_process import InProcessGrid, run_in_process


@pytest.mark.usefixtures("server_identity")
def test_in_process_run_trains_and_reports_like_a_flower_run(tmp_path) -> None:
    config = FAST | {"dataset": "digits", "results-dir": str(tmp_path), "num-peers": 2}
    report = json.loads(run_in_process(config, num_peers=2, run_id=11).read_text())
    assert report["status"] == "completed"
    assert report["run_id"] == "11"
    assert sorted(report["peers"]) == ["peer-0", "peer-1"]
    assert report["held_out_metrics"]["accuracy"] > 0.8
    assert set(report["seconds"]) >= {"align", "fit-embed", "learn"}


def test_grid_gives_nodes_the_simulation_node_config() -> None:
    grid = InProcessGrid(app=None, run_config={"seed": 1}, num_peers=3)
    assert list(grid.get_node_ids()) == [101, 102, 103]
    assert grid.contexts[103].node_config == {"partition-id": 2, "num-partitions": 3}
    assert grid.contexts[101].run_config == {"seed": 1}


def test_cpus_per_peer_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cpus_per_peer must be at least 1, got 0"):
        LocalFederation(cpus_per_peer=0)
