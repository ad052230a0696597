"""Load what a finished training run left in its results folder, for prediction.

The folder is data, not code: a tampered ``report.json`` must not choose
which file is loaded, nor make anything run. Only the model file names that
:meth:`~vfl_embed.server.downstream.DownstreamModel.save` writes are
accepted, inside the run's own folder, and no model format that can execute
code (pickle) is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import VerticalRunError
from ..server.downstream import MODEL_FILES, DownstreamModel
from ..server.prediction import MOMENTS_FILE, TrainedFederation

__all__ = ["load_training_run"]


def load_training_run(directory: str | Path, run_id: int) -> TrainedFederation:
    """Load training run ``run_id`` from its results ``directory``.

    Raises :class:`~vfl_embed.errors.VerticalRunError` naming the folder if
    it is not a completed training run, or if its report names a model file
    that is not one ``save`` writes.
    """
    directory = Path(directory).resolve()
    try:
        report = json.loads((directory / "report.json").read_text())
    except (OSError, ValueError) as err:
        raise VerticalRunError(f"run {run_id}: '{directory}/report.json' is unreadable "
                               f"({type(err).__name__})") from err
    if report.get("mode", "train") != "train" or report.get("status") != "completed":
        raise VerticalRunError(f"run {run_id} in '{directory}' is not a completed "
                               "training run")
    name = report.get("model_file")
    if name not in MODEL_FILES:
        raise VerticalRunError(
            f"run {run_id}: report.json names model file {str(name)[:40]!r}; only "
            f"{', '.join(sorted(MODEL_FILES))} in the run folder are loaded")
    path = directory / name
    if path.is_symlink() or not path.is_file():
        raise VerticalRunError(f"run {run_id}: '{path}' is not a regular file")
    with np.load(directory / MOMENTS_FILE, allow_pickle=False) as moments:
        mean, cov = moments["mean"], moments["cov"]
    return TrainedFederation(
        run_id, directory, report["task"], [str(c) for c in report["classes"]],
        DownstreamModel.load(path, report["task"]),
        [(str(p), int(w)) for p, w in report["latent_blocks"]], mean, cov)
