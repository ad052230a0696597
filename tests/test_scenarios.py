"""The paper's scenarios: run configs, the results table, failed runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_charts import in_process_report

from vfl_embed.deploy.flwr_commands import LocalRun
from vfl_embed.errors import RunFailedError
from vfl_embed.report.tables import markdown, table_rows
from vfl_embed.run.scenarios import SCENARIOS, paper_config, run_config, scenario_row


def test_each_scenario_is_a_run_config_and_a_number_of_supernodes():
    assert run_config("ames", "S0") == {"dataset": "ames", "encoder": "none"}
    assert run_config("ames", "S2") == {"dataset": "ames"}  # the app's defaults
    assert run_config("digits", "S4", {"epochs": 5}) == {
        "dataset": "digits", "supervised": True, "epochs": 5}
    assert [SCENARIOS[s].supernodes(5) for s in SCENARIOS] == [5, 1, 5, 1, 5]


def test_paper_runs_share_entities_and_keep_their_reports_apart(tmp_path):
    config = paper_config("digits", "S3", tmp_path, {"epochs": 15, "results-dir": "x"})
    assert config == {"dataset": "digits", "supervised": True, "model": "logistic",
                      "peer-coverage": 1.0, "epochs": 15,
                      "results-dir": str(tmp_path / "runs" / "digits-S3")}
    # A user's setting wins over the paper's.
    assert paper_config("ames", "S0", tmp_path, {"model": "mlp"})["model"] == "mlp"


@pytest.fixture(scope="module")
def s0_row(tmp_path_factory) -> dict:
    """The row of a real S0 run (raw columns, 3 peers, every entity) on digits."""
    run_dir = in_process_report(tmp_path_factory.mktemp("s0"))
    report = json.loads((run_dir / "report.json").read_text())
    return scenario_row("digits", "S0", report, 3.0, 3, run_dir / "report.json")


def test_row_of_a_real_run(s0_row):
    report = json.loads(Path(s0_row["report"]).read_text())
    assert s0_row["value"] == report["held_out_metrics"]["accuracy"] > 0.9
    # Raw columns are their own reconstruction.
    assert (s0_row["reconstruction_mae"], s0_row["within_5pct"]) == (0.0, 1.0)


def test_table_compares_with_s0_and_hides_its_reconstruction(s0_row):
    line = markdown([s0_row]).splitlines()[2]
    assert line == (f"| digits | S0 raw columns | 3 | accuracy {s0_row['value']:.4f} | "
                    "+0.0000 | - | - | 3 |")
    assert table_rows([s0_row])[0]["vs_s0"] == 0.0


def test_failed_run_says_why_from_its_partial_report(tmp_path):
    run_dir = in_process_report(tmp_path / "run", **{"min-entities": 5000})
    output = f"INFO :      [report] {run_dir / 'report.json'}\n"
    error = RunFailedError(LocalRun.from_output(0, output, 1.0))
    assert str(error).splitlines()[0] == (
        "the run stopped in the align phase: only 1797 entities are held by every "
        "peer and the label file; the run needs at least min-entities=5000")
    assert error.report_path == run_dir / "report.json"


def test_failed_run_without_report_says_why_from_its_output():
    output = ("Successfully started run 12\n\x1b[91mERROR \x1b[0m:      vfl_embed stopped "
              "before it started: timeout must be positive, got -1.0\n")
    error = RunFailedError(LocalRun.from_output(0, output, 1.0))
    assert str(error).splitlines()[0] == (
        "the run stopped before it started: timeout must be positive, got -1.0")
    assert error.report_path is None
    killed = RunFailedError(LocalRun.from_output(
        -9, "...\nvfl_embed: flwr run killed after 600 s\n", 600.0))
    assert str(killed).splitlines()[0] == "flwr run killed after 600 s"
    bare = RunFailedError(LocalRun.from_output(1, "Traceback ...\n", 1.0))
    assert str(bare).startswith("flwr run exited with code 1 and wrote no report")
