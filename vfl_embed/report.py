"""Run reports: JSON, Markdown, a PNG chart and the saved downstream model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .strategy import VerticalResult

__all__ = ["metrics_table", "write_report"]

PEER_COLUMNS = ("reconstruction-mae", "within-5pct", "n-columns", "latent-dim",
                "fit-seconds")


def metrics_table(result: VerticalResult) -> str:
    """Markdown table of the held-out (and training) downstream metrics."""
    lines = ["| metric | held-out | train |", "|---|---:|---:|"]
    for name, value in result.metrics.items():
        lines.append(f"| {name} | {value:.4f} | {result.train_metrics[name]:.4f} |")
    return "\n".join(lines)


def peer_table(result: VerticalResult) -> str:
    """Markdown table of each peer's representation metrics."""
    header = "| peer | rows | " + " | ".join(PEER_COLUMNS) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(PEER_COLUMNS)]
    for peer in sorted(result.peer_metrics):
        values = result.peer_metrics[peer]
        cells = [f"{values.get(c, float('nan')):.4g}" for c in PEER_COLUMNS]
        lines.append(f"| {peer} | {result.peer_rows.get(peer, 0)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    result: VerticalResult, directory: str | Path, run_config: Mapping[str, object]
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``report.png`` and the model.

    A run that stopped (``result.status == "failed"``) gets the JSON and
    Markdown reports of what it finished, without chart and model. Returns
    the paths written, by kind.
    """
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"model": result.model.save(directory)} if result.model else {}
    summary = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
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
        "model_file": paths["model"].name if result.model else None,
        "run_config": dict(run_config),
    }
    paths["json"] = directory / "report.json"
    paths["json"].write_text(json.dumps(summary, indent=2, default=str))
    paths["markdown"] = directory / "report.md"
    paths["markdown"].write_text(_markdown(result, summary))
    if result.status == "completed":
        paths["chart"] = directory / "report.png"
        _chart(result, paths["chart"])
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
        outcome = [f"**Stopped in the {result.phase} phase**: {result.error}\n\n"
                   f"{len(result.peer_rows)} peers aligned, {result.n_entities} "
                   f"entities held by all. Time: {timing}."]
    return "\n\n".join([
        "# vfl_embed run report",
        *outcome,
        *[f"**Finished without {name}**: {why}." for name, why in
          sorted(result.dropped_peers.items())],
        *([f"{result.unseen_class_test_rows} held-out entities have a class no "
           "training entity has and are left out of the evaluation."]
          if result.unseen_class_test_rows else []),
        "## Peers\n\nRepresentation metrics on held-out rows (reconstruction MAE "
        "on the standardized, one-hot encoded columns; share of observations "
        "reconstructed within 5 %).\n\n" + peer_table(result),
        f"Model file: `{summary['model_file']}`." if result.model else "",
    ]).rstrip() + "\n"


def _chart(result: VerticalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    peers = sorted(result.peer_metrics)
    shares = [100 * result.peer_metrics[p].get("within-5pct", 0.0) for p in peers]
    left.bar(peers, shares, color="#4c72b0")
    left.set_ylim(0, 100)
    left.set_ylabel("observations within 5 % (held-out rows)")
    left.set_title("Reconstruction quality per peer")
    if result.task == "regression":
        right.scatter(result.y_test, result.y_pred, s=8, alpha=0.6)
        low = float(min(result.y_test.min(), result.y_pred.min()))
        high = float(max(result.y_test.max(), result.y_pred.max()))
        right.plot([low, high], [low, high], color="grey", linewidth=1)
        right.set_xlabel("actual")
        right.set_ylabel("predicted")
        right.set_title(f"Held-out predictions, R² = {result.metrics['r2']:.3f}")
    else:
        k = int(max(result.y_test.max(), result.y_pred.max())) + 1
        confusion = np.zeros((k, k), dtype=int)
        np.add.at(confusion, (result.y_test.astype(int), result.y_pred.astype(int)), 1)
        right.imshow(confusion, cmap="Blues")
        labels = result.classes[:k] if len(result.classes) >= k else list(range(k))
        right.set_xticks(range(k), labels, rotation=45)
        right.set_yticks(range(k), labels)
        right.set_xlabel("predicted")
        right.set_ylabel("actual")
        right.set_title(f"Held-out confusion, accuracy = "
                        f"{result.metrics['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
