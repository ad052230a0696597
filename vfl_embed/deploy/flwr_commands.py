"""Flower's own commands as this project runs them: environment, run config, output."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROJECT_ROOT", "LocalRun", "flower_env", "format_run_config"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_REPORT_LINE = re.compile(r"\[report\] (\S+report\.json)")


@dataclass
class LocalRun:
    """One finished ``flwr run``: its exit code, output and report (if any)."""

    returncode: int
    output: str
    seconds: float
    report_path: Path | None

    @classmethod
    def from_output(cls, returncode: int, output: str, seconds: float) -> LocalRun:
        """Build a finished run; its report is the one its ``[report]`` line names."""
        match = _REPORT_LINE.search(output)
        return cls(returncode, output, seconds, Path(match.group(1)) if match else None)

    @property
    def report(self) -> dict:
        """The run's ``report.json`` as a dict."""
        if self.report_path is None:
            raise RuntimeError("the run wrote no report; its output:\n"
                               + self.output[-3000:])
        return json.loads(self.report_path.read_text())


def flower_env(flwr_home: str | Path) -> dict[str, str]:
    """Return this environment for Flower commands, with ``flwr_home`` as FLWR_HOME."""
    return os.environ | {
        # flwr starts Flower's programs from PATH: use this environment's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def format_run_config(config: Mapping[str, object]) -> str:
    """Format a dict as the value of ``flwr run --run-config``."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        parts.append(f"{key}={text}")
    return " ".join(parts)


