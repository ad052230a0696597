"""Charts of real reports: written by the real strategy and ClientApp, in process."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import set_server_identity
from in_process_grid import InProcessGrid
from matplotlib.figure import Figure

from vfl_embed.client_app import app as client_app
from vfl_embed.errors import VerticalRunError
from vfl_embed.report.charts import plot_predictions, render_report
from vfl_embed.report.files import write_report
from vfl_embed.server.builders import strategy_from_config


def in_process_report(directory: Path, num_peers: int = 3, **config) -> Path:
    """Run the real strategy and ClientApp in this process and write its report.

    The raw-column encoder (S0) needs no TensorFlow fit, so a digits run
    takes about 3 s. A run that stops still writes its partial report.
    Returns the run directory.
    """
    config = {"dataset": "digits", "encoder": "none", "model": "logistic",
              "alignment-secret": "secret-of-the-peers", "seed": 42,
              "peer-coverage": 1.0} | config
    with pytest.MonkeyPatch.context() as patch:
        set_server_identity(patch)
        strategy = strategy_from_config(config)
        with contextlib.suppress(VerticalRunError):  # a stopped run: its result says where
            strategy.start(InProcessGrid(client_app, config, num_peers), timeout=30)
    write_report(strategy.result, directory, config, run_id=7)
    return directory


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return in_process_report(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def ames_run(tmp_path_factory) -> Path:
    return in_process_report(tmp_path_factory.mktemp("ames"), dataset="ames",
                             model="xgboost")


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def test_run_report_renders_every_chart_it_has_data_for(digits_run, tmp_path):
    paths = render_report(digits_run, tmp_path)
    assert sorted(paths) == ["markdown", "peers", "predictions", "privacy", "projection"]
    for kind in ("peers", "predictions", "projection", "privacy"):
        assert paths[kind].parent == tmp_path and paths[kind].stat().st_size > 10_000
    text = paths["markdown"].read_text()
    accuracy = _report(digits_run)["held_out_metrics"]["accuracy"]
    assert f"| accuracy | {accuracy:.4f} |" in text
    assert "![held-out predictions](chart-predictions.png)" in text
    # The peers' audit of their raw-column "latents": the attack, trained on 10 %
    # of the rows, comes close to the ceiling (the identity, R^2 1).
    privacy = _report(digits_run)["privacy"]
    assert sorted(privacy) == ["peer-0", "peer-1", "peer-2"]
    for figures in privacy.values():
        assert 0.85 < figures["attack_r2"] <= figures["raw_r2"] == 1.0
    assert "![privacy audit](chart-privacy.png)" in text


def test_confusion_matrix_holds_the_held_out_predictions(digits_run):
    frame = pd.read_csv(digits_run / "predictions.csv", dtype=str)
    report = _report(digits_run)
    ax = Figure().subplots()
    plot_predictions(ax, frame["actual"], frame["predicted"], "classification",
                     report["classes"], report["held_out_metrics"]["accuracy"])
    confusion = np.asarray(ax.images[0].get_array())
    assert confusion.shape == (10, 10)
    assert confusion.sum() == report["entities"]["held_out"]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(
        report["held_out_metrics"]["accuracy"])
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for d in range(10)]


def test_class_codes_and_class_names_draw_the_same_matrix(digits_run):
    # report.py keeps codes into ``classes``; predictions.csv holds the names.
    frame = pd.read_csv(digits_run / "predictions.csv", dtype=str)
    classes = _report(digits_run)["classes"]
    codes = {name: k for k, name in enumerate(classes)}
    by_name, by_code = Figure().subplots(), Figure().subplots()
    plot_predictions(by_name, frame["actual"], frame["predicted"], "classification", classes)
    plot_predictions(by_code, frame["actual"].map(codes).to_numpy(float),
                     frame["predicted"].map(codes).to_numpy(float), "classification", classes)
    assert np.array_equal(by_name.images[0].get_array(), by_code.images[0].get_array())


def test_regression_scatter_of_held_out_predictions(ames_run, tmp_path):
    report = _report(ames_run)
    r2 = report["held_out_metrics"]["r2"]
    paths = render_report(ames_run / "report.json", tmp_path)
    assert paths["predictions"].stat().st_size > 10_000
    frame = pd.read_csv(ames_run / "predictions.csv")
    ax = Figure().subplots()
    plot_predictions(ax, frame["actual"], frame["predicted"], "regression",
                     metric=r2)
    assert len(ax.collections[0].get_offsets()) == report["entities"]["held_out"]
    assert ax.get_title() == f"Held-out predictions, R² = {r2:.3f}"
    assert "regression with xgboost" in paths["markdown"].read_text()


def test_missing_parts_are_skipped_and_said(digits_run, tmp_path):
    # A report without predictions.csv and projection (as written before
    # those existed) still renders the rest.
    report = _report(digits_run)
    del report["projection"]
    (tmp_path / "report.json").write_text(json.dumps(report))
    paths = render_report(tmp_path)
    assert sorted(paths) == ["markdown", "peers", "privacy"]
    text = paths["markdown"].read_text()
    assert "No `predictions.csv` in the run directory." in text
    assert "No projection in this report." in text
    del report["privacy"]
    (tmp_path / "report.json").write_text(json.dumps(report))
    text = render_report(tmp_path)["markdown"].read_text()
    assert "No privacy audit in this report." in text


def test_privacy_audit_shows_the_headline_figures(digits_run, tmp_path):
    shutil.copytree(digits_run, tmp_path / "run")
    report = _report(tmp_path / "run")
    # Other figures stay in report.json; the chart and table show the headline.
    report["privacy"] = {peer: {"attack_r2": 0.31, "pca_r2": 0.42, "raw_r2": 1.0,
                                "attack_r2_worst": 0.6} for peer in report["peers"]}
    (tmp_path / "run" / "report.json").write_text(json.dumps(report))
    paths = render_report(tmp_path / "run")
    assert paths["privacy"].stat().st_size > 5_000
    text = paths["markdown"].read_text()
    assert "| peer | attack_r2 | pca_r2 | raw_r2 |" in text
    assert "| peer-0 | 0.3100 | 0.4200 | 1.0000 |" in text


def test_stopped_run_renders_what_it_finished(tmp_path):
    run_dir = in_process_report(tmp_path / "run", **{"min-entities": 5000})
    paths = render_report(run_dir)
    assert sorted(paths) == ["markdown"]
    text = paths["markdown"].read_text()
    assert "**Stopped in the align phase**: only 1797 entities" in text
    assert "No per-peer representation metrics in this report." in text


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no report.json or scenarios.json"):
        render_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        render_report(tmp_path)
    (tmp_path / "report.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="neither a run's report.json nor a paper"):
        render_report(tmp_path)
