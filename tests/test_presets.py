"""Privacy presets: what each fixes, how it meets explicit keys, what reports say."""

from __future__ import annotations

import pytest

from vfl_embed.config import ConfigError, RunConfig
from vfl_embed.privacy.presets import PRESETS, release_verdict


def test_custom_keeps_the_keys_as_set():
    config = RunConfig({"latent-dim": 12})
    assert config["privacy"] == "custom" and config["latent-dim"] == 12


@pytest.mark.parametrize("preset", ["off", "standard", "strong"])
def test_a_preset_fixes_its_keys(preset):
    config = RunConfig({"privacy": preset})
    assert {key: config[key] for key in PRESETS[preset]} == PRESETS[preset]


def test_the_strong_preset_releases_predictions_and_sends_labels():
    config = RunConfig({"privacy": "strong"})
    assert config["encoder"] == "prediction"
    assert config.side("peers")["encoder"] == "prediction"  # what the peers are sent


def test_a_preset_refuses_a_key_it_fixes_to_another_value():
    with pytest.raises(ConfigError, match=r"'privacy' = 'standard' fixes latent-dim; leave "
                                          r"them at their defaults, or set privacy = "
                                          r"'custom'"):
        RunConfig({"privacy": "standard", "latent-dim": 16})
    # Its own value, or the key's default, is no conflict.
    assert RunConfig({"privacy": "standard", "latent-dim": 8})["latent-dim"] == 8
    assert RunConfig({"privacy": "standard", "latent-dim": 32})["latent-dim"] == 8


def test_the_verdict_says_plainly_when_a_release_is_invertible():
    privacy = {"peer-0": {"attack_r2": 0.31, "leak_fraction": 0.1},
               "peer-1": {"attack_r2": 0.997, "leak_fraction": 0.1}}
    assert release_verdict(privacy) == ("The release is invertible: with 10% of its rows "
                                        "leaked, the audit recovers peer-1's columns at "
                                        "R² 0.997.")
    privacy["peer-1"]["attack_r2"] = 0.28
    assert release_verdict(privacy).startswith("The audit's strongest attack, with 10% of "
                                               "a peer's rows leaked, recovers peer-0's")
    assert release_verdict({"peer-0": {}}) == "The release was not audited."
