"""The ServerApp: run config -> :class:`VerticalEmbedding` -> report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import NoReturn

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from .config import ConfigError, RunConfig
from .errors import PeerDataError, PeerReplyError, RunStoppedError, VerticalRunError, log_text
from .privacy.label_dp import label_sentence
from .privacy.presets import release_verdict
from .report.files import write_prediction_report, write_report
from .report.folders import results_directory, training_run_directory
from .report.tables import metrics_table, peer_table
from .report.training_run import load_training_run
from .server.builders import prediction_from_config, strategy_from_config
from .server.prediction import PredictionResult, VerticalPrediction
from .server.result import VerticalResult
from .server.strategy import VerticalEmbedding
from .wire.protocol import parse_run_id

app = ServerApp()


# Errors of the run's inputs, peers or settings: reported in one line each.
_STOPPING_ERRORS = (PeerDataError, PeerReplyError, VerticalRunError)

@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train (align, embed, learn) or predict, as ``mode`` says; write the report.

    A run that stops still writes the report of what it finished.
    """
    try:
        config = RunConfig(context.run_config)
    except ConfigError as err:
        _stop(err, "before it started")
    directory = results_directory(config, context.run_id)
    run_id = context.run_id
    timeout = float(config["timeout"])
    if config["mode"] == "predict":
        write = partial(write_prediction_report, directory=directory, run_config=config,
                        run_id=run_id)
        result = _run(_prediction, config, write, grid, timeout)
        _log_prediction(result, write(result))
    else:
        write = partial(write_report, directory=directory, run_config=config, run_id=run_id)
        result = _run(strategy_from_config, config, write, grid, timeout)
        _log_training(result, write(result), config, run_id)


def _prediction(config: RunConfig) -> VerticalPrediction:
    train_run = parse_run_id(config["train-run"], "run config 'train-run'")
    trained = load_training_run(training_run_directory(config, train_run), train_run)
    return prediction_from_config(config, trained)


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
    log(INFO, "[privacy] preset %s: %s", config.get("privacy", "custom"),
        release_verdict(result.privacy))
    log(INFO, "[privacy] training labels: %s", label_sentence(result.label_privacy))
    log(INFO, "[report] %s", paths["json"])
    log(INFO, "[report] written to %s; predict with this model: --run-config "
        "'mode=\"predict\" train-run=\"%d\"'", paths["json"].parent, run_id)


def _log_prediction(result: PredictionResult, paths: Mapping[str, Path]) -> None:
    log(INFO, "[predict] %d of %d entities scored, %d with imputed latents; "
        "predictions in %s", result.scored, result.requested,
        sum(1 for names in result.imputed if names), paths["predictions"])
    log(INFO, "[report] %s", paths["json"])


def _stop(err: Exception, where: str) -> NoReturn:
    # The error may quote a peer's own words: keep them on one log line.
    line = log_text(err)
    log(ERROR, "vfl_embed stopped %s: %s", where, line)
    # An exception, not sys.exit: Flower then flushes the run's logs and
    # marks it failed; SystemExit would bypass both.
    raise RunStoppedError(line) from None


