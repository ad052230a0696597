"""The ``vfl-embed`` command line: ``simulate``, ``predict``, ``paper`` and ``report``.

Each command calls the Python API (:mod:`vfl_embed.run.api`, :mod:`vfl_embed.report.charts`)
that a notebook calls; nothing here runs or draws on its own. Results go to
stdout, progress to stderr, and a wrong option or input ends with one
``Error: ...`` line and exit code 2 (a failed run: exit code 1).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import KEYS
from ..errors import RunFailedError
from ..privacy.label_dp import label_sentence
from ..report.tables import markdown
from .scenarios import DATASETS, SCENARIOS

if TYPE_CHECKING:
    from .api import RunReport

__all__ = ["app", "parse_config"]

app = typer.Typer(
    help="[bold bright_yellow]vfl-embed runs vertical federated learning on "
         "autoencoder latents as a Flower App.[/]",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# One ``key=value`` pair; a value is quoted (TOML string) or has no spaces or
# quotes, as in ``flwr run --run-config``.
_PAIR = r"""([A-Za-z0-9_.-]+)=("[^"]*"|'[^']*'|[^\s"']+)"""

ConfigOption = Annotated[list[str] | None, typer.Option(
    "--config", "-c", metavar="KEY=VALUE",
    help="Override a run-config key of pyproject.toml (repeatable; several "
         "space-separated pairs also work). Values as in `flwr run --run-config`: "
         "numbers, true/false, quoted strings; a bare word is a string.")]

VerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", help="Echo Flower's output while the run goes on.")]


def _results_dir(default: str) -> typer.models.OptionInfo:
    return typer.Option("--results-dir", file_okay=False, show_default=False,
                        help=f"Output folder (default: {default}).")


def parse_config(items: Sequence[str] | None) -> dict[str, object]:
    """Parse ``--config`` values into run-config overrides.

    Parameters
    ----------
    items : Sequence[str] | None
        Each ``key=value``, or several such pairs separated by spaces.
        Values are TOML literals (``8``, ``0.5``, ``true``, ``"a b"``); a
        bare word that is no TOML literal (``titanic``, ``128,64``) is a string.

    Returns
    -------
    dict[str, object]
        The overrides, later ones winning.

    Raises
    ------
    ValueError
        An item is not ``key=value`` pairs, or a value is not one number,
        boolean or string.
    """
    overrides: dict[str, object] = {}
    for item in items or []:
        if not re.fullmatch(rf"\s*{_PAIR}(\s+{_PAIR})*\s*", item):
            raise ValueError(f"--config '{item}' is not key=value (e.g. latent-dim=8 "
                             "or target=\"Sale_Price\")")
        for key, text in re.findall(_PAIR, item):
            overrides[key] = _config_value(key, text)
    return overrides


def _config_value(key: str, text: str) -> object:
    """Read one ``--config`` value: a TOML literal or a bare word, typed by its key."""
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if text[0] in "\"'":
            raise ValueError(f"--config {key}={text}: the quoted value is not a TOML "
                             "string") from None
        value = text  # a bare word
    if not isinstance(value, bool | int | float | str):
        if text[0] in "[{":
            raise ValueError(f"--config {key}={text}: a value is a number, true/false or "
                             "a string, not a TOML array or table")
        value = text  # a TOML date or time: keep the text the user wrote
    spec = KEYS.get(key)
    if spec is None:
        return value
    if spec.kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    elif spec.kind is str and not isinstance(value, str):
        value = text  # hidden-sizes=128 is the text "128"
    return spec.parse(value)


@contextmanager
def _errors() -> Iterator[None]:
    """End the command with one ``Error:`` line instead of a traceback."""
    try:
        yield
    except RunFailedError as err:
        reason, _, tail = str(err).partition("\n")
        typer.secho(f"Error: {reason}", err=True, fg="red")
        if err.report_path is not None:
            typer.echo(f"partial report: {err.report_path}", err=True)
        typer.secho(tail, err=True, dim=True)
        raise typer.Exit(1) from None
    except (ValueError, FileNotFoundError) as err:
        typer.secho(f"Error: {err}", err=True, fg="red")
        raise typer.Exit(2) from None
    except RuntimeError as err:  # e.g. another local SuperLink holds the ports
        typer.secho(f"Error: {err}", err=True, fg="red")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # the federation's SuperLink is stopped on the way out
        typer.secho("Error: interrupted", err=True, fg="red")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vfl-embed {version('vfl-embed')} (Flower {version('flwr')})")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[bool, typer.Option(
        "--version", "-V", is_eager=True, callback=_version,
        help="Show the version and exit.")] = False,
) -> None:
    """Show the version, or run one of the commands."""


@app.command()
def simulate(
    dataset: Annotated[str, typer.Option(
        "--dataset", "-d", help=f"Built-in table: {', '.join(DATASETS)}.")] = "ames",
    peers: Annotated[int, typer.Option(
        "--peers", "-n", help="Simulated SuperNodes (peers), each with a share of "
                              "the columns.")] = 3,
    scenario: Annotated[str, typer.Option(
        "--scenario", "-s", help="The paper's scenario: "
        + "; ".join(f"{k} {v.title}" for k, v in SCENARIOS.items())
        + " (S1 and S3 run one SuperNode).")] = "S2",
    model: Annotated[str | None, typer.Option(
        "--model", "-m", show_default=False,
        help="Downstream model: xgboost, logistic, ridge or mlp (default: the app's, "
             "xgboost).")] = None,
    results_dir: Annotated[Path | None, _results_dir("./results")] = None,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Run the app once on a local simulation federation.

    The run is a real `flwr run` with one simulated SuperNode per peer. It
    prints the held-out metrics and the path of its report.json; the same
    command gives the same numbers (seed 42 unless --config seed=...).

    Examples:
      vfl-embed simulate --dataset digits --peers 5 --model logistic
      vfl-embed simulate -d titanic -s S4 -c latent-dim=8 -c hidden-sizes=64,32
      vfl-embed simulate -d ames -s S0 -c 'seed=7 test-fraction=0.3' --verbose
    """
    with _errors():
        overrides = parse_config(config) | ({"model": model} if model else {})
        from .api import simulate as run

        report = run(dataset, peers, scenario, results_dir=results_dir, config=overrides,
                     progress=True, echo=verbose)
    _print_run(report)


def _print_run(report: RunReport) -> None:
    from rich.console import Console
    from rich.table import Column, Table

    raw, entities = report.raw, report.entities
    typer.echo(f"{report.task} with {raw.get('model')} on {len(raw.get('peers', {}))} "
               f"peers: {entities.get('aligned')} aligned entities "
               f"({entities.get('train')} train, {entities.get('held_out')} held out)")
    table = Table("metric", Column("held-out", justify="right"),
                  Column("train", justify="right"))
    for name, value in report.metrics.items():
        table.add_row(name, f"{value:.4f}", f"{report.train_metrics.get(name, 0):.4f}")
    Console().print(table)
    for name, reason in report.dropped_peers.items():
        typer.echo(f"finished without {name}: {reason}")
    if "release_verdict" in raw:
        typer.echo(f"privacy preset {raw['privacy_preset']}: {raw['release_verdict']}")
    if raw.get("label_privacy"):
        typer.echo(f"training labels: {label_sentence(raw['label_privacy'])}")
    # typer.echo, not rich: a long path must not be wrapped.
    typer.echo(f"report: {report.path / 'report.json'}")


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(
        metavar="TRAINING_RUN", show_default=False,
        help="The training run's directory or its report.json.")],
    ids: Annotated[Path | None, typer.Option(
        "--ids", "-i", dir_okay=False, show_default=False,
        help="CSV/Parquet file whose id-column lists the entities to score "
             "(default: every ID of the label file or built-in dataset).")] = None,
    missing_policy: Annotated[str, typer.Option(
        "--missing-policy", help="Entities some peer lacks: drop, or impute that "
                                 "peer's latents.")] = "drop",
    verbose: VerboseOption = False,
) -> None:
    """Score entities with a simulated training run's saved encoders and model.

    A second `flwr run` (mode=predict) on the same simulated peers: each peer
    encodes the requested rows with its frozen encoder of that run, and the
    server applies the saved model. Prints the counts and the path of
    predictions.csv.

    Examples:
      vfl-embed predict "$(ls -d results/digits-* | tail -n 1)"
      vfl-embed predict results/ames-20261123T101500-run123 --ids new.csv
      vfl-embed predict RUN_DIR --ids new.csv --missing-policy impute
    """
    with _errors():
        if missing_policy not in ("drop", "impute"):
            raise ValueError(f"--missing-policy must be drop or impute, got "
                             f"'{missing_policy}'")
        from .api import predict as run

        report = run(run_dir, ids, missing_policy=missing_policy, progress=True,
                     echo=verbose)
    counts = report.entities
    typer.echo(f"scored {counts['scored']} of {counts['requested']} entities with the "
               f"model of run {report.raw['train_run']} ({counts['imputed']} with imputed "
               f"latents, {counts['not_scored']} not scored)")
    typer.echo(f"predictions: {report.path / 'predictions.csv'}")


@app.command()
def paper(
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", "-d", show_default=False,
        help=f"Built-in table (repeatable; default: {', '.join(DATASETS)}).")] = None,
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", "-s", show_default=False,
        help=f"Scenario (repeatable; default: {', '.join(SCENARIOS)}).")] = None,
    results_dir: Annotated[Path | None, _results_dir("./results/scenarios")] = None,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Reproduce the paper's scenarios S0-S4 on the built-in tables.

    Every scenario is one `flwr run`, all with peer-coverage=1.0 so that the
    scenarios of a dataset share one entity set and split. Writes
    scenarios.json, scenarios.md and scenarios.png, and each run's report
    under runs/.

    Examples:
      vfl-embed paper
      vfl-embed paper --dataset ames --scenario S0 --scenario S2
      vfl-embed paper -d digits -c epochs=50 --results-dir /tmp/scenarios
    """
    with _errors():
        overrides = parse_config(config)
        from .api import paper as run

        frame = run(dataset or list(DATASETS), scenario or list(SCENARIOS),
                    results_dir=results_dir, config=overrides, progress=True,
                    echo=verbose)
    files = frame.attrs["files"]
    # The Markdown table, as in scenarios.md: ready to paste, never wrapped.
    typer.echo(markdown(json.loads(files["json"].read_text())))
    for kind, path in files.items():
        typer.echo(f"{kind}: {path}")


@app.command()
def report(
    source: Annotated[Path, typer.Argument(
        metavar="RUN_DIR_OR_REPORT_JSON", show_default=False,
        help="A run directory, its report.json, or a paper scenarios.json.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", file_okay=False, show_default=False,
        help="Folder for the Markdown and PNG files (default: beside the report).")]
    = None,
) -> None:
    """Render a report as Markdown and PNG charts and print their paths.

    RUN_DIR_OR_REPORT_JSON is a run directory, its report.json, or a paper
    scenarios.json. For a run: held-out predictions (scatter or confusion
    matrix), the representation error per peer, a 2-D projection of the
    joined latents and the privacy audit, where the report has them
    (charts.md and chart-*.png). For a paper scenarios.json: the metric
    per scenario (scenarios.md, scenarios.png).

    Examples:
      vfl-embed report "$(ls -d results/digits-* | tail -n 1)"
      vfl-embed report results/scenarios/scenarios.json --out /tmp/charts
    """
    with _errors():
        from ..report.charts import render_report

        paths = render_report(source, out)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")
