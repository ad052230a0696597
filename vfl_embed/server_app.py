"""The ServerApp: run config -> :class:`VerticalEmbedding` -> report."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import NoReturn

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from .alignment import KeyedHashAlignment
from .data import PeerDataError, PeerTable, read_table
from .datasets import load_dataset
from .protocol import PeerReplyError
from .report import metrics_table, peer_table, write_report
from .strategy import ServerLabels, VerticalEmbedding, VerticalRunError

app = ServerApp()


class RunStoppedError(Exception):
    """The run stopped on an error already logged; Flower marks it failed."""

# Errors of the run's inputs, peers or settings: reported in one line each.
_STOPPING_ERRORS = (PeerDataError, PeerReplyError, VerticalRunError)

# Run-config keys forwarded to every peer's encoder.
ENCODER_KEYS = (
    "encoder", "latent-dim", "hidden-sizes", "activation", "latent-activation",
    "loss", "learning-rate", "epochs", "batch-size", "validation-split",
    "patience", "supervised-weight", "seed",
)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Align the peers, collect their latents, learn and write the report.

    A run that stops still writes the report of what it finished.
    """
    config = context.run_config
    directory = results_directory(config)
    try:
        strategy = strategy_from_config(config)
    except (*_STOPPING_ERRORS, ValueError) as err:  # ValueError: a bad setting
        _stop(err, "before it started")
    timeout = float(config.get("timeout", 900.0))
    if timeout <= 0:
        _stop(VerticalRunError(f"timeout must be positive, got {timeout}"),
              "before it started")
    try:
        result = strategy.start(grid, timeout=timeout)
    except Exception as err:
        paths = write_report(strategy.result, directory, config)
        log(INFO, "[report] %s (what the run finished before it stopped)",
            paths["json"])
        if isinstance(err, _STOPPING_ERRORS):
            _stop(err, f"in the {strategy.result.phase} phase")
        raise
    paths = write_report(result, directory, config)
    log(INFO, "[learn] held-out metrics (%d entities):\n%s", result.n_test,
        metrics_table(result))
    log(INFO, "[learn] peers:\n%s", peer_table(result))
    if result.dropped_peers:
        log(WARNING, "[learn] finished with %d peers, without %s (min-peers=%s)",
            len(result.peer_metrics), ", ".join(sorted(result.dropped_peers)),
            config.get("min-peers"))
    log(INFO, "[report] %s", paths["json"])
    log(INFO, "[report] written to %s", directory)


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
                        values.to_numpy(dtype=float), classes)


def results_directory(config: Mapping[str, object]) -> Path:
    """``results-dir`` (default ``./results``) / ``<dataset>-<UTC time>``."""
    base = Path(str(config.get("results-dir", "") or "results")).expanduser()
    name = str(config.get("dataset", "")) if not config.get("data-paths") else "custom"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return base.resolve() / f"{name or 'custom'}-{stamp}"
