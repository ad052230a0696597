"""The ServerApp: run config -> :class:`VerticalEmbedding` -> report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import NoReturn

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from .alignment import KeyedHashAlignment
from .data import PeerDataError, PeerTable, read_table
from .datasets import load_dataset
from .peer_state import parse_run_id
from .prediction import PredictionResult, TrainedFederation, VerticalPrediction
from .protocol import PeerReplyError
from .report import metrics_table, peer_table, write_prediction_report, write_report
from .strategy import ServerLabels, VerticalEmbedding, VerticalResult, VerticalRunError

app = ServerApp()


class RunStoppedError(Exception):
    """The run stopped on an error already logged; Flower marks it failed."""

# Errors of the run's inputs, peers or settings: reported in one line each.
_STOPPING_ERRORS = (PeerDataError, PeerReplyError, VerticalRunError)

# Run-config keys forwarded to every peer's embed step: encoder, release, audit.
ENCODER_KEYS = (
    "encoder", "latent-dim", "hidden-sizes", "activation", "latent-activation",
    "loss", "learning-rate", "epochs", "max-steps", "batch-size", "validation-split",
    "patience", "supervised-weight", "decorrelation-weight", "seed", "latent-bits",
    "dp-noise-multiplier", "dp-clip-norm", "dp-delta", "audit", "audit-leak-fraction",
)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train (align, embed, learn) or predict, as ``mode`` says; write the report.

    A run that stops still writes the report of what it finished.
    """
    config = context.run_config
    directory = results_directory(config, context.run_id)
    mode = str(config.get("mode", "train"))
    if mode not in ("train", "predict"):
        _stop(VerticalRunError(f"mode must be 'train' or 'predict', got '{mode}'"),
              "before it started")
    timeout = float(config.get("timeout", 900.0))
    if timeout <= 0:
        _stop(VerticalRunError(f"timeout must be positive, got {timeout}"),
              "before it started")
    run_id = context.run_id
    if mode == "predict":
        write = partial(write_prediction_report, directory=directory, run_config=config,
                        run_id=run_id)
        result = _run(prediction_from_config, config, write, grid, timeout)
        _log_prediction(result, write(result))
    else:
        write = partial(write_report, directory=directory, run_config=config, run_id=run_id)
        result = _run(strategy_from_config, config, write, grid, timeout)
        _log_training(result, write(result), config, run_id)


def _run(
    build: Callable[[Mapping[str, object]], VerticalEmbedding | VerticalPrediction],
    config: Mapping[str, object],
    write: Callable[[object], Mapping[str, Path]],
    grid: Grid,
    timeout: float,
) -> VerticalResult | PredictionResult:
    """Build the run from its config and start it; a stopped run writes its report."""
    try:
        runner = build(config)
    except (*_STOPPING_ERRORS, ValueError) as err:  # ValueError: a bad setting
        _stop(err, "before it started")
    try:
        return runner.start(grid, timeout=timeout)
    except Exception as err:
        paths = write(runner.result)
        log(INFO, "[report] %s (what the run finished before it stopped)", paths["json"])
        if isinstance(err, _STOPPING_ERRORS):
            _stop(err, f"in the {runner.result.phase} phase")
        raise


def _log_training(
    result: VerticalResult, paths: Mapping[str, Path], config: Mapping[str, object],
    run_id: int,
) -> None:
    log(INFO, "[learn] held-out metrics (%d entities):\n%s", result.n_test,
        metrics_table(result))
    log(INFO, "[learn] peers:\n%s", peer_table(result))
    if result.dropped_peers:
        log(WARNING, "[learn] finished with %d peers, without %s (min-peers=%s)",
            len(result.peer_metrics), ", ".join(sorted(result.dropped_peers)),
            config.get("min-peers"))
    log(INFO, "[report] %s", paths["json"])
    log(INFO, "[report] written to %s; predict with this model: --run-config "
        "'mode=\"predict\" train-run=\"%d\"'", paths["json"].parent, run_id)


def _log_prediction(result: PredictionResult, paths: Mapping[str, Path]) -> None:
    log(INFO, "[predict] %d of %d entities scored, %d with imputed latents; "
        "predictions in %s", result.scored, result.requested,
        sum(1 for names in result.imputed if names), paths["predictions"])
    log(INFO, "[report] %s", paths["json"])


def _stop(err: Exception, where: str) -> NoReturn:
    log(ERROR, "vfl_embed stopped %s: %s", where, err)
    # An exception, not sys.exit: Flower then flushes the run's logs and
    # marks it failed; SystemExit would bypass both.
    raise RunStoppedError(str(err)) from None


def strategy_from_config(config: Mapping[str, object]) -> VerticalEmbedding:
    """Build the strategy the run config describes."""
    encoder_config = ConfigRecord({k: config[k] for k in ENCODER_KEYS if k in config})
    label_source = str(config.get("label-source", "server"))
    if label_source not in ("server", "peer"):
        raise VerticalRunError(f"label-source must be 'server' or 'peer', "
                               f"got '{label_source}'")
    alignment = str(config.get("alignment", "keyed-hash"))
    if alignment == "psi" and label_source == "server":
        raise VerticalRunError("alignment 'psi' keeps every ID blinded from the server, "
                               "so the server cannot hold labels by ID: set "
                               "label-source='peer' (a peer's file holds the label)")
    return VerticalEmbedding(
        encoder_config=encoder_config,
        server_labels=server_labels(config) if label_source == "server" else None,
        task=str(config.get("task", "auto")),
        model=str(config.get("model", "xgboost")),
        search_iterations=int(config.get("search-iterations", 0)),
        supervised=bool(config.get("supervised", False)),
        test_fraction=float(config.get("test-fraction", 0.2)),
        min_entities=int(config.get("min-entities", 50)),
        num_peers=int(config.get("num-peers", 0)),
        min_peers=int(config.get("min-peers", 0)),
        alignment=alignment,
        seed=int(config.get("seed", 42)),
    )


def server_labels(config: Mapping[str, object]) -> ServerLabels:
    """Load the server's labels and key them like the peers key their IDs.

    The server needs the alignment secret to do so: with a server label file
    it is itself a data holder. Where the server must not hold the secret,
    use ``label-source = "peer"``.
    """
    alignment = KeyedHashAlignment(str(config.get("alignment-secret", "")))
    label_path = str(config.get("label-path", ""))
    if label_path:
        target = str(config.get("target", ""))
        if not target:
            raise VerticalRunError("run config 'label-path' needs 'target', the "
                                   "label column")
        table = PeerTable(read_table(label_path, owner="server label file"),
                          str(config.get("id-column", "id")), "server label file",
                          target, require_features=False, source=label_path)
        labels = table.labels
    else:
        dataset = load_dataset(str(config.get("dataset", "ames")))
        table = PeerTable(dataset.labels, "id", "server label file", dataset.target,
                          require_features=False)
        labels = table.labels
    if labels.isna().any():
        raise VerticalRunError(f"server label file: {int(labels.isna().sum())} "
                               "labels are missing")
    classes: list[str] = []
    if labels.dtype == object or str(labels.dtype) in ("category", "string", "str"):
        classes = sorted(labels.astype(str).unique())
        values = labels.astype(str).map({c: i for i, c in enumerate(classes)})
    else:
        values = labels
    return ServerLabels(alignment.pseudonymize(table.ids),
                        values.to_numpy(dtype=float), classes, np.asarray(table.ids))


def results_directory(config: Mapping[str, object], run_id: int = 0) -> Path:
    """``results-dir`` (default ``./results``) / ``<dataset>-<UTC time>-run<run id>``."""
    name = str(config.get("dataset", "")) if not config.get("data-paths") else "custom"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return _results_base(config) / f"{name or 'custom'}-{stamp}{_run_suffix(run_id)}"


def training_run_directory(config: Mapping[str, object], run_id: int) -> Path:
    """Return the results directory :func:`results_directory` gave run ``run_id``."""
    base = _results_base(config)
    found = sorted(base.glob(f"*{_run_suffix(run_id)}/report.json"))
    if not found:
        raise VerticalRunError(
            f"no training run {run_id} under '{base}': give the run ID that "
            "`flwr run` printed for a training run, and the same results-dir")
    return found[0].parent


def _run_suffix(run_id: int) -> str:
    return f"-run{run_id}"


def _results_base(config: Mapping[str, object]) -> Path:
    return Path(str(config.get("results-dir", "") or "results")).expanduser().resolve()


def prediction_from_config(config: Mapping[str, object]) -> VerticalPrediction:
    """Build the prediction run the run config describes (``mode = "predict"``).

    The entities to score are the IDs in ``predict-ids`` (a CSV or Parquet
    file with the ``id-column``), else every ID of the label file or built-in
    dataset; the server keys them with the alignment secret, so it needs it.
    """
    if str(config.get("alignment", "keyed-hash")) != "keyed-hash":
        raise VerticalRunError("predict mode keys the IDs to score on the server, which "
                               "needs alignment='keyed-hash'")
    train_run = parse_run_id(config.get("train-run", ""), "run config 'train-run'")
    trained = TrainedFederation.load(training_run_directory(config, train_run), train_run)
    ids = _ids_to_score(config)
    secret = str(config.get("alignment-secret", ""))
    if not secret:
        raise VerticalRunError("predict mode keys the IDs to score like the peers: "
                               "run config 'alignment-secret' is empty")
    return VerticalPrediction(
        trained, KeyedHashAlignment(secret).pseudonymize(ids), ids,
        missing_policy=str(config.get("missing-policy", "drop")),
        num_peers=int(config.get("num-peers", 0)),
    )


def _ids_to_score(config: Mapping[str, object]) -> np.ndarray:
    """IDs in ``predict-ids``, else in ``label-path``, else of the built-in dataset."""
    path = str(config.get("predict-ids", "") or config.get("label-path", ""))
    if path:
        frame, id_column, source = (read_table(path, owner="predict-ids file"),
                                    str(config.get("id-column", "id")), path)
    elif config.get("data-paths"):
        raise VerticalRunError("predict mode needs the IDs to score: set run config "
                               "'predict-ids' to a file with the id-column")
    else:
        frame, id_column, source = (load_dataset(str(config.get("dataset", "ames"))).labels,
                                    "id", None)
    return PeerTable(frame, id_column, "predict-ids file", require_features=False,
                     source=source).ids
