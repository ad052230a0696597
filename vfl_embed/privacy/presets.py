"""Named privacy presets: one run-config key, ``privacy``, for a measured release.

A preset fixes the run-config keys of a release mechanism. ``custom`` fixes
none: the keys are used as set. Any other preset refuses a run config that
sets one of its keys to a third value (neither the key's default nor the
preset's), so a preset never silently overrides what a user asked for.

The figures are means over seeds from ``simulations/frontier.py`` and the
privacy sweep (``docs/privacy-presets.md`` gives each preset's cost, attack,
label floor and what it sends where).

- ``off``: the individual autoencoders with 32-dim latents, today's default.
  Its release is invertible: with 10 % of a peer's rows leaked, the audit
  recovers the Ames columns at R² 0.997.
- ``standard``: 8-dim latents, no labels to the peers. It cuts the attack
  only a little (Ames 0.91) at a cost of about 0.02 in the metric.
- ``strong``: each peer releases a cross-fitted prediction of the label from
  its own columns (stacking); the training labels go to the peers in clear
  unless ``label-dp-epsilon`` is set. Ames (5 seeds): gap 0.022 to S0 (0.016
  with ``model = "ridge"``) and attack 0.275, against a label floor of 0.219.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["INVERTIBLE_R2", "PRESETS", "SENDS_LABELS", "preset_conflicts", "release_verdict"]

PRESETS: dict[str, dict[str, object]] = {
    "custom": {},
    "off": {"encoder": "autoencoder", "latent-dim": 32},
    "standard": {"encoder": "autoencoder", "latent-dim": 8},
    "strong": {"encoder": "prediction"},
}
# The presets whose peers train on the label holder's labels.
SENDS_LABELS = frozenset({"strong"})


def preset_conflicts(
    preset: str, values: Mapping[str, object], defaults: Mapping[str, object]
) -> list[str]:
    """Return the keys ``values`` sets to neither their default nor ``preset``'s value."""
    return [key for key, fixed in PRESETS[preset].items()
            if key in values and values[key] not in (fixed, defaults[key])]


# A release from which the audit's strongest attack recovers at least this
# share of a peer's column variance is called invertible in reports.
INVERTIBLE_R2 = 0.5


def release_verdict(privacy: Mapping[str, Mapping[str, float]]) -> str:
    """Return one plain sentence on whether the audited release is invertible.

    ``privacy`` maps each peer to its audit figures (``attack_r2`` and
    ``leak_fraction``); a run without the audit says so.
    """
    audited = {peer: f for peer, f in privacy.items() if "attack_r2" in f}
    if not audited:
        return "The release was not audited."
    peer, figures = max(audited.items(), key=lambda item: item[1]["attack_r2"])
    attack, leak = figures["attack_r2"], figures.get("leak_fraction", float("nan"))
    if attack >= INVERTIBLE_R2:
        return (f"The release is invertible: with {leak:.0%} of its rows leaked, the "
                f"audit recovers {peer}'s columns at R² {attack:.3f}.")
    return (f"The audit's strongest attack, with {leak:.0%} of a peer's rows leaked, "
            f"recovers {peer}'s columns at R² {attack:.3f}.")
