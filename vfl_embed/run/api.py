"""The Python API for notebooks and scripts; the ``vfl-embed`` command line mirrors it.

Every run is a real ``flwr run`` of this Flower App on a private local
simulation federation (:class:`~vfl_embed.run.local_federation.LocalFederation`),
exactly what ``flwr run . --stream`` does::

    import vfl_embed

    report = vfl_embed.simulate("digits", peers=5, model="logistic", latent_dim=8)
    report.metrics["accuracy"], report.peers_frame()
    scored = vfl_embed.predict(report, ids=["digits-000007", "digits-000042"])
    scored.predictions()
    table = vfl_embed.paper(["digits"], ["S0", "S2"])

A run that fails or stops raises :class:`RunFailedError` (it is not returned
as a report with ``status == "failed"``: code that goes on with the metrics
of a stopped run would compute on nothing). The error names the partial
report the stopped run wrote, if any, in ``report_path``;
:func:`load_report` reads it.
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import KEYS, REDACTED, RunConfig
from ..errors import RunFailedError
from ..report.charts import render_report
from ..report.tables import table_rows
from .scenarios import (
    DATASETS,
    SCENARIOS,
    run_completed,
    run_config,
    run_scenarios,
    write_rows,
)

__all__ = ["RunFailedError", "RunReport", "load_report", "paper", "predict",
           "scenario_frame", "simulate"]

_PHASE = re.compile(r"\[(align|embed|learn|report)\]\s*(.*)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WIDTH = 64  # characters of the progress line's text


@dataclass(frozen=True)
class RunReport:
    """A run's ``report.json``, with its headline fields as attributes.

    Attributes
    ----------
    path : Path
        The run directory.
    run_id : int | None
        Flower's run id (None in reports written before it was recorded).
    status : str
        ``"completed"`` or ``"failed"``.
    mode : str
        ``"train"`` or ``"predict"``.
    task : str
        ``"regression"`` or ``"classification"`` (empty if the run stopped
        before its labels were known).
    metrics : dict[str, float]
        Downstream metrics on held-out entities.
    train_metrics : dict[str, float]
        The same metrics on the training entities.
    entities : dict[str, int]
        Entity counts (``aligned``, ``train``, ``held_out``, ...).
    dropped_peers : dict[str, str]
        Peers the run went on without, with the reason.
    seconds : dict[str, float]
        Time per phase.
    privacy : dict[str, dict[str, float]]
        Per peer, its privacy figures: the reconstruction-attack audit of its
        released latents (``attack_r2``, ``pca_r2``, ``raw_r2``, ...) and,
        for a noised release, ``dp_epsilon``.
    raw : dict
        The whole ``report.json``.
    """

    path: Path
    run_id: int | None
    status: str
    mode: str
    task: str
    metrics: dict[str, float]
    train_metrics: dict[str, float]
    entities: dict[str, int]
    dropped_peers: dict[str, str]
    seconds: dict[str, float]
    privacy: dict[str, dict[str, float]]
    raw: dict = field(repr=False)

    @classmethod
    def from_dict(cls, report: Mapping[str, Any], path: str | Path) -> RunReport:
        """Build a report from the contents of ``report.json`` in run directory ``path``."""
        run_id = report.get("run_id")
        return cls(
            path=Path(path),
            # report.json writes the id as text (it exceeds JSON's safe integers).
            run_id=int(run_id) if run_id not in (None, "") else None,
            status=report.get("status", "completed"),
            mode=report.get("mode", "train"),
            task=report.get("task", ""),
            metrics=dict(report.get("held_out_metrics") or {}),
            train_metrics=dict(report.get("train_metrics") or {}),
            entities=dict(report.get("entities") or {}),
            dropped_peers=dict(report.get("dropped_peers") or {}),
            seconds=dict(report.get("seconds") or {}),
            privacy=dict(report.get("privacy") or {}),
            raw=dict(report),
        )

    def peers_frame(self) -> pd.DataFrame:
        """Return one row per peer (index ``peer``): its rows, metrics and why it was dropped.

        Peers that aligned but sent no latents (a stopped or dropped peer)
        have only ``rows``; ``dropped`` is the reason a peer was left out, or
        empty.
        """
        peers = self.raw.get("peers") or {}
        rows = self.raw.get("peer_rows") or {}
        names = sorted(set(peers) | set(rows))
        frame = pd.DataFrame(
            [{"rows": rows.get(p, peers.get(p, {}).get("rows")), **peers.get(p, {})}
             for p in names], index=pd.Index(names, name="peer"))
        frame["dropped"] = [self.dropped_peers.get(p, "") for p in names]
        return frame

    def predictions(self) -> pd.DataFrame:
        """Return the run's ``predictions.csv`` (IDs as text).

        A training run's has its held-out entities; a prediction run's, the
        entities it scored.
        """
        path = self.path / "predictions.csv"
        if not path.is_file():
            raise FileNotFoundError(f"no predictions.csv in {self.path}")
        return pd.read_csv(path, dtype={"id": str})

    def to_frame(self) -> pd.DataFrame:
        """Return a one-row frame of the headline figures (held-out metrics, counts, time)."""
        config = self.raw.get("run_config") or {}
        row = {
            "run_id": self.run_id, "mode": self.mode, "status": self.status,
            "dataset": config.get("dataset") or None, "task": self.task,
            "model": self.raw.get("model"), "peers": len(self.raw.get("peers") or {}),
            **{f"entities_{k}": v for k, v in self.entities.items()
               if isinstance(v, int | float)},
            **self.metrics,
            "seconds": sum(self.seconds.values()),
            "path": str(self.path),
        }
        return pd.DataFrame([row])


def load_report(path: str | Path) -> RunReport:
    """Load a run's report.

    Parameters
    ----------
    path : str | Path
        The run directory or its ``report.json``.

    Returns
    -------
    RunReport
        The report.

    Raises
    ------
    FileNotFoundError
        No ``report.json`` there.
    """
    path = Path(path).expanduser()
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no report.json at {path}")
    return RunReport.from_dict(json.loads(file.read_text()), file.parent)


def simulate(
    dataset: str = "ames",
    peers: int = 3,
    scenario: str = "S2",
    *,
    results_dir: str | Path | None = None,
    config: Mapping[str, object] | None = None,
    progress: bool = False,
    echo: bool = False,
    cpus_per_peer: int | None = None,
    **overrides: object,
) -> RunReport:
    """Run the app once on a local simulation federation (a real ``flwr run``).

    Parameters
    ----------
    dataset : str (default: "ames")
        Built-in table: ``"ames"``, ``"digits"``, ``"titanic"`` or ``"breast-cancer"``; ignored
        when ``config`` sets ``data-paths`` (your own files).
    peers : int (default: 3)
        Simulated SuperNodes, i.e. peers, each holding a share of the columns.
    scenario : str (default: "S2")
        The paper's scenario: ``"S0"`` raw columns, ``"S1"`` one shared
        autoencoder, ``"S2"`` individual autoencoders (the app's default),
        ``"S3"``/``"S4"`` their supervised variants. S1 and S3 run one
        SuperNode holding every column, whatever ``peers`` says.
    results_dir : str | Path | None (default: None)
        Base folder of the run's report; ``./results`` if None (and
        ``config`` sets no ``results-dir``).
    config : Mapping[str, object] | None (default: None)
        Run-config keys as in ``pyproject.toml`` (``{"latent-dim": 8}``).
    progress : bool (default: False)
        Show a progress line that follows the run's phases.
    echo : bool (default: False)
        Copy Flower's output to stdout.
    cpus_per_peer : int | None (default: None)
        CPU cores the simulation reserves per peer (Flower's
        ``client-resources-num-cpus``); None keeps Flower's default of 2, so
        a 2-core machine fits one peer at a time, 1 fits two side by side.
    **overrides : object
        More run-config keys, underscores for dashes (``latent_dim=8``).

    Returns
    -------
    RunReport
        The completed run's report.

    Raises
    ------
    ValueError
        An unknown dataset, scenario or run-config key, or ``peers < 1``.
    RunFailedError
        The run failed or stopped; the message says why, and the error's
        ``report_path`` names the partial report, if any.
    """
    settings = _settings(config, overrides, results_dir, Path("results"))
    if "data-paths" not in settings:
        _require_known("dataset", [dataset], _builtin_datasets())
    _require_known("scenario", [scenario], SCENARIOS)
    if int(peers) < 1:
        raise ValueError(f"peers must be at least 1, got {peers}")
    from .local_federation import LocalFederation  # flwr: only when running

    with LocalFederation(echo=echo, cpus_per_peer=cpus_per_peer) as federation, \
            _phases(progress) as shown:
        # Peer files are the data when given; the dataset argument is then unused.
        shown.start(f"{'peer files' if 'data-paths' in settings else dataset} {scenario}")
        run = run_completed(federation, run_config(dataset, scenario, settings),
                            SCENARIOS[scenario].supernodes(int(peers)), shown.line)
    return load_report(run.report_path)


def predict(
    trained: RunReport | str | Path,
    ids: str | Path | Sequence[str] | None = None,
    *,
    missing_policy: str = "drop",
    config: Mapping[str, object] | None = None,
    progress: bool = False,
    echo: bool = False,
) -> RunReport:
    """Score entities with the saved encoders and model of a simulated training run.

    The prediction run is a second ``flwr run`` (``mode = "predict"``) on the
    same simulated peers: it reuses the training run's run config (dataset,
    seed, peer files, results and state folders) and SuperNode count.

    Parameters
    ----------
    trained : RunReport | str | Path
        The completed training run: its report, run directory or report.json.
    ids : str | Path | Sequence[str] | None (default: None)
        The entities to score: a CSV/Parquet file with the run's
        ``id-column``, or the IDs themselves; None scores every ID of the
        label file or built-in dataset.
    missing_policy : str (default: "drop")
        ``"drop"`` entities a peer lacks, or ``"impute"`` that peer's latents.
    config : Mapping[str, object] | None (default: None)
        Run-config values over the training run's. Reports keep no secret, so
        a training run with its own ``alignment-secret`` needs it again here;
        a redacted key otherwise takes its default.
    progress : bool (default: False)
        Show a progress line that follows the run's phases.
    echo : bool (default: False)
        Copy Flower's output to stdout.

    Returns
    -------
    RunReport
        The prediction run's report (``mode == "predict"``);
        :meth:`RunReport.predictions` reads its predictions.

    Raises
    ------
    ValueError
        ``trained`` is not a completed training run.
    RunFailedError
        The prediction run failed or stopped.
    """
    trained = trained if isinstance(trained, RunReport) else load_report(trained)
    if trained.mode != "train" or trained.status != "completed" or trained.run_id is None:
        raise ValueError(f"{trained.path} is not a completed training run")
    kept = {key: value for key, value in trained.raw["run_config"].items()
            if value != REDACTED}
    config = kept | dict(config or {}) | {
        "mode": "predict", "train-run": str(trained.run_id),
        "missing-policy": missing_policy,
    }
    from .local_federation import LocalFederation  # flwr: only when running

    with _ids_file(ids, str(config.get("id-column", "id"))) as path, \
            LocalFederation(echo=echo) as federation, _phases(progress) as shown:
        if path is not None:
            config["predict-ids"] = str(path)
        shown.start(f"predict with run {trained.run_id}")
        run = run_completed(federation, config, len(trained.raw["peer_rows"]), shown.line)
    return load_report(run.report_path)


@contextmanager
def _ids_file(ids: str | Path | Sequence[str] | None, column: str) -> Iterator[Path | None]:
    """Yield a file listing ``ids`` (the file itself if given one; None for None)."""
    if ids is None or isinstance(ids, str | Path):
        yield None if ids is None else Path(ids).expanduser().resolve()
        return
    with tempfile.TemporaryDirectory(prefix="vfl-predict-ids-") as folder:
        path = Path(folder) / "ids.csv"
        pd.DataFrame({column: [str(i) for i in ids]}).to_csv(path, index=False)
        yield path


def paper(
    datasets: Sequence[str] = ("ames",),
    scenarios: Sequence[str] = tuple(SCENARIOS),
    *,
    results_dir: str | Path | None = None,
    config: Mapping[str, object] | None = None,
    progress: bool = False,
    echo: bool = False,
) -> pd.DataFrame:
    """Run the paper's scenarios on built-in tables, one ``flwr run`` each.

    Every run uses ``peer-coverage=1.0`` so that the scenarios of a dataset
    share one entity set and split, and the dataset's paper model (XGBoost,
    logistic regression for digits). Writes ``scenarios.json``,
    ``scenarios.md`` and ``scenarios.png`` to the results folder, each
    run's report below its ``runs/`` folder.

    Parameters
    ----------
    datasets : Sequence[str] (default: ("ames",))
        Any of ``"ames"``, ``"digits"``, ``"titanic"``.
    scenarios : Sequence[str] (default: all of S0 to S4)
        Which scenarios, in this order.
    results_dir : str | Path | None (default: None)
        Output folder; ``./results/scenarios`` if None.
    config : Mapping[str, object] | None (default: None)
        Run-config keys for every run (e.g. ``{"epochs": 50}``).
    progress : bool (default: False)
        Show a progress bar over the runs and the phase of the current one.
    echo : bool (default: False)
        Copy Flower's output to stdout.

    Returns
    -------
    pandas.DataFrame
        One row per dataset and scenario, the columns of ``scenarios.md``:
        ``dataset``, ``scenario``, ``title``, ``peers``, ``metric``,
        ``value`` (held-out), ``vs_s0`` (NaN without an S0 run),
        ``reconstruction_mae`` and ``within_5pct`` (NaN for S0), ``seconds``.
        ``frame.attrs["files"]`` names the files written (``json``,
        ``markdown``, ``chart``).

    Raises
    ------
    ValueError
        An unknown dataset, scenario or run-config key.
    RunFailedError
        A run failed or stopped (the runs before it keep their reports).
    """
    settings = _settings(config, {}, results_dir, Path("results", "scenarios"))
    out_dir = Path(str(settings.pop("results-dir")))
    _require_known("dataset", datasets, DATASETS)
    _require_known("scenario", scenarios, SCENARIOS)
    from .local_federation import LocalFederation  # flwr: only when running

    with LocalFederation(echo=echo) as federation, \
            _phases(progress, total=len(datasets) * len(scenarios)) as shown:
        rows = run_scenarios(federation, list(datasets), list(scenarios), out_dir,
                             settings, lambda d, s: shown.start(f"{d} {s}"), shown.line)
    json_path = write_rows(rows, out_dir)
    frame = scenario_frame(rows)
    frame.attrs["files"] = {"json": json_path, **render_report(json_path)}
    return frame


def scenario_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Return the table of scenario runs (rows of ``scenarios.json``) as a DataFrame."""
    frame = pd.DataFrame(table_rows(rows))
    numbers = ["value", "vs_s0", "reconstruction_mae", "within_5pct", "seconds"]
    # None ("-" in the Markdown) becomes NaN, also where a column holds no number.
    frame[numbers] = frame[numbers].astype(float)
    return frame


# ----------------------------------------------------------------- settings
def _settings(
    config: Mapping[str, object] | None,
    overrides: Mapping[str, object],
    results_dir: str | Path | None,
    default_dir: Path,
) -> dict[str, object]:
    """Merge ``config`` and keyword ``overrides``, check the keys, resolve ``results-dir``."""
    settings = dict(config or {}) | {k.replace("_", "-"): v for k, v in overrides.items()}
    for key in settings:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else \
                "; see docs/configuration.md"
            raise ValueError(f"unknown run-config key '{key}'{hint}")
    RunConfig(settings)  # a wrong type or range fails here, before Flower starts
    # An absolute path: the ServerApp process does not run in our folder.
    chosen = results_dir or settings.get("results-dir") or default_dir
    settings["results-dir"] = str(Path(str(chosen)).expanduser().resolve())
    return settings


def _builtin_datasets() -> list[str]:
    from ..data.datasets import BUILTIN_DATASETS

    return list(BUILTIN_DATASETS)


def _require_known(kind: str, given: Sequence[str], known: Sequence[str] | Mapping) -> None:
    if not given:
        raise ValueError(f"no {kind} given; choose from {', '.join(known)}")
    unknown = [name for name in given if name not in known]
    if unknown:
        raise ValueError(f"unknown {kind} '{unknown[0]}'; choose from {', '.join(known)}")


# ----------------------------------------------------------------- progress
class _Phases:
    """Follow runs on a ``rich`` progress line.

    The line shows the phase of the current run (from its ``[align]``,
    ``[embed]``, ``[learn]`` and ``[report]`` lines) and, over several runs,
    a bar.
    """

    def __init__(self, display: Any | None, task: int | None) -> None:
        self._display, self._task = display, task
        self._label, self._runs = "", 0

    def start(self, label: str) -> None:
        """Begin the next run, called ``label``; the one before it is done."""
        if self._display is not None and self._runs:
            self._display.advance(self._task)
        self._runs += 1
        self._label = label
        self._show("starting Flower")

    def line(self, line: str) -> None:
        """Show the phase of one line of the run's output, if it names one."""
        match = _PHASE.search(_ANSI.sub("", line))
        if match:
            self._show(f"{match[1]}: {match[2]}".rstrip(": "))

    def done(self) -> None:
        """Mark every run done."""
        if self._display is not None:
            task = self._display.tasks[self._task]
            self._display.update(self._task, completed=task.total or 1,
                                 total=task.total or 1,
                                 description=f"{self._label} · done".ljust(_WIDTH))

    def _show(self, text: str) -> None:
        if self._display is not None:
            # A fixed width keeps the bar in place while the phases change.
            line = f"{self._label} · {text}"
            line = line if len(line) <= _WIDTH else line[:_WIDTH - 1] + "…"
            self._display.update(self._task, description=line.ljust(_WIDTH))


@contextmanager
def _phases(enabled: bool, total: int | None = None) -> Iterator[_Phases]:
    """Yield a :class:`_Phases` drawing on stderr (a silent one if not ``enabled``)."""
    if not enabled:
        yield _Phases(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as display:
        task = display.add_task("starting", total=total)
        shown = _Phases(display, task)
        yield shown
        shown.done()  # not reached when a run fails: its line stays as it was

