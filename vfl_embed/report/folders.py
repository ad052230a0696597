"""Where runs keep their reports: one folder per run under the results directory."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from ..errors import VerticalRunError

__all__ = ["results_directory", "training_run_directory"]

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


