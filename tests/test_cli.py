"""The ``vfl-embed`` command line: options, errors, help, and two real runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST
from test_charts import in_process_report
from typer.testing import CliRunner

from vfl_embed.run.api import load_report
from vfl_embed.run.cli import app, parse_config

VFL_EMBED = shutil.which("vfl-embed", path=str(Path(sys.executable).parent))
# The FAST settings of the end-to-end tests, as --config pairs.
FAST_CONFIG = [f"{key}={value}" for key, value in FAST.items()] + ["latent-dim=8"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


# ------------------------------------------------------------------- options
def test_config_values_are_toml_literals_or_bare_words():
    assert parse_config([
        "latent-dim=8", "learning-rate=1e-4", "supervised=true", 'target="Sale Price"',
        "dataset=titanic", "hidden-sizes=128,64", "alignment-secret='a secret with spaces'",
    ]) == {"latent-dim": 8, "learning-rate": 1e-4, "supervised": True,
           "target": "Sale Price", "dataset": "titanic", "hidden-sizes": "128,64",
           "alignment-secret": "a secret with spaces"}


def test_several_pairs_in_one_config_and_the_last_wins():
    assert parse_config(['epochs=5 hidden-sizes="64,32"', "epochs=7"]) == {
        "epochs": 7, "hidden-sizes": "64,32"}


@pytest.mark.parametrize("item", ["latent-dim", "latent-dim=", "=8", 'target="abc',
                                  "epochs=5 x", "a=[1, 2]"])
def test_bad_config_syntax_is_refused(item):
    with pytest.raises(ValueError, match="--config"):
        parse_config([item])


@pytest.mark.parametrize(("args", "message"), [
    (["simulate", "--dataset", "mnist"],
     "Error: unknown dataset 'mnist'; choose from ames, digits, titanic"),
    (["simulate", "--scenario", "S7"],
     "Error: unknown scenario 'S7'; choose from S0, S1, S2, S3, S4"),
    (["simulate", "-c", "latent-dim"],
     "Error: --config 'latent-dim' is not key=value (e.g. latent-dim=8 or "
     'target="Sale_Price")'),
    (["simulate", "-c", "latnt-dim=8"],
     "Error: unknown run-config key 'latnt-dim'; did you mean 'latent-dim'?"),
    (["paper", "-d", "ames", "-d", "iris"], "Error: unknown dataset 'iris'"),
    (["paper", "-s", "S1", "-c", "epochs=[1]"], "Error: --config epochs=[1]: a value is"),
    (["report", "/no/such/run"], "Error: /no/such/run does not exist"),
    (["predict", "/no/such/run"], "Error: no report.json at /no/such/run"),
    (["predict", "/tmp", "--missing-policy", "guess"],
     "Error: --missing-policy must be drop or impute, got 'guess'"),
])
def test_bad_options_end_with_one_error_line(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --------------------------------------------------------------------- help
@pytest.mark.parametrize(("command", "example"), [
    ("simulate", "vfl-embed simulate --dataset digits --peers 5 --model logistic"),
    ("paper", "vfl-embed paper --dataset ames --scenario S0 --scenario S2"),
    ("report", "vfl-embed report results/scenarios/scenarios.json --out /tmp/charts"),
    ("predict", "vfl-embed predict RUN_DIR --ids new.csv --missing-policy impute"),
])
def test_help_shows_examples(command, example):
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and example in result.stdout


def test_installed_script_lists_its_commands():
    result = subprocess.run([VFL_EMBED, "-h"], capture_output=True, text=True, check=True)
    for command in ("simulate", "predict", "paper", "report"):
        assert re.search(rf"│ {command} +\w", result.stdout)
    version = subprocess.run([VFL_EMBED, "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("vfl-embed 0.1.0 (Flower 1.42")


# ------------------------------------------------------------------- report
def test_report_renders_an_in_process_run(tmp_path):
    run_dir = in_process_report(tmp_path / "run")
    result = invoke("report", str(run_dir / "report.json"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    printed = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert sorted(printed) == ["markdown", "peers", "predictions", "privacy", "projection"]
    assert all(Path(p).parent == tmp_path / "out" and Path(p).exists()
               for p in printed.values())


# ---------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def simulate_run(tmp_path_factory, federation):
    """``vfl-embed simulate`` through the installed script: digits, 5 peers."""
    # The CLI starts its own SuperLink on the same fixed ports: stop the
    # session's (it restarts on its next run).
    federation.close()
    results = tmp_path_factory.mktemp("simulate")
    args = [VFL_EMBED, "simulate", "--dataset", "digits", "--peers", "5",
            "--model", "logistic", "--results-dir", str(results)]
    for pair in FAST_CONFIG:
        args += ["--config", pair]
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, federation):
    """``vfl-embed paper`` on digits, S2 only (so the table has no S0 to compare with)."""
    federation.close()
    out = tmp_path_factory.mktemp("paper")
    args = ["paper", "--dataset", "digits", "--scenario", "S2", "--results-dir", str(out)]
    for pair in FAST_CONFIG:
        args += ["-c", pair]
    return invoke(*args), out


@pytest.mark.slow
def test_simulate_prints_held_out_metrics_and_the_report(simulate_run):
    assert simulate_run.returncode == 0, simulate_run.stderr[-3000:]
    path = Path(re.search(r"^report: (\S+report\.json)$", simulate_run.stdout, re.M)[1])
    report = load_report(path)
    assert sorted(report.raw["peers"]) == [f"peer-{i}" for i in range(5)]
    assert report.metrics["accuracy"] > 0.85
    assert set(report.metrics) == {"accuracy", "macro-f1", "roc-auc"}
    # Each peer holds 95 % of 1,797 entities; all five share about 0.95^5.
    assert abs(report.raw["entities"]["aligned"] - 1797 * 0.95**5) < 0.05 * 1797
    assert (path.parent / "downstream_model.logistic.json").exists()
    assert report.raw["run_config"]["latent-dim"] == 8
    assert re.search(rf"│ accuracy │ +{report.metrics['accuracy']:.4f} │", simulate_run.stdout)
    assert "classification with logistic on 5 peers" in simulate_run.stdout
    assert "· done" in simulate_run.stderr  # the progress line, at its end


@pytest.mark.slow
def test_report_renders_the_simulated_run(simulate_run, tmp_path):
    path = re.search(r"^report: (\S+)$", simulate_run.stdout, re.M)[1]
    result = invoke("report", str(Path(path).parent), "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert {"predictions", "peers", "projection", "markdown"} <= {
        line.split(":")[0] for line in result.stdout.splitlines()}
    assert "5 peers" in (tmp_path / "charts.md").read_text()


@pytest.fixture(scope="module")
def predict_run(simulate_run, tmp_path_factory):
    """``vfl-embed predict`` for the simulated run's held-out entities, reversed."""
    run_dir = Path(re.search(r"^report: (\S+)$", simulate_run.stdout, re.M)[1]).parent
    held_out = pd.read_csv(run_dir / "predictions.csv", dtype=str)
    ids = tmp_path_factory.mktemp("ids") / "ids.csv"
    held_out[["id"]].iloc[::-1].to_csv(ids, index=False)
    return invoke("predict", str(run_dir), "--ids", str(ids)), run_dir, held_out


@pytest.mark.slow
def test_predict_reproduces_the_training_runs_predictions(predict_run):
    """Acceptance: train through Flower, then predict the held-out entities in a
    separate run: the same predictions, bit for bit."""
    result, run_dir, held_out = predict_run
    assert result.exit_code == 0, result.output
    run_id = load_report(run_dir).run_id
    for peer in range(5):  # every peer kept its own encoder of the training run
        assert (run_dir.parent / "peer-state" / f"peer-{peer}" / f"run-{run_id}"
                / "autoencoder.keras").is_file()
    assert not list(run_dir.glob("*.keras"))  # and the server none of them
    path = Path(re.search(r"^predictions: (\S+)$", result.stdout, re.M)[1])
    assert result.stdout.startswith(f"scored {len(held_out)} of {len(held_out)} entities "
                                    f"with the model of run {run_id} (0 with imputed")
    report = load_report(path.parent)
    assert report.mode == "predict" and report.raw["train_run"] == str(run_id)
    predicted = pd.read_csv(path, dtype=str)
    assert list(predicted["id"]) == list(held_out["id"][::-1])
    columns = ["id", "predicted", *[c for c in held_out if c.startswith("proba_")]]
    assert len(columns) == 12  # ten digit classes
    expected = held_out.set_index("id").loc[predicted["id"]].reset_index()
    # Bit for bit: both files print each float32 as its shortest exact text.
    pd.testing.assert_frame_equal(predicted[columns], expected[columns])


@pytest.mark.slow
def test_paper_writes_the_table_without_s0(paper_run):
    result, out = paper_run
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "scenarios.json").read_text())
    assert [(r["dataset"], r["scenario"], r["peers"]) for r in rows] == [("digits", "S2", 3)]
    assert rows[0]["value"] > 0.85 and rows[0]["held_out"]["accuracy"] == rows[0]["value"]
    assert Path(rows[0]["report"]).is_relative_to(out / "runs" / "digits-S2")
    line = (out / "scenarios.md").read_text().splitlines()[2]
    assert line.startswith(f"| digits | S2 individual autoencoders | 3 | accuracy "
                           f"{rows[0]['value']:.4f} | - | ")
    assert line in result.stdout.splitlines()  # the same table, printed
    assert (out / "scenarios.png").stat().st_size > 5_000
    assert f"json: {out / 'scenarios.json'}" in result.stdout


@pytest.mark.slow
def test_report_renders_the_paper_table(paper_run, tmp_path):
    _, out = paper_run
    result = invoke("report", str(out / "scenarios.json"), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"chart: {tmp_path / 'scenarios.png'}",
                                          f"markdown: {tmp_path / 'scenarios.md'}"]
    assert (tmp_path / "scenarios.md").read_text().startswith(
        (out / "scenarios.md").read_text())
