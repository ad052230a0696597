"""Charts of run reports and scenario tables (Markdown plus PNG files).

Everything is drawn on :class:`matplotlib.figure.Figure` objects and saved
with the Agg canvas, never through ``pyplot``, so drawing neither needs a
display nor changes the backend of a notebook that imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..atomic import FILE_MODE, private_folder, write_atomic
from ..privacy.audit import HEADLINE_KEYS
from .escape import csv_cell, markdown_cell
from .tables import markdown as scenario_table

__all__ = ["frontier_figure", "plot_peer_metric", "plot_predictions", "plot_privacy",
           "plot_projection", "predictions_chart", "render_report", "scenario_figure"]

BLUE, GREY = "#4c72b0", "#999999"
# Report keys of the headline metric of each task (the chart titles).
HEADLINE = {"regression": ("r2", "R²"), "classification": ("accuracy", "accuracy")}
MAX_LEGEND_CLASSES = 20
PEER_METRICS = {"reconstruction-mae": "reconstruction MAE"}


# ------------------------------------------------------------ single panels
def plot_predictions(
    ax: Axes,
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    task: str,
    classes: Sequence[str] = (),
    metric: float | None = None,
) -> None:
    """Draw held-out predictions: actual vs predicted, or a confusion matrix.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    y_true, y_pred : array-like
        Held-out labels and predictions: numbers (regression), class codes
        indexing ``classes``, or the class labels themselves.
    task : str
        ``"regression"`` (scatter with the diagonal) or ``"classification"``
        (confusion matrix, actual classes in rows).
    classes : Sequence[str] (default: ())
        Class names in code order; empty when the labels are their own names.
    metric : float | None (default: None)
        Held-out R² (regression) or accuracy (classification) for the title.
    """
    name = HEADLINE.get(task, ("", "score"))[1]
    score = "" if metric is None else f", {name} = {metric:.3f}"
    if task == "regression":
        actual, predicted = np.asarray(y_true, float), np.asarray(y_pred, float)
        ax.scatter(actual, predicted, s=8, alpha=0.6, color=BLUE)
        low = float(min(actual.min(), predicted.min()))
        high = float(max(actual.max(), predicted.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title(f"Held-out predictions{score}")
        return
    names, true_codes, pred_codes = _class_codes(y_true, y_pred, classes)
    confusion = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(confusion, (true_codes, pred_codes), 1)
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Held-out confusion{score}")


def _class_codes(
    y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, classes: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return tick labels and the codes of both label arrays in one label space."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    numeric = true.dtype.kind in "iuf" and pred.dtype.kind in "iuf"
    if classes and numeric:  # codes into ``classes``, as the strategy keeps them
        return list(classes), true.astype(int), pred.astype(int)
    # Label values themselves: the known class names first, then any other
    # value, numbers in numeric order.
    seen = set(np.concatenate([true, pred]).tolist())
    values = list(classes) + sorted(seen - set(classes), key=_sort_key)
    index = {value: k for k, value in enumerate(values)}
    return ([_tick(v) for v in values], np.array([index[v] for v in true.tolist()]),
            np.array([index[v] for v in pred.tolist()]))


def _sort_key(value: object) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _tick(value: object) -> str:
    """Write a class label as text: whole-number floats (digits' labels) without ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def plot_peer_metric(ax: Axes, peers: Mapping[str, Mapping[str, float]], key: str) -> None:
    """Draw one representation metric per peer as bars.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    peers : Mapping[str, Mapping[str, float]]
        Per peer its metrics, as ``report.json`` ``peers`` holds them.
    key : str
        ``"within-5pct"`` (drawn in %, 0 to 100) or another metric such as
        ``"reconstruction-mae"``.
    """
    names = sorted(peers)
    values = [peers[p].get(key, np.nan) for p in names]
    if key == "within-5pct":
        ax.bar(names, [100 * v for v in values], color=BLUE)
        ax.set_ylim(0, 100)
        ax.set_ylabel("observations within 5 % (held-out rows)")
        ax.set_title("Reconstruction quality per peer")
    else:
        ax.bar(names, values, color=BLUE)
        label = PEER_METRICS.get(key, key)
        ax.set_ylabel(f"{label} (held-out rows)")
        ax.set_title(f"{label[0].upper()}{label[1:]} per peer")
    ax.tick_params(axis="x", rotation=45 if len(names) > 6 else 0)


def plot_projection(ax: Axes, projection: Mapping) -> None:
    """Draw the 2-D projection of the joined latents, coloured by label.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    projection : Mapping
        ``report.json`` ``projection``: ``method``, ``explained_variance``
        (two shares), ``x``, ``y``, ``label`` and ``label_kind`` (``"class"``:
        one colour and legend entry per class; ``"value"``: a colour scale).
    """
    x, y, labels = (np.asarray(projection[k]) for k in ("x", "y", "label"))
    classes = sorted(set(labels.tolist()), key=_sort_key)
    if projection.get("label_kind") == "class" and len(classes) <= MAX_LEGEND_CLASSES:
        for name in classes:
            chosen = labels == name
            ax.scatter(x[chosen], y[chosen], s=8, alpha=0.7, label=_tick(name))
        ax.legend(fontsize="small", markerscale=2, loc="best")
    else:
        codes = labels.astype(float) if labels.dtype.kind in "iuf" else np.array(
            [classes.index(v) for v in labels.tolist()], dtype=float)
        points = ax.scatter(x, y, s=8, alpha=0.7, c=codes, cmap="viridis")
        ax.figure.colorbar(points, ax=ax, label="label")
    method = str(projection.get("method", "projection")).upper()
    shares = list(projection.get("explained_variance", [])) + [np.nan, np.nan]
    ax.set_xlabel(f"{method} 1 ({100 * shares[0]:.1f} % of variance)")
    ax.set_ylabel(f"{method} 2 ({100 * shares[1]:.1f} % of variance)")
    ax.set_title(f"Joined held-out latents ({len(x)} entities)")


def plot_privacy(ax: Axes, privacy: Mapping[str, Mapping[str, float]]) -> None:
    """Draw the privacy audit as grouped bars: one group per peer, one bar per figure.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    privacy : Mapping[str, Mapping[str, float]]
        ``report.json`` ``privacy``: per peer its audit figures; the headline
        ones (:data:`~vfl_embed.privacy.audit.HEADLINE_KEYS`: ``attack_r2``,
        ``pca_r2``, ``raw_r2``, ``decoder_r2``) get a bar each.
    """
    peers = sorted(privacy)
    keys = _privacy_keys(privacy)
    width = 0.8 / max(len(keys), 1)
    for k, key in enumerate(keys):
        offsets = np.arange(len(peers)) + (k - (len(keys) - 1) / 2) * width
        ax.bar(offsets, [privacy[p].get(key, np.nan) for p in peers], width, label=key)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(peers)), peers)
    ax.set_ylabel("R² of reconstructing the peer's columns")
    ax.set_title("Privacy audit")
    ax.legend(fontsize="small")


def _privacy_keys(privacy: Mapping[str, Mapping[str, object]]) -> list[str]:
    return [k for k in HEADLINE_KEYS if any(
        isinstance(f.get(k), int | float) for f in privacy.values())]


# ------------------------------------------------------------- whole figures
def predictions_chart(
    path: str | Path,
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    task: str,
    classes: Sequence[str] = (),
    metric: float | None = None,
    peers: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Save the held-out predictions chart (with ``peers``: beside their within-5 %).

    With ``peers`` this is the run's ``report.png``: reconstruction quality
    per peer on the left, predictions on the right. Parameters are those of
    :func:`plot_predictions`, plus the PNG ``path`` and ``peers`` (per peer
    its metrics, as in ``report.json``).

    Returns
    -------
    Path
        The PNG written.
    """
    fig = Figure(figsize=(11, 4.5) if peers else (5.5, 4.5))
    axes = fig.subplots(1, 2 if peers else 1, squeeze=False)[0]
    if peers:
        plot_peer_metric(axes[0], peers, "within-5pct")
    plot_predictions(axes[-1], y_true, y_pred, task, classes, metric)
    return _save(fig, path)


def scenario_figure(rows: Sequence[Mapping]) -> Figure:
    """Return the bar chart of the held-out metric per scenario, one panel per dataset.

    Parameters
    ----------
    rows : Sequence[Mapping]
        Rows of ``scenarios.json`` (see :func:`vfl_embed.run.scenarios.scenario_row`).

    Returns
    -------
    matplotlib.figure.Figure
        S0 (raw columns) in grey, the autoencoder scenarios in blue.
    """
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(4.5 * len(names), 4))
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        subset = [r for r in rows if r["dataset"] == name]
        ax.bar([r["scenario"] for r in subset], [r["value"] for r in subset],
               color=[GREY if r["scenario"] == "S0" else BLUE for r in subset])
        low = min(r["value"] for r in subset)
        # Zoom in on the differences, but keep a negative R² in view.
        ax.set_ylim(max(0.0, low - 0.1) if low >= 0 else low - 0.1, 1.0)
        ax.set_title(f"{name}: held-out {subset[0]['metric']}")
    return fig


def frontier_figure(rows: Sequence[Mapping], families: Mapping[str, Sequence[str]]) -> Figure:
    """Return the privacy frontier of one dataset: utility gap against attack.

    Parameters
    ----------
    rows : Sequence[Mapping]
        One dataset's rows of ``frontier.json`` (see ``simulations/frontier.py``):
        ``mechanism``, and ``gap``, ``attack``, ``attack_worst``, ``floor``
        and ``floor_worst`` as mean / std summaries.
    families : Mapping[str, Sequence[str]]
        Mechanisms drawn as one line (a knob turned over several points),
        by the line's name; every other mechanism is one marker.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels, the mean-column attack and the worst column's, each with
        its label floor as a dashed vertical line; lower and further left is
        better.
    """
    fig = Figure(figsize=(11, 4.5))
    by_name = {r["mechanism"]: r for r in rows}
    in_family = {m for members in families.values() for m in members}
    for ax, attack, floor, title in zip(
            fig.subplots(1, 2), ("attack", "attack_worst"), ("floor", "floor_worst"),
            ("mean over columns", "worst column"), strict=True):
        for line, members in families.items():
            points = sorted((by_name[m][attack]["mean"], by_name[m]["gap"]["mean"])
                            for m in members if m in by_name)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=line)
        for row in rows:
            if row["mechanism"] not in in_family:
                ax.errorbar(row[attack]["mean"], row["gap"]["mean"], xerr=row[attack]["std"],
                            yerr=row["gap"]["std"], marker="s", capsize=3,
                            linestyle="none", label=row["mechanism"])
        ax.axvline(rows[0][floor]["mean"], color=GREY, linestyle="--", label="label floor")
        ax.set_xlabel(f"strongest attack R², {title}")
        ax.set_ylabel("gap to S0 (lower is better)")
        ax.set_title(f"{rows[0]['dataset']}: {title}")
    axes = fig.axes
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize="small", loc="best")
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    return write_atomic(path, lambda file: fig.savefig(file, format="png", dpi=100),
                        FILE_MODE)


# ------------------------------------------------------------------ reports
def render_report(source: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Render a run's report, or a paper ``scenarios.json``, as Markdown and PNG charts.

    For a run (its directory or its ``report.json``) this writes ``charts.md``
    and, where the data is there, ``chart-predictions.png`` (from the run's
    ``predictions.csv``), ``chart-peers.png`` (reconstruction MAE and
    within-5 % per peer), ``chart-projection.png`` (2-D projection of the
    joined latents) and ``chart-privacy.png`` (privacy audit). The Markdown
    says which parts the report lacks. For a ``scenarios.json`` (or a
    directory holding one and no ``report.json``) it writes ``scenarios.md``
    and ``scenarios.png``.

    Parameters
    ----------
    source : str | Path
        A run directory, its ``report.json``, or a ``scenarios.json``.
    out_dir : str | Path | None (default: None)
        Where to write; the source's directory if None.

    Returns
    -------
    dict[str, Path]
        The files written, by kind (``markdown``, ``predictions``, ``peers``,
        ``projection``, ``privacy``; ``markdown`` and ``chart`` for scenarios).

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist or its directory holds no report.
    ValueError
        The file is not JSON, or not a report or scenarios file.
    """
    path = _report_file(Path(source))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err.msg}, line {err.lineno})") from None
    out = private_folder(Path(out_dir) if out_dir is not None else path.parent)
    if isinstance(data, list) and all(isinstance(r, dict) and "scenario" in r for r in data):
        return _render_scenarios(data, out)
    if isinstance(data, dict) and "status" in data and "run_config" in data:
        return _render_run(data, path.parent, out)
    raise ValueError(f"{path} is neither a run's report.json nor a paper scenarios.json")


def _report_file(source: Path) -> Path:
    if source.is_dir():
        for name in ("report.json", "scenarios.json"):
            if (source / name).is_file():
                return source / name
        raise FileNotFoundError(f"{source} holds no report.json or scenarios.json")
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    return source


def _render_scenarios(rows: list[dict], out: Path) -> dict[str, Path]:
    return {"chart": _save(scenario_figure(rows), out / "scenarios.png"),
            "markdown": write_atomic(out / "scenarios.md", scenario_table(rows)
                                     + "\n![held-out metric per scenario](scenarios.png)\n",
                                     FILE_MODE)}


def _render_run(report: dict, run_dir: Path, out: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    sections = [_headline(report)]
    for title, draw in (("Held-out predictions", _predictions_section),
                        ("Representation error per peer", _peers_section),
                        ("Joined latents in two dimensions", _projection_section),
                        ("Privacy audit", _privacy_section)):
        text, written = draw(report, run_dir, out)
        sections.append(f"## {title}\n\n{text}")
        paths.update(written)
    paths["markdown"] = write_atomic(out / "charts.md", "\n\n".join(sections) + "\n",
                                     FILE_MODE)
    return paths


def _headline(report: Mapping) -> str:
    config = report.get("run_config", {})
    name = config.get("dataset") or "custom data"
    run = f"run {report['run_id']}" if report.get("run_id") else "run"
    lines = [f"# vfl_embed {run}: {markdown_cell(name)}"]
    entities = report.get("entities", {})
    if report["status"] != "completed":
        lines.append(f"**Stopped in the {markdown_cell(report.get('phase'))} phase**: "
                     f"{markdown_cell(report.get('error'))}")
    elif report.get("mode", "train") == "train":
        lines.append(
            f"{report['task']} with {report.get('model')} on the joined latents of "
            f"{len(report.get('peers', {}))} peers; {entities.get('aligned')} aligned "
            f"entities ({entities.get('train')} train, {entities.get('held_out')} "
            "held out).")
        held_out, train = report.get("held_out_metrics", {}), report.get("train_metrics", {})
        lines.append("| metric | held-out | train |\n|---|---:|---:|\n" + "\n".join(
            f"| {k} | {v:.4f} | {train.get(k, np.nan):.4f} |" for k, v in held_out.items()))
    else:
        lines.append(f"A {report['mode']} run of {report.get('task')}.")
    return "\n\n".join(lines)


def _predictions_section(
    report: Mapping, run_dir: Path, out: Path
) -> tuple[str, dict[str, Path]]:
    csv = run_dir / "predictions.csv"
    if not csv.is_file():
        return "No `predictions.csv` in the run directory.", {}
    import pandas as pd  # only here: the other charts need no table

    # predictions.csv holds the class names as csv_cell wrote them.
    task, classes = report.get("task"), [csv_cell(c) for c in report.get("classes") or []]
    # Class names stay text ("1" is not 1); numeric class labels stay numbers.
    frame = pd.read_csv(csv, dtype={"actual": str, "predicted": str} if classes else None)
    if not {"actual", "predicted"} <= set(frame.columns) or task not in HEADLINE:
        return "`predictions.csv` holds no held-out labels (a prediction run).", {}
    path = predictions_chart(
        out / "chart-predictions.png", frame["actual"].to_numpy(),
        frame["predicted"].to_numpy(), task, classes,
        report.get("held_out_metrics", {}).get(HEADLINE[task][0]))
    return (f"{len(frame)} held-out entities.\n\n![held-out predictions]({path.name})",
            {"predictions": path})


def _peers_section(report: Mapping, run_dir: Path, out: Path) -> tuple[str, dict[str, Path]]:
    peers = report.get("peers") or {}
    if not peers:
        return "No per-peer representation metrics in this report.", {}
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    plot_peer_metric(left, peers, "reconstruction-mae")
    plot_peer_metric(right, peers, "within-5pct")
    path = _save(fig, out / "chart-peers.png")
    return ("Reconstruction MAE (standardized, one-hot encoded columns) and share of "
            "observations reconstructed within 5 %, on held-out rows.\n\n"
            f"![representation error per peer]({path.name})", {"peers": path})


def _projection_section(
    report: Mapping, run_dir: Path, out: Path
) -> tuple[str, dict[str, Path]]:
    projection = report.get("projection") or {}
    if not projection.get("x"):
        return "No projection in this report.", {}
    if report.get("task") == "classification":
        # Numeric class labels (digits) come as values; they are classes.
        projection = {**projection, "label_kind": "class"}
    fig = Figure(figsize=(6.5, 5))
    plot_projection(fig.subplots(), projection)
    path = _save(fig, out / "chart-projection.png")
    shares = ", ".join(f"{100 * s:.1f} %" for s in projection.get("explained_variance", []))
    return (f"{str(projection.get('method', '')).upper()} of the held-out entities' "
            f"joined latents (explained variance {shares}).\n\n"
            f"![joined latents]({path.name})", {"projection": path})


def _privacy_section(
    report: Mapping, run_dir: Path, out: Path
) -> tuple[str, dict[str, Path]]:
    privacy = report.get("privacy") or {}
    if not privacy:
        return "No privacy audit in this report.", {}
    fig = Figure(figsize=(max(5.0, 1.5 * len(privacy)), 4))
    plot_privacy(fig.subplots(), privacy)
    path = _save(fig, out / "chart-privacy.png")
    keys = _privacy_keys(privacy)
    table = "\n".join([f"| peer | {' | '.join(keys)} |", "|---|" + "---:|" * len(keys)] + [
        f"| {markdown_cell(peer)} | "
        + " | ".join(f"{privacy[peer].get(k, np.nan):.4f}" for k in keys)
        + " |" for peer in sorted(privacy)])
    return f"{table}\n\n![privacy audit]({path.name})", {"privacy": path}
