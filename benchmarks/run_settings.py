"""What the benchmarks share about how they ran: the machine, run-config pairs, units."""

from __future__ import annotations

import os
import platform
import tomllib

MB = 1e6


def machine() -> dict:
    """Return the CPU count, Python version and platform of this machine."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def config_pairs(pairs: list[str]) -> dict:
    """Parse ``KEY=VALUE`` pairs: TOML values (``epochs=20``), else text (``model=mlp``)."""
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got '{pair}'")
        try:
            config[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            config[key.strip()] = value
    return config
