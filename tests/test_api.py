"""The Python API: RunReport on real reports, argument checks, lazy import."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
from test_charts import in_process_report

import vfl_embed
from vfl_embed.run.api import RunReport, load_report, paper, predict, scenario_frame, simulate
from vfl_embed.run.scenarios import scenario_row


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return in_process_report(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    return in_process_report(tmp_path_factory.mktemp("stopped"), **{"min-entities": 5000})


def test_run_report_holds_the_report(digits_run):
    report = load_report(digits_run)
    raw = json.loads((digits_run / "report.json").read_text())
    assert report.path == digits_run
    assert (report.run_id, report.status, report.mode, report.task) == (
        7, "completed", "train", "classification")
    assert report.metrics == raw["held_out_metrics"] and report.metrics["accuracy"] > 0.9
    assert report.train_metrics == raw["train_metrics"]
    assert report.entities["aligned"] == 1797  # peer-coverage 1.0: every digit
    assert report.dropped_peers == {} and report.raw == raw
    assert load_report(digits_run / "report.json") == report


def test_peers_frame_has_one_row_per_peer(digits_run):
    frame = load_report(digits_run).peers_frame()
    assert list(frame.index) == ["peer-0", "peer-1", "peer-2"]
    assert (frame["rows"] == 1797).all()
    assert (frame["reconstruction-mae"] == 0.0).all()  # raw columns
    assert frame["n-columns"].sum() == 64 - 3  # 3 blank pixel columns dropped
    assert (frame["dropped"] == "").all()


def test_to_frame_is_one_row_of_headline_figures(digits_run):
    report = load_report(digits_run)
    row = report.to_frame().iloc[0]
    assert (row["dataset"], row["model"], row["peers"]) == ("digits", "logistic", 3)
    assert row["accuracy"] == report.metrics["accuracy"]
    assert row["entities_held_out"] == report.entities["held_out"]
    assert row["seconds"] == pytest.approx(sum(report.seconds.values()))


def test_reports_without_run_id_or_mode_load(digits_run, tmp_path):
    raw = json.loads((digits_run / "report.json").read_text())
    for key in ("run_id", "mode"):
        del raw[key]
    (tmp_path / "report.json").write_text(json.dumps(raw))
    report = load_report(tmp_path)
    assert (report.run_id, report.mode) == (None, "train")


def test_stopped_run_lists_the_peers_that_aligned(stopped_run):
    report = load_report(stopped_run)
    assert (report.status, report.metrics) == ("failed", {})
    frame = report.peers_frame()
    assert list(frame.index) == ["peer-0", "peer-1", "peer-2"]
    assert list(frame.columns) == ["rows", "dropped"]  # no peer was asked to fit
    assert (frame["rows"] == 1797).all()


def test_predict_needs_a_completed_training_run(stopped_run):
    with pytest.raises(ValueError, match="is not a completed training run"):
        predict(stopped_run)


def test_predictions_of_a_training_run_are_keyed_by_id(digits_run):
    frame = load_report(digits_run).predictions()
    assert list(frame.columns[:3]) == ["id", "actual", "predicted"]
    assert frame["id"].str.startswith("digits-").all()
    assert len(frame) == load_report(digits_run).entities["held_out"]


def test_missing_report_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no report.json at"):
        load_report(tmp_path)


def test_scenario_frame_has_the_table_columns(digits_run):
    raw = json.loads((digits_run / "report.json").read_text())
    frame = scenario_frame([scenario_row("digits", "S0", raw, 3.0, 3)])
    assert list(frame.columns) == ["dataset", "scenario", "title", "peers", "metric",
                                   "value", "vs_s0", "reconstruction_mae", "within_5pct",
                                   "seconds"]
    assert frame.loc[0, "vs_s0"] == 0.0
    assert pd.isna(frame.loc[0, "reconstruction_mae"])  # "-" in the Markdown


@pytest.mark.parametrize(("call", "message"), [
    (lambda: simulate("mnist"), "unknown dataset 'mnist'; choose from ames, digits, titanic"),
    (lambda: simulate(scenario="S5"), "unknown scenario 'S5'; choose from S0, S1"),
    (lambda: simulate(latnt_dim=8), "unknown run-config key 'latnt-dim'; did you mean "
                                    "'latent-dim'?"),
    (lambda: simulate(peers=0), "peers must be at least 1, got 0"),
    (lambda: paper(["ames", "iris"]), "unknown dataset 'iris'"),
    (lambda: paper(scenarios=[]), "no scenario given"),
])
def test_bad_arguments_fail_before_flower_starts(call, message):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        call()
    assert time.perf_counter() - started < 5  # no SuperLink was started


def test_package_exports_the_api_lazily():
    code = ("import sys, vfl_embed; "
            "assert not {'flwr', 'tensorflow', 'pandas', 'matplotlib'} & set(sys.modules); "
            "vfl_embed.RunReport; assert 'flwr' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert vfl_embed.simulate is simulate and vfl_embed.RunReport is RunReport
    with pytest.raises(AttributeError):
        vfl_embed.no_such_name  # noqa: B018
