"""The typed run config: one declaration of every key, kept equal to pyproject and the docs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vfl_embed.config import KEYS, REDACTED, ConfigError, RunConfig, markdown

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_key_with_its_default():
    app_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
        "config"]
    assert app_config == {name: key.default for name, key in KEYS.items()}


def test_the_configuration_reference_is_generated_from_the_keys():
    # Stale when a key changes: regenerate with `python -m vfl_embed.config`.
    assert (ROOT / "docs" / "configuration.md").read_text() == markdown()


def test_values_are_typed_and_defaults_filled():
    config = RunConfig({"latent-dim": 8, "learning-rate": 1, "faults": "peer-1=crash"})
    assert config["latent-dim"] == 8 and config["seed"] == 42
    assert config["learning-rate"] == 1.0 and isinstance(config["learning-rate"], float)
    assert config["faults"] == "peer-1=crash"  # another app's key passes through


@pytest.mark.parametrize(("values", "message"), [
    ({"latent-dim": "8"}, "run config 'latent-dim' must be an integer, got str '8'"),
    ({"latent-dim": True}, "run config 'latent-dim' must be an integer"),
    ({"latent-dim": 0}, r"run config 'latent-dim' must be in \[1, 4096\], got 0"),
    ({"audit": "yes"}, "run config 'audit' must be true or false"),
    ({"model": "forest"}, "run config 'model' must be one of xgboost, logistic, ridge, mlp"),
    ({"latent-bits": 64}, "run config 'latent-bits' must be one of 32, 16, got 64"),
    ({"timeout": float("nan")}, "run config 'timeout' must be finite"),
])
def test_a_bad_value_names_its_key(values, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(values)


def test_secrets_are_redacted_and_sides_partition_the_keys():
    config = RunConfig({"alignment-secret": "a-secret-nobody-may-read"})
    assert config.redacted()["alignment-secret"] == REDACTED
    assert "a-secret-nobody-may-read" not in str(config.redacted())
    sides = [set(config.side(side)) for side in ("server", "peers", "simulation")]
    assert set.union(*sides) == set(KEYS)
    assert sum(map(len, sides)) == len(KEYS)
    assert "latent-dim" in sides[1] and "alignment-secret" not in sides[1]
