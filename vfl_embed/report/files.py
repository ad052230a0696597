"""Run reports: JSON, Markdown, a PNG chart, predictions and the saved model.

A training run's directory is also what a later prediction run loads (see
:class:`~vfl_embed.server.prediction.TrainedFederation`): ``report.json`` names the
task, classes, model file and latent blocks, beside the model and the
moments of the joined training latents.

Every file is written whole (:func:`~vfl_embed.atomic.write_atomic`),
``report.json`` last, into a folder readable by its owner's group only.
Class names, peer names and error text come from peers and data files: they
are escaped for Markdown and, in ``predictions.csv``, against spreadsheet
formulas (:mod:`~vfl_embed.report.escape`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import FILE_MODE, private_folder, write_atomic
from ..config import RunConfig
from ..privacy.dp import GaussianLatentRelease
from ..privacy.label_dp import label_sentence
from ..privacy.presets import release_verdict
from ..server.prediction import MOMENTS_FILE, PredictionResult
from ..server.result import VerticalResult
from .escape import csv_cell, markdown_cell
from .tables import metrics_table, peer_table

__all__ = ["write_prediction_report", "write_report"]

# The privacy figures shown in report.md (report.json keeps all of them).
PRIVACY_COLUMNS = ("leak_fraction", "attack_r2", "attack_r2_worst", "pca_r2", "raw_r2",
                   "decoder_r2", "attack_within_5pct", "attack_cat_accuracy",
                   "majority_cat_accuracy", "floor_label_r2", "floor_label_r2_worst",
                   "dp_epsilon", "dp_delta", "dp_clipped_share")

def write_report(
    result: VerticalResult,
    directory: str | Path,
    run_config: Mapping[str, object],
    run_id: int = 0,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, the held-out predictions and the model.

    Charts are drawn apart from the run (:func:`~vfl_embed.report.charts.render_report`,
    ``vfl-embed report``), so that the ServerApp never loads matplotlib.

    ``predictions.csv`` holds the held-out entities' labels and predictions
    (keyed by ID when the server holds the IDs). A run that stopped
    (``result.status == "failed"``) gets the JSON and Markdown reports of
    what it finished, and nothing else. Returns the paths written, by kind.
    """
    directory = private_folder(Path(directory).expanduser().resolve())
    paths = {}
    if result.status == "completed":
        paths["model"] = result.model.save(directory)
        paths["moments"] = write_atomic(directory / MOMENTS_FILE, lambda file: np.savez(
            file, mean=result.latent_mean, cov=result.latent_cov), FILE_MODE)
        paths["predictions"] = _write_csv(directory / "predictions.csv",
                                          _held_out_frame(result))
    summary = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": str(run_id),
        "mode": "train",
        "status": result.status,
        "phase": result.phase,
        "error": result.error,
        "task": result.task,
        "model": result.model.kind if result.model else None,
        "held_out_metrics": result.metrics,
        "train_metrics": result.train_metrics,
        "entities": {"aligned": result.n_entities, "train": result.n_train,
                     "held_out": result.n_test,
                     "held_out_unseen_class": result.unseen_class_test_rows},
        "peers": {p: {"rows": result.peer_rows.get(p, 0),
                      "latent_bytes_sent": result.bytes_received.get(p, 0), **m}
                  for p, m in sorted(result.peer_metrics.items())},
        "peer_rows": result.peer_rows,  # every peer that aligned, by its row count
        "dropped_peers": result.dropped_peers,
        "seconds": result.seconds,
        "classes": result.classes,
        "model_file": paths["model"].name if "model" in paths else None,
        "latent_blocks": result.latent_blocks,
        "projection": result.projection,
        "alignment": str(run_config.get("alignment", "keyed-hash")),
        "privacy_preset": str(run_config.get("privacy", "custom")),
        "release_verdict": release_verdict(result.privacy),
        "privacy": result.privacy,
        "differential_privacy": _dp_statement(run_config),
        "label_privacy": result.label_privacy,
        "run_config": RunConfig(run_config).redacted(),
    }
    paths |= _write_summary(directory, summary, _markdown(result, summary))
    return paths


def _markdown(result: VerticalResult, summary: dict) -> str:
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    if result.status == "completed":
        outcome = [
            f"{result.task} with {result.model.kind} on the joined latents of "
            f"{len(result.peer_metrics)} peers; {result.n_entities} aligned entities "
            f"({result.n_train} train, {result.n_test} held out). Time: {timing}.",
            "## Downstream metrics\n\n" + metrics_table(result),
        ]
    else:
        outcome = [f"**Stopped in the {result.phase} phase**: "
                   f"{markdown_cell(result.error)}\n\n"
                   f"{len(result.peer_rows)} peers aligned, {result.n_entities} "
                   f"entities held by all. Time: {timing}."]
    return "\n\n".join([
        "# vfl_embed run report",
        *outcome,
        *[f"**Finished without {markdown_cell(name)}**: {markdown_cell(why)}."
          for name, why in sorted(result.dropped_peers.items())],
        *([f"{result.unseen_class_test_rows} held-out entities have a class no "
           "training entity has and are left out of the evaluation."]
          if result.unseen_class_test_rows else []),
        "## Peers\n\nRepresentation metrics on held-out rows (reconstruction MAE "
        "on the standardized, one-hot encoded columns; share of observations "
        "reconstructed within 5 %).\n\n" + peer_table(result),
        _privacy_markdown(result.privacy, summary),
        f"Model file: `{summary['model_file']}`; held-out predictions: "
        "`predictions.csv`. Predict for new entities with run-config "
        f"`mode=\"predict\" train-run=\"{summary['run_id']}\"`."
        if result.status == "completed" else "",
    ]).rstrip() + "\n"


def _privacy_markdown(privacy: Mapping[str, Mapping[str, float]], summary: dict) -> str:
    """Render the privacy section: preset, verdict, alignment, each peer's audit."""
    dp = summary["differential_privacy"]
    lines = [f"## Privacy\n\nPreset: `{summary['privacy_preset']}`. "
             f"**{summary['release_verdict']}**\n\nAlignment: `{summary['alignment']}`."]
    if privacy:
        keys = [k for k in PRIVACY_COLUMNS if any(k in f for f in privacy.values())]
        lines.append(
            "Reconstruction-attack audit of each peer's released latents, run inside "
            "the peer: the best of ridge, nearest-neighbour and MLP inversions "
            "trained on the leaked share of its rows, scored on the others (mean "
            "R² of the numeric columns), beside the same attack on PCA of the same "
            "width and on the raw columns.\n\n| peer | " + " | ".join(keys) + " |\n|---|"
            + "---:|" * len(keys) + "\n" + "\n".join(
                f"| {markdown_cell(peer)} | "
                + " | ".join(f"{figures.get(k, float('nan')):.4g}" for k in keys) + " |"
                for peer, figures in sorted(privacy.items())))
        lines.append(_floor_sentence(privacy))
    if dp:
        lines.append(
            f"Differential privacy: {dp['mechanism']} {dp['clip_norm']:g}, noise "
            f"multiplier {dp['noise_multiplier']:g} (sigma {dp['sigma']:.4g}); per row "
            f"and peer (epsilon {dp['epsilon']:.4g}, delta {dp['delta']:g}) by "
            f"{dp['accountant']}. Neighbouring relation: {dp['neighbouring_relation']}. "
            "Not covered:\n\n" + "\n".join(f"- {item}" for item in dp["not_covered"]))
    lines += _label_markdown(summary["label_privacy"])
    return "\n\n".join(lines)


def _floor_sentence(privacy: Mapping[str, Mapping[str, float]]) -> str:
    if not any("floor_label_r2" in figures for figures in privacy.values()):
        return ("Label floor: not measured, since no peer trained on labels (it is "
                "measured where the peers receive training labels).")
    return ("Label floor (`floor_label_*`): the same attack on each peer's training "
            "labels alone (with label DP, the noised labels it received). A release "
            "that carries the label cannot go much below it, so an attack near the "
            "floor leaks little beyond what the task needs.")


def _label_markdown(label: Mapping[str, object]) -> list[str]:
    """Say which training labels went to the peers; nothing before the embed phase."""
    sent = label.get("labels_sent")
    if sent in ("none", "clear"):
        note = " (no label differential privacy: `label-dp-epsilon` = 0)" if (
            sent == "clear") else ""
        return [f"Training labels: **{label_sentence(label)}**{note}."]
    if sent != "label-dp":
        return []
    detail = (f"{label['n_classes']} classes, keep probability "
              f"{label['keep_probability']:.4g}" if "n_classes" in label else
              f"range [{label['range'][0]:.6g}, {label['range'][1]:.6g}] from "
              f"{label['range_from']}, scale {label['scale']:.6g}")
    return [f"Training labels: **{label_sentence(label)}** per entity ({detail}); one "
            "noised copy for all peers. Not covered:\n\n"
            + "\n".join(f"- {item}" for item in label["not_covered"])]


def _dp_statement(run_config: Mapping[str, object]) -> dict | None:
    """Describe the guarantee of the run's noised release; None without noise."""
    noise = float(run_config.get("dp-noise-multiplier", 0.0))
    if noise <= 0:
        return None
    return GaussianLatentRelease(float(run_config.get("dp-clip-norm", 1.0)), noise,
                                 float(run_config.get("dp-delta", 1e-5))).statement()


def _held_out_frame(result: VerticalResult) -> pd.DataFrame:
    """Held-out labels and predictions; class codes become class names."""
    frame = pd.DataFrame() if result.test_ids is None else pd.DataFrame(
        {"id": result.test_ids})
    frame["actual"] = _named(result.y_test, result.classes)
    frame["predicted"] = _named(result.y_pred, result.classes)
    return _with_probabilities(frame, result.y_proba, result.classes)


def _named(values: np.ndarray, classes: list[str]) -> np.ndarray:
    """Class codes as class names, safe in a spreadsheet (see :func:`csv_cell`)."""
    if not classes:
        return values
    return np.asarray([csv_cell(c) for c in classes], dtype=object)[values.astype(int)]


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return write_atomic(path, lambda file: frame.to_csv(file, index=False), FILE_MODE)


def _with_probabilities(
    frame: pd.DataFrame, proba: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    if proba.size:
        for k, name in enumerate(classes):
            frame[f"proba_{name}"] = proba[:, k]
    return frame


def write_prediction_report(
    result: PredictionResult,
    directory: str | Path,
    run_config: Mapping[str, object],
    run_id: int = 0,
) -> dict[str, Path]:
    """Write a prediction run's ``predictions.csv``, ``report.json`` and ``report.md``.

    ``predictions.csv`` has one row per scored entity, in request order:
    ``id``, ``predicted`` (a class name for classification), one
    ``proba_<class>`` column per class, and ``imputed_peers`` (the peers
    whose latents were imputed, ``;``-separated).
    """
    directory = private_folder(Path(directory).expanduser().resolve())
    paths = {}
    if result.status == "completed":
        frame = pd.DataFrame({"id": result.ids,
                              "predicted": _named(result.predictions, result.classes)})
        frame = _with_probabilities(frame, result.probabilities, result.classes)
        frame["imputed_peers"] = [csv_cell(names) for names in result.imputed]
        paths["predictions"] = _write_csv(directory / "predictions.csv", frame)
    imputed = sum(1 for names in result.imputed if names)
    summary = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": str(run_id),
        "mode": "predict",
        "train_run": str(result.train_run),
        "status": result.status,
        "phase": result.phase,
        "error": result.error,
        "task": result.task,
        "entities": {"requested": result.requested, "scored": result.scored,
                     "imputed": imputed, "not_scored": result.requested - result.scored,
                     "missing_by_peer": result.missing_rows},
        "peer_rows": result.peer_rows,
        "seconds": result.seconds,
        "classes": result.classes,
        "run_config": RunConfig(run_config).redacted(),
    }
    return paths | _write_summary(directory, summary, _prediction_markdown(summary))


def _write_summary(directory: Path, summary: dict, markdown: str) -> dict[str, Path]:
    """Write ``report.md``, then ``report.json``: a later run looks for the latter."""
    return {
        "markdown": write_atomic(directory / "report.md", markdown, FILE_MODE),
        "json": write_atomic(directory / "report.json",
                             json.dumps(summary, indent=2, default=str), FILE_MODE),
    }


def _prediction_markdown(summary: dict) -> str:
    counts = summary["entities"]
    if summary["status"] == "completed":
        outcome = (f"Scored {counts['scored']} of {counts['requested']} requested "
                   f"entities with the {summary['task']} model of training run "
                   f"{summary['train_run']} ({counts['imputed']} with imputed peer "
                   f"latents, {counts['not_scored']} not scored); see `predictions.csv`.")
    else:
        outcome = (f"**Stopped in the {summary['phase']} phase**: "
                   f"{markdown_cell(summary['error'])}")
    missing = "\n".join(f"| {markdown_cell(peer)} | {n} |" for peer, n in
                        sorted(counts["missing_by_peer"].items()))
    return "\n\n".join([
        "# vfl_embed prediction report", outcome,
        "## Requested entities a peer does not hold\n\n| peer | entities |\n|---|---:|\n"
        + missing,
    ]) + "\n"
