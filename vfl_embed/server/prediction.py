"""Predict for new entities through the federation that trained a model.

A prediction run names a finished training run. The server loads that run's
downstream model; it keys the entities to score like the peers key their IDs
and asks every peer of the training run for its pseudonyms, then for the
latents of the requested rows it holds. Each peer encodes those rows with
its frozen preprocessing and encoder of that run (no refitting), so an
entity gets the latents, and the prediction, that training gave it.

Entities a peer lacks follow ``missing_policy``: ``"drop"`` scores only the
entities every peer holds; ``"impute"`` fills a missing peer's latent block
with its conditional mean given the blocks present, under a Gaussian fitted
to the training run's joined latents, and scores every entity at least one
peer holds. Either way the result counts them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from ..errors import VerticalRunError
from ..wire import protocol
from ..wire.alignment import locate
from .downstream import DownstreamModel
from .exchange import exchange_all, wait_for_nodes

__all__ = ["MISSING_POLICIES", "PredictionResult", "TrainedFederation",
           "VerticalPrediction", "impute_missing"]

MISSING_POLICIES = ("drop", "impute")
MOMENTS_FILE = "latent_moments.npz"


@dataclass(frozen=True)
class TrainedFederation:
    """What the server kept of a finished training run.

    Attributes
    ----------
    run_id : int
        The training run's Flower run ID.
    directory : Path
        Its results directory (``report.json``, the model, the moments).
    task : str
        ``"regression"`` or ``"classification"``.
    classes : list[str]
        Class names (classification), in the model's class-code order.
    model : DownstreamModel
        The downstream model.
    blocks : list[tuple[str, int]]
        The peers whose latents the model reads, in join order, with widths.
    mean, cov : numpy.ndarray
        Moments of the joined training latents (for imputation).
    """

    run_id: int
    directory: Path
    task: str
    classes: list[str]
    model: DownstreamModel
    blocks: list[tuple[str, int]]
    mean: np.ndarray
    cov: np.ndarray


@dataclass
class PredictionResult:
    """What one prediction run produced; filled in phase by phase.

    ``ids`` and ``predictions`` are the scored entities in request order;
    ``imputed`` names, per scored entity, the peers whose latent block was
    imputed (empty string if none). ``missing_rows`` counts, per peer, the
    requested entities it does not hold.
    """

    status: str = "running"
    phase: str = "align"
    error: str = ""
    train_run: int = 0
    task: str = ""
    classes: list[str] = field(default_factory=list)
    requested: int = 0
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    predictions: np.ndarray = field(default_factory=lambda: np.empty(0))
    probabilities: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    imputed: list[str] = field(default_factory=list)
    missing_rows: dict[str, int] = field(default_factory=dict)
    peer_rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        """Number of entities scored."""
        return len(self.ids)


class VerticalPrediction:
    """Score entities with a trained federation's frozen encoders and model.

    Parameters
    ----------
    trained : TrainedFederation
        The training run to predict with.
    pseudonyms : numpy.ndarray
        ``(n, 32)`` uint8 keyed pseudonyms of the entities to score, unique.
    ids : numpy.ndarray
        ``(n,)`` their IDs; they stay on the server and key the output.
    missing_policy : str (default: "drop")
        ``"drop"`` or ``"impute"``; see the module docstring.
    num_peers : int (default: 0)
        SuperNodes to wait for; 0 takes the nodes connected.
    """

    def __init__(
        self,
        trained: TrainedFederation,
        pseudonyms: np.ndarray,
        ids: np.ndarray,
        missing_policy: str = "drop",
        num_peers: int = 0,
    ) -> None:
        if missing_policy not in MISSING_POLICIES:
            raise ValueError(f"missing-policy must be drop or impute, got '{missing_policy}'")
        if len(pseudonyms) != len(ids) or len(ids) == 0:
            raise ValueError("give one pseudonym per ID, and at least one ID")
        self.trained = trained
        self.pseudonyms = pseudonyms
        self.ids = np.asarray(ids)
        self.missing_policy = missing_policy
        self.num_peers = num_peers
        self.result = PredictionResult(train_run=trained.run_id, task=trained.task,
                                       classes=trained.classes, requested=len(ids))

    def start(self, grid: Grid, timeout: float = 900.0) -> PredictionResult:
        """Align, encode and predict; return the predictions.

        If a step fails, the error propagates and :attr:`result` keeps what
        the finished steps found, with ``status = "failed"``.
        """
        try:
            started = time.perf_counter()
            positions, nodes = self._align(grid, timeout)
            self.result.seconds["align"] = time.perf_counter() - started
            self.result.phase, started = "encode", time.perf_counter()
            joined, keep = self._encode(grid, positions, nodes, timeout)
            self.result.seconds["encode"] = time.perf_counter() - started
            self.result.phase = "predict"
            self._predict(joined, keep, missing=positions[keep] < 0)
        except Exception as err:
            self.result.status, self.result.error = "failed", str(err)
            raise
        self.result.status, self.result.phase = "completed", "done"
        return self.result

    # -------------------------------------------------------------- phases
    def _align(self, grid: Grid, timeout: float) -> tuple[np.ndarray, dict[str, tuple]]:
        """Locate every requested entity in every peer's rows.

        Returns the ``(n, peers)`` positions (-1 where a peer lacks the
        entity) in block order, and per peer its node id and fingerprint.
        """
        node_ids = wait_for_nodes(grid, self.num_peers, timeout)
        log(INFO, "[align] asking %d peers for keyed pseudonyms", len(node_ids))
        infos = exchange_all(
            grid, [protocol.pseudonyms_request(n, ConfigRecord({})) for n in node_ids],
            lambda node_id, reply: protocol.read_pseudonyms(reply, f"node {node_id}"),
            phase="alignment", timeout=timeout, names={},
        )
        nodes, found = {}, {}
        for node_id, name in protocol.peer_names(infos).items():
            values, info = infos[node_id]
            nodes[name] = (node_id, info[protocol.FINGERPRINT])
            found[name] = values
            self.result.peer_rows[name] = len(values)
        block_peers = [name for name, _ in self.trained.blocks]
        for name in sorted(set(nodes) - set(block_peers)):
            log(WARNING, "[align] %s took no part in training run %d; it is not asked",
                name, self.trained.run_id)
        absent = [name for name in block_peers if name not in nodes]
        if absent and self.missing_policy == "drop":
            raise VerticalRunError(
                f"peers of training run {self.trained.run_id} are not connected: "
                f"{', '.join(absent)}; connect them, or set missing-policy=impute")
        empty = np.empty((0, self.pseudonyms.shape[1]), dtype=np.uint8)
        positions = np.stack([locate(self.pseudonyms, found.get(name, empty))
                              for name in block_peers], axis=1)
        self.result.missing_rows = {name: int((positions[:, b] < 0).sum())
                                    for b, name in enumerate(block_peers)}
        return positions, nodes

    def _encode(
        self, grid: Grid, positions: np.ndarray, nodes: dict[str, tuple], timeout: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Collect the latents of the entities to score; NaN where a peer lacks one."""
        held = positions >= 0
        keep = held.all(axis=1) if self.missing_policy == "drop" else held.any(axis=1)
        log(INFO, "[encode] %d of %d requested entities are scored (missing-policy=%s)",
            int(keep.sum()), len(keep), self.missing_policy)
        if not keep.any():
            raise VerticalRunError(
                f"none of the {len(keep)} requested entities is held by "
                f"{'every peer' if self.missing_policy == 'drop' else 'any peer'}: "
                "check the IDs and the alignment secret")
        widths = [w for _, w in self.trained.blocks]
        starts = np.concatenate([[0], np.cumsum(widths)])
        joined = np.full((int(keep.sum()), int(starts[-1])), np.nan, dtype=np.float32)
        messages, rows, names = [], {}, {}
        for b, (name, _) in enumerate(self.trained.blocks):
            wanted = held[keep, b]
            if name in nodes and wanted.any():
                node_id, fingerprint = nodes[name]
                names[node_id], rows[node_id] = name, (b, wanted)
                messages.append(protocol.encode_request(
                    node_id, positions[keep, b][wanted], self.trained.run_id, fingerprint))
        latents = exchange_all(
            grid, messages,
            lambda node_id, reply: protocol.read_latents(
                reply, names[node_id], int(rows[node_id][1].sum()),
                widths[rows[node_id][0]])[0],
            phase="encode", timeout=timeout, names=names,
        )
        for node_id, values in latents.items():
            b, wanted = rows[node_id]
            joined[np.flatnonzero(wanted), starts[b]:starts[b + 1]] = values
        return joined, keep

    def _predict(self, joined: np.ndarray, keep: np.ndarray, missing: np.ndarray) -> None:
        """Impute the ``missing`` (entity, peer) latent blocks, then apply the model."""
        trained, result = self.trained, self.result
        names = np.array([name for name, _ in trained.blocks])
        result.imputed = [";".join(names[row]) for row in missing]
        if missing.any():
            log(INFO, "[predict] imputing the latents of %d entities from the peers "
                "that hold them", int(missing.any(axis=1).sum()))
            joined = impute_missing(joined, trained.mean, trained.cov)
        result.ids = self.ids[keep]
        result.predictions = trained.model.predict(joined)
        if trained.task == "classification":
            result.probabilities = trained.model.predict_proba(joined)
        log(INFO, "[predict] %d entities scored with the model of run %d",
            result.scored, trained.run_id)


def impute_missing(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Fill the NaN entries of each row with their Gaussian conditional mean.

    For a row with observed part ``o`` and missing part ``m``:
    ``x_m = mean_m + cov_mo cov_oo^-1 (x_o - mean_o)``, the least-squares
    linear prediction from the training latents; rows sharing a missing
    pattern are solved together. A tiny ridge keeps ``cov_oo`` invertible.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)`` rows with NaN where values are missing.
    mean : numpy.ndarray
        ``(d,)`` mean of complete training rows.
    cov : numpy.ndarray
        ``(d, d)`` their covariance.
    """
    x = x.astype(np.float64)
    missing = np.isnan(x)
    patterns, inverse = np.unique(missing, axis=0, return_inverse=True)
    for k, pattern in enumerate(patterns):
        if not pattern.any():
            continue
        rows, obs = inverse.ravel() == k, ~pattern
        if not obs.any():
            x[np.ix_(rows, pattern)] = mean[pattern]
            continue
        cov_oo = cov[np.ix_(obs, obs)]
        ridge = 1e-6 * max(float(np.trace(cov_oo)) / obs.sum(), 1e-12)
        weights = np.linalg.solve(cov_oo + ridge * np.eye(obs.sum()),
                                  cov[np.ix_(obs, pattern)])
        x[np.ix_(rows, pattern)] = mean[pattern] + (x[np.ix_(rows, obs)] - mean[obs]) @ weights
    return x.astype(np.float32)
