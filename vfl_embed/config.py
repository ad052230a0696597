"""Every run-config key: its type, default, which side reads it, and its check.

The app's ``[tool.flwr.app.config]`` in ``pyproject.toml`` lists the same
keys with the same defaults (a test keeps the two equal), so that ``flwr
run --run-config 'key=value'`` can override each of them. Code reads the run
config through :class:`RunConfig`, never with its own default, and
``docs/configuration.md`` is generated from :data:`KEYS` (``python -m
vfl_embed.config``; CI fails when the file is stale).

Sides:

``server``
    Read by the ServerApp only.
``peers``
    Sent by the server to every peer in its ``train.embed`` request (the
    encoder, release and audit settings). A peer checks each against its own
    policy (:mod:`vfl_embed.peer.policy`) before using it.
``simulation``
    Read by simulated peers from the run config itself. A deployed peer
    never reads these: its own node config decides what they decide in
    simulation (data file, ID column, label column, secret).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .privacy.presets import PRESETS, preset_conflicts

__all__ = ["KEYS", "REDACTED", "ConfigError", "Key", "RunConfig", "markdown"]

SIDES = ("server", "peers", "simulation")
REDACTED = "<redacted>"


class ConfigError(ValueError):
    """A run-config value has the wrong type or is out of range; names the key."""


@dataclass(frozen=True)
class Key:
    """One run-config key.

    Attributes
    ----------
    name : str
        The key, as in ``pyproject.toml``.
    default : bool | int | float | str
        Its default; its type is the key's type (an int is accepted for a
        float key).
    side : str
        ``"server"``, ``"peers"`` or ``"simulation"`` (see the module docstring).
    group : str
        Section of ``docs/configuration.md``.
    help : str
        One or two sentences for the docs.
    choices : tuple
        The allowed values; empty allows any value of the key's type.
    low, high : float | None
        Inclusive bounds of a number; None leaves that side open.
    secret : bool
        Never written to a report or a log (shown as ``<redacted>``).
    """

    name: str
    default: bool | int | float | str
    side: str
    group: str
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    secret: bool = False

    @property
    def kind(self) -> type:
        """The Python type of the key's values."""
        return type(self.default)

    def parse(self, value: object) -> bool | int | float | str:
        """Return ``value`` as this key's type, or raise :class:`ConfigError`."""
        value = self._typed(value)
        if self.choices and value not in self.choices:
            raise ConfigError(f"run config '{self.name}' must be one of "
                              f"{', '.join(map(str, self.choices))}, got {_shown(value)}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"run config '{self.name}' must be finite, got {value}")
            if (self.low is not None and value < self.low) or (
                    self.high is not None and value > self.high):
                raise ConfigError(f"run config '{self.name}' must be in "
                                  f"{self._range()}, got {value}")
        return value

    def _typed(self, value: object) -> bool | int | float | str:
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"run config '{self.name}' must be {_KIND_NAMES[kind]}, got "
                          f"{type(value).__name__} {_shown(value)}")

    def _range(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _keys(*keys: Key) -> dict[str, Key]:
    return {key.name: key for key in keys}


KEYS: dict[str, Key] = _keys(
    # --- data -------------------------------------------------------------
    Key("dataset", "ames", "simulation", "data",
        "Built-in table the simulated peers split by columns: `ames`, `digits`, "
        "`titanic` or `breast-cancer`. Ignored when `data-paths` names files."),
    Key("peer-coverage", 0.95, "simulation", "data",
        "Share of the built-in table's entities each simulated peer holds (each "
        "draws its own).", low=0.01, high=1.0),
    Key("data-paths", "", "simulation", "data",
        "Your own peer files in simulation: one CSV or Parquet file per SuperNode, "
        "`;`-separated."),
    Key("id-column", "id", "simulation", "data",
        "ID column of `data-paths` files and of the server's `label-path` file."),
    Key("label-path", "", "server", "data",
        "A label file the server holds (ID column and `target`); needs "
        "`alignment-secret`, since the server keys its IDs like the peers do."),
    Key("target", "", "simulation", "data",
        "Label column of `label-path` or, with `label-source = \"peer\"`, of the "
        "label-holding peer's file."),
    Key("label-source", "server", "server", "data",
        "Who holds the labels: `server` (a label file or the built-in labels) or "
        "`peer` (exactly one peer's file has the label column).",
        choices=("server", "peer")),
    Key("task", "auto", "server", "data",
        "`regression`, `classification`, or `auto` (text labels, or at most 20 "
        "distinct whole numbers, are classes).",
        choices=("auto", "regression", "classification")),
    # --- alignment --------------------------------------------------------
    Key("alignment", "keyed-hash", "peers", "alignment",
        "How IDs are matched: `keyed-hash` (HMAC under a secret the peers share), "
        "`psi` (private set intersection, no shared secret) or `plain` (unkeyed "
        "hashes, simulation only).", choices=("keyed-hash", "psi", "plain")),
    Key("alignment-secret", "vfl-embed-demo-secret", "simulation", "alignment",
        "The keyed-hash secret of simulated peers and of a server label file. A "
        "deployed peer reads its own `alignment-secret-file` instead.", secret=True),
    Key("alignment-secret-file", "", "server", "alignment",
        "A file holding the server's keyed-hash secret (for a server label file or "
        "prediction IDs), read at the server, so the secret never enters the run "
        "config, the SuperLink's database or a command line.", secret=True),
    Key("test-fraction", 0.2, "server", "alignment",
        "Expected share of aligned entities held out for evaluation.",
        low=0.01, high=0.99),
    Key("min-entities", 50, "server", "alignment",
        "Fewest aligned entities the run accepts.", low=1),
    Key("num-peers", 0, "server", "alignment",
        "Peers (SuperNodes) to wait for before aligning; 0 takes those connected.",
        low=0),
    Key("min-peers", 0, "server", "alignment",
        "Fewest peers a run may finish with when some fail; 0 means every peer.",
        low=0),
    # --- peer encoder -------------------------------------------------------
    Key("encoder", "autoencoder", "peers", "encoder",
        "`autoencoder`; `prediction` (each peer releases a cross-fitted XGBoost "
        "prediction of the label from its own columns; the training labels go to "
        "the peers); `bottleneck` (a variational information bottleneck releasing "
        "one keyed sample per row, see docs/bottleneck.md); or `none` (the "
        "raw-column baseline S0, simulation only).",
        choices=("autoencoder", "prediction", "bottleneck", "none")),
    Key("latent-dim", 32, "peers", "encoder", "Width of each peer's latent.",
        low=1, high=4096),
    Key("hidden-sizes", "128", "peers", "encoder",
        "Encoder hidden widths, comma-separated; the decoder mirrors them."),
    Key("activation", "tanh", "peers", "encoder", "Hidden-layer activation.",
        choices=("tanh", "relu", "elu", "gelu", "sigmoid", "linear")),
    Key("latent-activation", "linear", "peers", "encoder", "Latent-layer activation.",
        choices=("linear", "tanh", "relu", "sigmoid")),
    Key("loss", "mse", "peers", "encoder", "Reconstruction loss.",
        choices=("mse", "mae")),
    Key("learning-rate", 0.001, "peers", "encoder", "Adam learning rate.",
        low=1e-7, high=1.0),
    Key("epochs", 200, "peers", "encoder", "Most epochs of autoencoder training.",
        low=1, high=100_000),
    Key("max-steps", 20000, "peers", "encoder",
        "Optimizer-step budget; caps the epochs on large tables.", low=1),
    Key("batch-size", 128, "peers", "encoder", "Mini-batch size.", low=1, high=1_000_000),
    Key("validation-split", 0.1, "peers", "encoder",
        "Share of training rows held out for early stopping (0 disables it).",
        low=0.0, high=0.9),
    Key("patience", 20, "peers", "encoder",
        "Epochs without validation improvement before stopping.", low=1),
    Key("supervised", False, "server", "encoder",
        "Supervised (multitask) encoders: the server sends the training labels to "
        "every peer (see `label-dp-epsilon`)."),
    Key("supervised-weight", 1.0, "peers", "encoder",
        "Weight of the supervised head's loss against reconstruction.", low=0.0),
    Key("decorrelation-weight", 0.0, "peers", "encoder",
        "Experimental: penalty on the correlation of latent units with input "
        "columns. Not a defence (see docs/privacy.md).", low=0.0),
    Key("bottleneck-beta", 0.01, "peers", "encoder",
        "Weight of the KL term of `encoder = \"bottleneck\"`: larger values "
        "release fewer nats per row.", low=0.0, high=1000.0),
    Key("bottleneck-detach-decoder", False, "peers", "encoder",
        "Supervised bottleneck only: reconstruction trains the decoder but does not "
        "shape the latent, which keeps what the label needs."),
    Key("latent-bits", 32, "peers", "encoder",
        "Float width of the released latents: 32 or 16 (half the bytes).",
        choices=(32, 16)),
    # --- privacy ------------------------------------------------------------
    Key("privacy", "custom", "peers", "privacy",
        "A named release (see docs/privacy-presets.md): `off` (32-dim latents, "
        "invertible), `standard` (8-dim latents), `strong` (each peer releases a "
        "cross-fitted prediction of the label; labels go to the peers), or `custom` "
        "(the encoder and release keys as set).",
        choices=tuple(PRESETS)),
    Key("audit", True, "peers", "privacy",
        "Each peer audits its release against inversion from leaked rows; only the "
        "figures leave it."),
    Key("audit-leak-fraction", 0.1, "peers", "privacy",
        "Share of a peer's rows the audit's attacker holds.", low=0.001, high=0.5),
    Key("release-mode", "latent", "peers", "privacy",
        "What each peer releases of its latents (see docs/anonymizers.md): "
        "`latent` (as encoded), `k-same` (each the mean of its `k-same-k` nearest "
        "training latents) or `cvae` (each a keyed sample of a conditional VAE "
        "fitted on the training latents).", choices=("latent", "k-same", "cvae")),
    Key("k-same-k", 5, "peers", "privacy",
        "Neighbours each `k-same` release averages.", low=2),
    Key("dp-noise-multiplier", 0.0, "peers", "privacy",
        "Gaussian noise on each clipped latent row, in units of the sensitivity; "
        "0 releases without noise.", low=0.0, high=1000.0),
    Key("dp-clip-norm", 1.0, "peers", "privacy",
        "L2 norm each latent row is clipped to before noise.", low=1e-6, high=1e6),
    Key("dp-delta", 0.00001, "peers", "privacy",
        "The delta of each release's (epsilon, delta).", low=1e-12, high=0.1),
    Key("label-dp-epsilon", 0.0, "server", "privacy",
        "Label differential privacy of the training labels a supervised run sends "
        "the peers: randomized response for classes, Laplace noise for numbers, at "
        "this epsilon (see docs/label-privacy.md); 0 sends them in clear.",
        low=0.0, high=100.0),
    # --- downstream ---------------------------------------------------------
    Key("model", "xgboost", "server", "downstream",
        "Downstream model: `xgboost`, `logistic` (classification), `ridge` "
        "(regression; combines `prediction` releases best) or `mlp`.",
        choices=("xgboost", "logistic", "ridge", "mlp")),
    Key("search-iterations", 0, "server", "downstream",
        "Randomized hyper-parameter search size (0: the fixed recipe).", low=0),
    # --- prediction ---------------------------------------------------------
    Key("mode", "train", "server", "prediction",
        "`train` (align, embed, learn) or `predict` (score with a training run).",
        choices=("train", "predict")),
    Key("train-run", "", "server", "prediction",
        "Predict mode: the Flower run ID of the training run to score with."),
    Key("predict-ids", "", "server", "prediction",
        "Predict mode: a file with the IDs to score (its `id-column`)."),
    Key("missing-policy", "drop", "server", "prediction",
        "Predict mode: entities a peer lacks are dropped, or its latents imputed.",
        choices=("drop", "impute")),
    # --- run ----------------------------------------------------------------
    Key("seed", 42, "peers", "run",
        "Seed of the split, the encoders and the downstream model.",
        low=-(2**63), high=2**63 - 1),
    Key("timeout", 900.0, "server", "run",
        "Seconds the server waits for the peers in each phase.", low=1.0),
    Key("results-dir", "", "server", "run",
        "Where run folders are written (default `./results`)."),
    Key("state-dir", "", "simulation", "run",
        "Where simulated peers keep their encoders (default "
        "`<results-dir>/peer-state`)."),
    Key("message-log-dir", "", "simulation", "run",
        "Simulated peers write every message they send and receive there."),
)


class RunConfig(Mapping[str, object]):
    """A run config with every key of :data:`KEYS` checked and typed, defaults filled.

    Keys this app does not know (another app's, a test's) pass through
    unchanged.

    Parameters
    ----------
    values : Mapping[str, object]
        The run config as Flower gives it, or overrides of the defaults.

    Raises
    ------
    ConfigError
        A value has the wrong type or is out of range; the message names the key.
    """

    def __init__(self, values: Mapping[str, object] | None = None) -> None:
        self._values: dict[str, object] = {k.name: k.default for k in KEYS.values()}
        for name, value in (values or {}).items():
            key = KEYS.get(name)
            self._values[name] = key.parse(value) if key else value
        self._apply_preset()

    def _apply_preset(self) -> None:
        preset = str(self._values["privacy"])
        defaults = {name: key.default for name, key in KEYS.items()}
        conflicts = preset_conflicts(preset, self._values, defaults)
        if conflicts:
            raise ConfigError(f"run config 'privacy' = '{preset}' fixes "
                              f"{', '.join(conflicts)}; leave them at their defaults, "
                              "or set privacy = 'custom'")
        self._values |= PRESETS[preset]

    def __getitem__(self, name: str) -> object:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def side(self, side: str) -> dict[str, object]:
        """Return the keys of one side (see the module docstring) with their values."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        return {name: value for name, value in self._values.items()
                if name in KEYS and KEYS[name].side == side}

    def redacted(self) -> dict[str, object]:
        """Return every value, with secret keys shown as :data:`REDACTED` (for reports)."""
        return {name: REDACTED if name in KEYS and KEYS[name].secret and value else value
                for name, value in self._values.items()}


def markdown() -> str:
    """Return ``docs/configuration.md``: every key by group, as generated from :data:`KEYS`."""
    lines = ["# Run configuration", "",
             "Generated from `vfl_embed/config.py` by `python -m vfl_embed.config`; "
             "do not edit by hand. Set any key with `flwr run . --run-config "
             "'key=value'`, `vfl-embed simulate -c key=value` or "
             "`vfl_embed.simulate(key_name=value)`. *Side* says who reads it: the "
             "`server`, the `peers` (sent in every embed request, and checked against "
             "each peer's own policy), or `simulation` (simulated peers only; a "
             "deployed peer takes these from its node config).", ""]
    groups: dict[str, list[Key]] = {}
    for key in KEYS.values():
        groups.setdefault(key.group, []).append(key)
    for group, keys in groups.items():
        lines += [f"## {group.capitalize()}", "", "| key | type | default | side | meaning |",
                  "|---|---|---|---|---|"]
        for key in keys:
            default = "(secret)" if key.secret and key.default else repr(key.default)
            meaning = key.help + (f" One of: {', '.join(map(str, key.choices))}."
                                  if key.choices and "`" not in key.help else "")
            lines.append(f"| `{key.name}` | {key.kind.__name__} | `{default}` | "
                         f"{key.side} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
