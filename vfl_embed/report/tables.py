"""Markdown tables of runs: downstream metrics, peers, and the paper's scenarios."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..server.result import VerticalResult
from .escape import markdown_cell

__all__ = ["markdown", "metrics_table", "peer_table", "table_rows"]

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
        lines.append(f"| {markdown_cell(peer)} | {result.peer_rows.get(peer, 0)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_rows(rows: Sequence[Mapping]) -> list[dict]:
    """Return the rows of the results table: one per run, with the change versus S0.

    ``vs_s0`` is None where the dataset has no S0 run; ``reconstruction_mae``
    and ``within_5pct`` are None for S0, which sends raw columns.
    """
    base = {r["dataset"]: r["value"] for r in rows if r["scenario"] == "S0"}
    table = []
    for r in rows:
        raw = r["scenario"] == "S0"
        table.append({
            "dataset": r["dataset"], "scenario": r["scenario"], "title": r["title"],
            "peers": r["peers"], "metric": r["metric"], "value": r["value"],
            "vs_s0": r["value"] - base[r["dataset"]] if r["dataset"] in base else None,
            "reconstruction_mae": None if raw else r["reconstruction_mae"],
            "within_5pct": None if raw else r["within_5pct"],
            "seconds": r["seconds"],
        })
    return table


def markdown(rows: Sequence[Mapping]) -> str:
    """Return the Markdown table of scenario runs (as in docs/scenarios.md)."""
    lines = ["| dataset | scenario | peers | held-out metric | vs S0 | "
             "reconstruction MAE | within 5 % | flwr run (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in table_rows(rows):
        delta = "-" if r["vs_s0"] is None else f"{r['vs_s0']:+.4f}"
        mae = "-" if r["reconstruction_mae"] is None else f"{r['reconstruction_mae']:.3f}"
        within = "-" if r["within_5pct"] is None else f"{100 * r['within_5pct']:.1f} %"
        lines.append(
            f"| {r['dataset']} | {r['scenario']} {r['title']} | {r['peers']} | "
            f"{r['metric']} {r['value']:.4f} | {delta} | {mae} | {within} | "
            f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


