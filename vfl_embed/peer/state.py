"""What a peer keeps of a training run: its fitted preprocessing and encoder.

A peer saves its state at the end of the embed phase, under its own state
directory, keyed by the Flower run ID of the training run::

    <state-dir>/<peer name>/run-<run id>/state.json        preprocessing, settings
    <state-dir>/<peer name>/run-<run id>/autoencoder.keras  the fitted autoencoder
    <state-dir>/<peer name>/run-<run id>/bottleneck.keras   or information bottleneck
    <state-dir>/<peer name>/run-<run id>/predictor*.json    or the prediction release
    <state-dir>/<peer name>/run-<run id>/anonymizer.json    and its release mode's
                                                            anonymizer, if any

A later prediction run names that run ID; the peer reloads the state and
encodes new rows with it, without refitting. Nothing here ever leaves the
peer: the server only receives latents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PeerDataError
from ..privacy.anonymizers import load_anonymizer
from ..version import __version__
from .anonymization import Anonymizer
from .autoencoder import Autoencoder, IdentityEncoder
from .bottleneck import InformationBottleneck
from .predictor import CrossFittedPredictor
from .preprocessing import Preprocessor

__all__ = ["PeerState"]

STATE_FILE = "state.json"
ENCODER_FILE = "autoencoder.keras"
BOTTLENECK_FILE = "bottleneck.keras"


@dataclass
class PeerState:
    """A peer's fitted preprocessing and encoder from one training run.

    Attributes
    ----------
    peer : str
        The peer's name.
    run_id : int
        The Flower run ID of the training run.
    preprocessor : Preprocessor
        The fitted preprocessing of the peer's columns.
    encoder : Autoencoder | CrossFittedPredictor | IdentityEncoder
        The fitted encoder (``IdentityEncoder`` for the raw-column baseline,
        ``CrossFittedPredictor`` for the prediction release, an
        ``InformationBottleneck``, itself an ``Autoencoder``).
    release : dict[str, float]
        The differential-privacy settings of the released latents (empty
        when none), so that a prediction run releases rows alike.
    anonymizer : KSame | ConditionalVAESampler | None (default: None)
        The fitted anonymizer of the release mode (None for ``latent``; see
        :mod:`vfl_embed.peer.anonymization`).
    """

    peer: str
    run_id: int
    preprocessor: Preprocessor
    encoder: Autoencoder | CrossFittedPredictor | IdentityEncoder
    release: dict[str, float] = field(default_factory=dict)
    anonymizer: Anonymizer | None = None

    @staticmethod
    def directory(root: str | Path, peer: str, run_id: int) -> Path:
        """Return the state directory of ``peer`` for training run ``run_id``."""
        return Path(root).expanduser().resolve() / peer / f"run-{run_id}"

    @property
    def latent_dim(self) -> int:
        """Width of the latents this state produces."""
        if isinstance(self.encoder, Autoencoder | CrossFittedPredictor):
            return self.encoder.latent_dim
        return len(self.preprocessor.feature_names_)

    @property
    def release_mode(self) -> str:
        """The run-config ``release-mode`` of the training run."""
        return "latent" if self.anonymizer is None else self.anonymizer.kind

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode the rows of ``frame`` (the peer's feature columns) to latents."""
        return self.encoder.transform(self.preprocessor.transform(frame))

    def save(self, root: str | Path) -> Path:
        """Write the state under ``root``; return its directory."""
        directory = self.directory(root, self.peer, self.run_id)
        directory.mkdir(parents=True, exist_ok=True)
        kind = _KIND_OF.get(type(self.encoder), "none")
        if kind == "autoencoder":
            self.encoder.save(directory / ENCODER_FILE)
        elif kind == "bottleneck":
            self.encoder.save(directory / BOTTLENECK_FILE)
        elif kind == "prediction":
            self.encoder.save(directory)
        if self.anonymizer is not None:
            self.anonymizer.save(directory)
        state = {
            "peer": self.peer,
            "run_id": str(self.run_id),
            "encoder": kind,
            "latent_dim": self.latent_dim,
            "preprocessor": self.preprocessor.get_state(),
            "release": self.release,
            "release_mode": self.release_mode,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "vfl_embed_version": __version__,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=1))
        return directory

    @classmethod
    def load(
        cls, root: str | Path, peer: str, run_id: int, source: str | Path | None = None
    ) -> PeerState:
        """Read the state ``peer`` saved for training run ``run_id`` under ``root``.

        Raises :class:`~vfl_embed.errors.PeerDataError` naming the directory if
        there is none, or if it is unreadable.
        """
        directory = cls.directory(root, peer, run_id)
        path = directory / STATE_FILE
        if not path.is_file():
            raise PeerDataError(
                f"{peer}: no saved encoder of training run {run_id} in '{directory}'; "
                "name a training run this peer took part in, with the same state-dir"
            )
        try:
            state = json.loads(path.read_text())
            preprocessor = Preprocessor.from_state(state["preprocessor"], peer, source)
            encoder = _load_encoder(state["encoder"], directory)
            release = {str(k): float(v) for k, v in state.get("release", {}).items()}
            anonymizer = (None if state.get("release_mode", "latent") == "latent"
                          else load_anonymizer(directory))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise PeerDataError(f"{peer}: the saved state in '{directory}' is unreadable "
                                f"({type(err).__name__}); retrain") from err
        return cls(peer, run_id, preprocessor, encoder, release, anonymizer)


_KIND_OF = {Autoencoder: "autoencoder", InformationBottleneck: "bottleneck",
            CrossFittedPredictor: "prediction"}


def _load_encoder(kind: str, directory: Path) -> Autoencoder | CrossFittedPredictor | \
        IdentityEncoder:
    if kind == "autoencoder":
        return Autoencoder.load(directory / ENCODER_FILE)
    if kind == "bottleneck":
        return InformationBottleneck.load(directory / BOTTLENECK_FILE)
    if kind == "prediction":
        return CrossFittedPredictor.load(directory)
    return IdentityEncoder()
