"""Smoke runs of the benchmark scripts, so they cannot rot (figures: README)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vfl_embed.synthetic import SyntheticVerticalTable

pytestmark = pytest.mark.slow
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, out: Path) -> None:
    """Run ``script`` on a 2x1500x6 synthetic table with small settings."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--shape", "2x1500x6",
         "--config", "epochs=20", "--config", "latent-dim=4", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_scale_benchmark_reports_a_real_run(tmp_path):
    run_benchmark("scale.py", tmp_path)
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


def test_federation_overhead_benchmark_runs_the_same_pipeline_both_ways(tmp_path):
    run_benchmark("federation_overhead.py", tmp_path)
    result = json.loads((tmp_path / "federation_overhead.json").read_text())
    # Same data, models and seed: the in-process run must score exactly alike.
    assert result["same_metrics"] is True
    flower, in_process = result["runs"]["flower"][0], result["runs"]["in_process"][0]
    assert flower["metrics"]["r2"] == in_process["metrics"]["r2"] > 0.1
    assert result["ratio"] == result["flower_seconds"] / result["in_process_seconds"] > 0
    assert "Ratio (Flower / in process)" in (tmp_path / "federation_overhead.md").read_text()
