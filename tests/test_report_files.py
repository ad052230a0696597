"""Report files are private, whole, and safe to render or open in a spreadsheet."""

from __future__ import annotations

import csv
import json
import os
import stat

import numpy as np
import pytest

from vfl_embed.report.files import write_prediction_report, write_report
from vfl_embed.server.prediction import PredictionResult
from vfl_embed.server.result import VerticalResult

HOSTILE_ERROR = "peer-1: bad column | x\n# owned <img src=http://t.example/a.png>"
HOSTILE_CLASSES = ['=HYPERLINK("http://evil.example","click")', "@SUM(A1)", "-1", "cat"]


@pytest.fixture
def open_umask():
    previous = os.umask(0o002)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _failed_run() -> VerticalResult:
    return VerticalResult(status="failed", phase="embed", error=HOSTILE_ERROR,
                          peer_rows={"peer-0": 10, "peer-1": 10},
                          peer_metrics={"peer-0": {"reconstruction-mae": 0.25}},
                          dropped_peers={"peer-2": "lost\n**forged** | row"})


@pytest.mark.usefixtures("open_umask")
def test_a_failed_run_report_keeps_hostile_error_text_inert(tmp_path):
    paths = write_report(_failed_run(), tmp_path / "results" / "run1", {})
    markdown = paths["markdown"].read_text()
    stopped = [line for line in markdown.splitlines() if "Stopped" in line]
    assert stopped == ["**Stopped in the embed phase**: peer-1: bad column \\| x "
                       "# owned &lt;img src=http://t.example/a.png&gt;"]
    assert "<img" not in markdown and "\n# owned" not in markdown
    assert "**Finished without peer-2**: lost **forged** \\| row." in markdown
    # The JSON keeps the words as they were: it is data, not markup.
    assert json.loads(paths["json"].read_text())["error"] == HOSTILE_ERROR
    assert _mode(tmp_path / "results") == _mode(tmp_path / "results" / "run1") == 0o750
    assert _mode(paths["json"]) == _mode(paths["markdown"]) == 0o640
    assert sorted(p.name for p in (tmp_path / "results" / "run1").iterdir()) == [
        "report.json", "report.md"]


def test_prediction_csv_cells_cannot_run_as_formulas(tmp_path):
    codes = np.array([0, 1, 2, 3])
    result = PredictionResult(
        status="completed", phase="predict", task="classification",
        classes=HOSTILE_CLASSES, requested=4,
        ids=np.array(["a", "b", "c", "d"], dtype=object), predictions=codes,
        probabilities=np.eye(4), imputed=["", "-A1", "peer-1", ""],
        peer_rows={"peer-0": 4})
    paths = write_prediction_report(result, tmp_path / "out", {}, 3)
    with paths["predictions"].open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["predicted"] for r in rows] == [
        "'" + HOSTILE_CLASSES[0], "'@SUM(A1)", "-1", "cat"]
    assert [r["imputed_peers"] for r in rows] == ["", "'-A1", "peer-1", ""]
    assert _mode(paths["predictions"]) == 0o640
