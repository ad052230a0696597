"""The paper's scenarios S0-S4 as run configurations, run through Flower, and their table.

Every scenario is a real ``flwr run`` on a local simulation federation:

- S0 raw columns: every peer sends its preprocessed columns (``encoder=none``)
- S1 one shared autoencoder: one SuperNode holds all columns
- S2 individual autoencoders: one per peer, latents joined by ID (the app's default)
- S3 like S1 with a supervised (multitask) autoencoder
- S4 like S2 with supervised autoencoders

The paper runs (:func:`run_scenarios`) use ``peer-coverage=1.0`` so that all
scenarios of a dataset share the same entities and the same held-out split.
The bar chart of the results is drawn by :mod:`vfl_embed.report.charts`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import FILE_MODE, private_folder, write_atomic
from ..errors import RunFailedError

if TYPE_CHECKING:  # flwr is imported by whoever builds the federation, not here
    from ..deploy.flwr_commands import LocalRun
    from .local_federation import LocalFederation

__all__ = ["DATASETS", "SCENARIOS", "Scenario", "paper_config", "run_completed",
           "run_config", "run_scenarios", "scenario_row", "write_rows"]

@dataclass(frozen=True)
class Scenario:
    """One scenario of the paper.

    Attributes
    ----------
    title : str
        What the downstream model is fed, in a few words.
    config : Mapping[str, object]
        The run-config keys that make this scenario.
    shared : bool
        One SuperNode holds all columns, so one encoder sees them all.
    """

    title: str
    config: Mapping[str, object] = field(default_factory=dict)
    shared: bool = False

    def supernodes(self, peers: int) -> int:
        """Return how many SuperNodes run this scenario on a table split ``peers`` ways."""
        return 1 if self.shared else peers


# Per dataset: the paper's downstream model, the peers of S0/S2/S4 and the
# headline metric of the table.
DATASETS = {
    "ames": {"model": "xgboost", "peers": 3, "metric": "r2"},
    "digits": {"model": "logistic", "peers": 3, "metric": "accuracy"},
    "titanic": {"model": "xgboost", "peers": 3, "metric": "accuracy"},
}
SCENARIOS = {
    "S0": Scenario("raw columns", {"encoder": "none"}),
    "S1": Scenario("one shared autoencoder", shared=True),
    "S2": Scenario("individual autoencoders"),
    "S3": Scenario("shared supervised autoencoder", {"supervised": True}, shared=True),
    "S4": Scenario("individual supervised autoencoders", {"supervised": True}),
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_config(
    dataset: str, scenario: str, config: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Return the run config of ``scenario`` on ``dataset``, with ``config`` on top.

    Parameters
    ----------
    dataset : str
        Built-in table (run-config key ``dataset``).
    scenario : str
        A key of :data:`SCENARIOS`.
    config : Mapping[str, object] | None (default: None)
        Further run-config keys; they win over the scenario's.

    Returns
    -------
    dict[str, object]
        Keys of ``[tool.flwr.app.config]`` for ``flwr run --run-config``.
    """
    return {"dataset": dataset, **SCENARIOS[scenario].config, **(config or {})}


def paper_config(
    dataset: str, scenario: str, out_dir: Path, config: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Return the run config of one paper run: the dataset's model, every entity.

    ``config`` wins over the paper's settings except ``results-dir``: each
    run writes its report to ``out_dir/runs/<dataset>-<scenario>``.
    """
    paper = {"model": DATASETS[dataset]["model"], "peer-coverage": 1.0}
    return run_config(dataset, scenario, paper | dict(config or {}) | {
        "results-dir": str(out_dir / "runs" / f"{dataset}-{scenario}")})


def run_completed(
    federation: LocalFederation,
    config: Mapping[str, object],
    num_peers: int,
    on_line: Callable[[str], None] | None = None,
) -> LocalRun:
    """Run the app once and require a completed report.

    Parameters
    ----------
    federation : LocalFederation
        The local simulation federation to run on.
    config : Mapping[str, object]
        The run config.
    num_peers : int
        Simulated SuperNodes.
    on_line : Callable[[str], None] | None (default: None)
        Called with every line of the run's output.

    Returns
    -------
    LocalRun
        The finished run; its ``report_path`` names a completed report.

    Raises
    ------
    RunFailedError
        The run failed or stopped (``flwr run --stream`` exits 0 even then,
        so the report's status decides).
    """
    run = federation.run(config, num_peers=num_peers, on_line=on_line)
    if (run.returncode != 0 or run.report_path is None
            or run.report.get("status", "completed") != "completed"):
        raise RunFailedError(run)
    return run


def run_scenarios(
    federation: LocalFederation,
    datasets: Sequence[str],
    scenarios: Sequence[str],
    out_dir: Path,
    config: Mapping[str, object] | None = None,
    on_start: Callable[[str, str], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run every scenario on every dataset, one ``flwr run`` each, in that order.

    Parameters
    ----------
    federation : LocalFederation
        The local simulation federation to run on.
    datasets : Sequence[str]
        Keys of :data:`DATASETS`.
    scenarios : Sequence[str]
        Keys of :data:`SCENARIOS`.
    out_dir : Path
        Each run's report goes to ``out_dir/runs/<dataset>-<scenario>/``.
    config : Mapping[str, object] | None (default: None)
        Run-config keys for every run (e.g. fewer ``epochs``).
    on_start : Callable[[str, str], None] | None (default: None)
        Called with ``(dataset, scenario)`` before each run.
    on_line : Callable[[str], None] | None (default: None)
        Called with every line of every run's output.

    Returns
    -------
    list[dict]
        One row per run, as :func:`scenario_row` builds it.
    """
    rows = []
    for dataset in datasets:
        for scenario in scenarios:
            if on_start is not None:
                on_start(dataset, scenario)
            peers = SCENARIOS[scenario].supernodes(DATASETS[dataset]["peers"])
            run = run_completed(federation, paper_config(dataset, scenario, out_dir,
                                                         config), peers, on_line)
            rows.append(scenario_row(dataset, scenario, run.report, run.seconds, peers,
                                     run.report_path))
    return rows


def scenario_row(
    dataset: str, scenario: str, report: Mapping, seconds: float, peers: int,
    report_path: Path | None = None,
) -> dict:
    """Return the row of one finished scenario run (one entry of ``scenarios.json``).

    Parameters
    ----------
    dataset, scenario : str
        What ran.
    report : Mapping
        The run's ``report.json``.
    seconds : float
        Wall time of the whole ``flwr run``.
    peers : int
        Simulated SuperNodes.
    report_path : Path | None (default: None)
        Where the run's report is.

    Returns
    -------
    dict
        ``dataset``, ``scenario``, ``title``, ``peers``, ``metric``, ``value``
        (held-out ``metric``), ``held_out`` (all held-out metrics), the peers'
        mean ``reconstruction_mae`` and ``within_5pct``, ``seconds``, ``report``.
    """
    metric = DATASETS[dataset]["metric"]
    peer_metrics = list(report["peers"].values())
    return {
        "dataset": dataset, "scenario": scenario, "title": SCENARIOS[scenario].title,
        "peers": peers, "metric": metric, "value": report["held_out_metrics"][metric],
        "held_out": report["held_out_metrics"],
        "reconstruction_mae": _mean(p["reconstruction-mae"] for p in peer_metrics),
        "within_5pct": _mean(p["within-5pct"] for p in peer_metrics),
        "seconds": seconds,
        "report": str(report_path) if report_path else None,
    }


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def write_rows(rows: Sequence[Mapping], out_dir: Path) -> Path:
    """Write the runs' rows to ``out_dir/scenarios.json`` and return its path."""
    return write_atomic(private_folder(out_dir) / "scenarios.json",
                        json.dumps(list(rows), indent=2), FILE_MODE)
