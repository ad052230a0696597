"""One peer's side of a run: its table, its pseudonyms, its encoder.

A :class:`Peer` is built from a Flower ``Context`` (see :func:`peer_from_context`)
or directly from a :class:`~vfl_embed.data.tables.PeerTable`. Only pseudonyms,
latents, metrics and (on the label-holding peer) labels of aligned rows come
out of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.common.logger import log

from ..data.tables import PeerTable
from ..errors import PeerDataError
from ..wire.alignment import KeyedHashAlignment, PlainAlignment
from ..wire.protocol import PRIVACY_PREFIX
from ..wire.psi import PsiAlignment
from .anonymization import anonymize, fit_anonymizer
from .autoencoder import Autoencoder, IdentityEncoder, representation_metrics
from .bottleneck import InformationBottleneck
from .policy import PeerPolicy
from .predictor import CrossFittedPredictor
from .preprocessing import Preprocessor
from .release import LatentRelease, audit_figures, bottleneck_release, label_floor_figures
from .requests import check_in_range
from .state import PeerState

__all__ = ["Peer"]

# Run-config key -> (Autoencoder parameter, type); absent keys keep its defaults.
_ENCODER_PARAMS = {
    "latent-dim": ("latent_dim", int),
    "activation": ("activation", str),
    "latent-activation": ("latent_activation", str),
    "loss": ("loss", str),
    "learning-rate": ("learning_rate", float),
    "epochs": ("epochs", int),
    "max-steps": ("max_steps", int),
    "batch-size": ("batch_size", int),
    "validation-split": ("validation_split", float),
    "patience": ("patience", int),
    "supervised-weight": ("supervised_weight", float),
    "decorrelation-weight": ("decorrelation_weight", float),
}


class Peer:
    """The work one peer does for the strategy.

    Parameters
    ----------
    table : PeerTable
        The peer's rows.
    alignment : KeyedHashAlignment | PsiAlignment | PlainAlignment
        How the peer turns its IDs into pseudonyms (see
        :func:`~vfl_embed.peer.secret.make_alignment`).
    simulated : bool (default: False)
        True in simulation; only then may the raw-column baseline encoder
        (``encoder = "none"``) be used.
    state_dir : str | Path | None (default: None)
        Where the peer keeps its fitted preprocessing and encoder of each
        training run (see :mod:`vfl_embed.peer.state`); None keeps nothing.
    policy : PeerPolicy | None (default: None)
        The limits the peer puts on requests (see :mod:`vfl_embed.peer.policy`);
        None takes the defaults of a simulated or deployed peer.
    secret : Callable[[], bytes] | None (default: None)
        Returns the peer's own secret, which keys its differential-privacy
        noise and its CVAE samples (see
        :func:`~vfl_embed.peer.secret.peer_secret`); called only for a noised
        or CVAE-sampled release.
    """

    def __init__(
        self,
        table: PeerTable,
        alignment: KeyedHashAlignment | PsiAlignment | PlainAlignment,
        simulated: bool = False,
        state_dir: str | Path | None = None,
        secret: Callable[[], bytes] | None = None,
        policy: PeerPolicy | None = None,
    ) -> None:
        self.table = table
        self.policy = policy or PeerPolicy.defaults(simulated=simulated)
        self.alignment = alignment
        self.simulated = simulated
        self.state_dir = state_dir
        self._secret = secret

    @property
    def name(self) -> str:
        """The peer's name, used in every message and error."""
        return self.table.peer

    def pseudonyms(self) -> np.ndarray:
        """Pseudonyms of the peer's IDs, in its row order.

        Under private set intersection these are the IDs hashed to the group
        and blinded with the peer's scalar: the ring's first round.
        """
        return self.alignment.pseudonymize(self.table.ids)

    def blind(self, points: np.ndarray) -> np.ndarray:
        """Blind another peer's group elements with this peer's scalar (PSI only)."""
        if not isinstance(self.alignment, PsiAlignment):
            raise PeerDataError(f"{self.name}: asked to blind points, but the run's "
                                "alignment is not 'psi'")
        try:
            return self.alignment.blind(points)
        except ValueError as err:
            raise PeerDataError(f"{self.name}: the server sent points it cannot blind: "
                                f"{err}") from err

    def labels(self, positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Labels of the aligned rows; string labels become class codes."""
        if self.table.labels is None:
            raise PeerDataError(f"{self.name}: holds no label column")
        values = self._select(positions, self.table.labels)
        if pd.api.types.is_numeric_dtype(values):
            if values.isna().any():
                raise PeerDataError(
                    f"{self.name}: label missing for {int(values.isna().sum())} "
                    "aligned rows"
                )
            return values.to_numpy(dtype=np.float64), []
        classes = sorted(values.dropna().astype(str).unique())
        codes = pd.Categorical(values.astype(str), categories=classes).codes
        if (codes < 0).any() or values.isna().any():
            raise PeerDataError(f"{self.name}: label missing for some aligned rows")
        return codes.astype(np.float64), classes

    def embed(
        self,
        positions: np.ndarray,
        is_test: np.ndarray,
        config: Mapping[str, object],
        train_targets: np.ndarray | None = None,
        run_id: int | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Fit on the aligned training rows and encode all aligned rows.

        Returns the released latents in the server's order (clipped and
        noised if ``config`` asks for differential privacy) and the metrics:
        the representation metrics on held-out rows (see
        :func:`~vfl_embed.peer.autoencoder.representation_metrics`), sizes, time
        and the privacy figures (the reconstruction-attack audit of the
        released latents and the release's epsilon, prefixed ``privacy/``).
        A ``release-mode`` other than ``latent`` anonymizes the latents first
        (see :mod:`~vfl_embed.peer.anonymization`). With a ``state_dir`` and
        the training ``run_id``, the fitted state is
        saved for :meth:`encode`.
        """
        started = time.perf_counter()
        frame = self.features(positions)
        train = ~is_test
        preprocessor = Preprocessor(peer=self.name, source=self.table.source).fit(
            frame[train])
        x = preprocessor.transform(frame)
        encoder = self._encoder(config, train_targets)
        self._check_policy(encoder, config, x.shape[1], int(train.sum()),
                           train_targets is not None)
        if getattr(encoder, "latent_dim", 0) >= x.shape[1]:
            log(WARNING, "%s: latent-dim %d >= its %d encoded features: the latent "
                "does not compress and may be invertible", self.name,
                encoder.latent_dim, x.shape[1])
        encoder.fit(x[train], train_targets)
        seed = _peer_seed(int(config.get("seed", 42)), self.name)
        ids = self.table.ids[positions]
        values, privacy = self._released(encoder, x, train, ids, run_id or 0)
        anonymizer = fit_anonymizer(config, values[train], train_targets, seed, self.name)
        release = LatentRelease(config, self._secret, run_id or 0)
        latents, figures = release.apply(
            anonymize(anonymizer, values, ids, self._secret, run_id or 0, self.name),
            ids, self.name)
        privacy |= figures
        privacy |= audit_figures(x, latents.astype(np.float32, copy=False), preprocessor,
                                 encoder, config, seed, self.name)
        if train_targets is not None:
            privacy |= label_floor_figures(
                x[train], train_targets, preprocessor, config, seed, self.name,
                categorical=str(config.get("task", "")) == "classification")
        if self.state_dir is not None and run_id is not None:
            self._save(PeerState(self.name, run_id, preprocessor, encoder,
                                 release.settings(), anonymizer))
        metrics = {} if isinstance(encoder, CrossFittedPredictor) else \
            _representation(encoder, preprocessor, x[is_test] if is_test.any() else x[train])
        metrics |= {
            "n-columns": float(self.table.features.shape[1]),
            "n-encoded-features": float(x.shape[1]),
            "latent-dim": float(latents.shape[1]),
            "epochs-run": float(getattr(encoder, "epochs_run_", 0)),
            "fit-seconds": time.perf_counter() - started,
        } | {PRIVACY_PREFIX + key: value for key, value in privacy.items()}
        return latents, metrics

    def _check_policy(self, encoder: Autoencoder | CrossFittedPredictor | IdentityEncoder,
                      config: Mapping[str, object], n_features: int, n_train: int,
                      supervised: bool) -> None:
        raw = isinstance(encoder, IdentityEncoder)
        self.policy.check_embed(
            config, peer=self.name, supervised=supervised, n_features=n_features,
            latent_dim=n_features if raw else encoder.latent_dim,
            n_weights=0 if raw else encoder.n_weights(n_features),
            n_steps=0 if raw else encoder.n_steps(n_train))

    def _save(self, state: PeerState) -> None:
        try:
            saved = state.save(self.state_dir)
        except OSError as err:
            raise PeerDataError(
                f"{self.name}: cannot keep its encoder in '{self.state_dir}' "
                f"({err.strerror or type(err).__name__}); set the node config "
                "'state-dir' to a directory this SuperNode can write"
            ) from err
        log(INFO, "%s: encoder of run %d saved in %s", self.name, state.run_id, saved)

    def encode(
        self, positions: np.ndarray, train_run: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Encode rows with the frozen state of training run ``train_run``.

        Returns the latents of the rows at ``positions`` (into the peer's
        pseudonyms), in that order, and sizes and time as metrics.
        """
        started = time.perf_counter()
        if self.state_dir is None:
            raise PeerDataError(f"{self.name}: keeps no encoder state (no state-dir)")
        state = PeerState.load(self.state_dir, self.name, train_run, self.table.source)
        ids = self.table.ids[positions]
        values, _ = self._released(
            state.encoder, state.preprocessor.transform(self.features(positions)), None,
            ids, train_run)
        latents = anonymize(state.anonymizer, values, ids, self._secret, train_run, self.name)
        latents, _ = LatentRelease(state.release, self._secret, train_run).apply(
            latents, ids, self.name)
        return latents, {"rows": float(len(latents)),
                         "encode-seconds": time.perf_counter() - started}

    def _released(self, encoder: Autoencoder | CrossFittedPredictor | IdentityEncoder,
                  x: np.ndarray, train: np.ndarray | None, ids: np.ndarray,
                  run_id: int) -> tuple[np.ndarray, dict[str, float]]:
        """Return the values released for the rows of ``x``, and their figures.

        They go through the :class:`LatentRelease` next; ``train`` is None in
        a prediction run.
        """
        # A prediction release gives training rows their out-of-fold values.
        if isinstance(encoder, CrossFittedPredictor) and train is not None:
            return encoder.release(x, train), {}
        if isinstance(encoder, InformationBottleneck):
            return bottleneck_release(encoder, x, ids, self._secret, run_id, self.name)
        return encoder.transform(x), {}

    def features(self, positions: np.ndarray) -> pd.DataFrame:
        """Return the feature rows at ``positions`` (validated server positions)."""
        return self._select(positions, self.table.features)

    def _select(self, positions: np.ndarray, values: pd.DataFrame | pd.Series):  # noqa: ANN202
        check_in_range(positions, len(self.table), self.name)
        return values.iloc[positions].reset_index(drop=True)

    def _encoder(
        self, config: Mapping[str, object], train_targets: np.ndarray | None
    ) -> Autoencoder | CrossFittedPredictor | IdentityEncoder:
        kind = str(config.get("encoder", "autoencoder"))
        if kind == "none":
            if not self.simulated:
                raise PeerDataError(
                    f"{self.name}: encoder 'none' would share raw columns; it is "
                    "only allowed in simulation"
                )
            return IdentityEncoder()
        seed = _peer_seed(int(config.get("seed", 42)), self.name)
        if kind == "prediction":
            if train_targets is None:
                raise PeerDataError(f"{self.name}: the prediction release needs the "
                                    "training labels, which the request lacks")
            task = str(config.get("task", ""))
            classes = int(train_targets.max()) + 1 if task == "classification" else 0
            return CrossFittedPredictor(task=task, n_classes=classes, seed=seed)
        if kind not in ("autoencoder", "bottleneck"):
            raise PeerDataError(f"{self.name}: unknown encoder '{kind}'")
        kwargs = {attr: cast(config[key]) for key, (attr, cast) in _ENCODER_PARAMS.items()
                  if key in config}
        if "hidden-sizes" in config:
            kwargs["hidden_sizes"] = tuple(
                int(h) for h in str(config["hidden-sizes"]).split(",") if h.strip())
        task = str(config.get("task", "")) if train_targets is not None else ""
        if kind == "bottleneck":
            return InformationBottleneck(
                beta=float(config.get("bottleneck-beta", 0.01)), task=task, seed=seed,
                detach_decoder=bool(config.get("bottleneck-detach-decoder", False)),
                **kwargs)
        return Autoencoder(task=task, seed=seed, **kwargs)


def _representation(encoder: Autoencoder | IdentityEncoder, preprocessor: Preprocessor,
                    test_x: np.ndarray) -> dict[str, float]:
    reconstruction = encoder.reconstruct(test_x)
    return representation_metrics(
        test_x, reconstruction, preprocessor.numeric_to_original(test_x),
        preprocessor.numeric_to_original(reconstruction),
        preprocessor.stds_.to_numpy(), preprocessor.categorical_blocks())


def _peer_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)
