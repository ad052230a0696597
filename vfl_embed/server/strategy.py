"""Vertical strategy: align peers by pseudonym, collect latents, learn downstream."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from logging import INFO, WARNING
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..errors import PeerReplyError, VerticalRunError
from ..privacy.label_dp import private_labels
from ..wire import protocol
from ..wire.alignment import AlignmentPlan, intersect, locate
from ..wire.protocol import ALIGNMENT_MODES, PRIVACY_PREFIX
from ..wire.psi import ring_sender
from .downstream import MODELS, DownstreamModel
from .exchange import exchange, wait_for_nodes
from .result import ServerLabels, VerticalResult

__all__ = ["VerticalEmbedding"]

T = TypeVar("T")


class VerticalEmbedding(Strategy):
    """Vertical federated learning on autoencoder latents shared once.

    Implements the framework of "vertical data sharing through autoencoder
    embeddings": every peer encodes its own columns of the shared entities
    and sends latent vectors aligned by ID, never weights or raw values; the
    server joins the latents of all peers and trains the downstream model.

    The horizontal ``Strategy`` contract fits one round: ``configure_train``
    sends each peer its alignment plan and ``aggregate_train`` validates and
    joins the latents. It does not fit the rest, so :meth:`start` is
    overridden: there is one round, no initial model (peers never receive
    weights), an alignment query before it and server-side learning after
    it; ``configure_evaluate`` sends nothing because held-out entities are
    evaluated on the server.

    Parameters
    ----------
    encoder_config : ConfigRecord | None (default: None)
        Encoder and release settings sent to every peer (``encoder``,
        ``latent-dim``, ``hidden-sizes``, ``epochs``, ``latent-bits``: 32 or 16,
        the float width of the latents, ...); see docs/configuration.md for the keys.
    server_labels : ServerLabels | None (default: None)
        Labels the server holds. If None, exactly one peer must hold the
        label column, and it is asked for the labels of aligned rows.
    task : str (default: "auto")
        ``"regression"``, ``"classification"`` or ``"auto"`` (string labels
        or at most 20 distinct integer labels mean classification).
    model : str (default: "xgboost")
        Downstream model: ``"xgboost"``, ``"logistic"``, ``"ridge"`` or ``"mlp"``.
    search_iterations : int (default: 0)
        Randomized hyper-parameter search size for the downstream model.
    supervised : bool (default: False)
        Train each peer's encoder with a supervised head; the server then
        sends the training rows' labels to every peer.
    label_epsilon : float (default: 0.0)
        With ``supervised``, the label epsilon of the training labels sent:
        randomized response for classes, Laplace noise for numbers (see
        :mod:`vfl_embed.privacy.label_dp`); every peer gets the same noised
        copy. 0 sends the labels in clear.
    label_seed : int | None (default: None)
        Seed of the label noise. None draws it from the operating system:
        whoever knows the seed can undo the noise, and the run config's
        ``seed`` reaches the peers. Set it only to repeat an experiment.
    test_fraction : float (default: 0.2)
        Expected share of aligned entities held out for evaluation.
    min_entities : int (default: 50)
        Fewest aligned entities the run accepts.
    num_peers : int (default: 0)
        Peers to wait for before aligning; 0 takes the nodes connected.
    min_peers : int (default: 0)
        Fewest peers the run may finish with. A peer fails a phase when it
        does not answer within the timeout, the SuperLink reports it
        unreachable, or its reply is an error or does not pass validation.
        A failed peer stops the run with an error naming it; with
        ``min_peers`` set, the run instead goes on without it while at
        least ``min_peers`` remain, and the result lists it in
        ``dropped_peers``. The label-holding peer cannot be left out of the
        labels phase. 0 means every peer.
    alignment : str (default: "keyed-hash")
        How the peers' IDs are matched: ``"keyed-hash"`` (pseudonyms under a
        secret the peers share), ``"psi"`` (private set intersection: each
        peer's blinded IDs go round the ring of peers until every peer's key
        is on them; needs no shared secret, and no server labels, since the
        server must not key IDs itself) or ``"plain"`` (unkeyed hashes, for
        debugging in simulation).
    seed : int (default: 42)
        Seed of the split and the downstream model.
    """

    def __init__(
        self,
        encoder_config: ConfigRecord | None = None,
        server_labels: ServerLabels | None = None,
        task: str = "auto",
        model: str = "xgboost",
        search_iterations: int = 0,
        supervised: bool = False,
        label_epsilon: float = 0.0,
        label_seed: int | None = None,
        test_fraction: float = 0.2,
        min_entities: int = 50,
        num_peers: int = 0,
        min_peers: int = 0,
        alignment: str = "keyed-hash",
        seed: int = 42,
    ) -> None:
        if task not in ("auto", "regression", "classification"):
            raise ValueError(f"task must be auto, regression or classification: {task}")
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got '{model}'")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if search_iterations < 0 or num_peers < 0:
            raise ValueError("search_iterations and num_peers must not be negative")
        if not (np.isfinite(label_epsilon) and label_epsilon >= 0):
            raise ValueError(f"label_epsilon must be a finite number >= 0, got "
                             f"{label_epsilon}")
        if min_entities < 1:
            raise ValueError(f"min_entities must be at least 1, got {min_entities}")
        if min_peers < 0 or (num_peers and min_peers > num_peers):
            raise ValueError(f"min_peers must be between 0 and num_peers={num_peers}, "
                             f"got {min_peers}")
        if alignment not in ALIGNMENT_MODES:
            raise ValueError(f"alignment must be one of {', '.join(ALIGNMENT_MODES)}, "
                             f"got '{alignment}'")
        if alignment == "psi" and server_labels is not None:
            raise ValueError("alignment 'psi' keeps every ID blinded from the server, "
                             "which then cannot hold labels by ID: use label-source "
                             "'peer'")
        self.encoder_config = encoder_config or ConfigRecord()
        bits = self.encoder_config.get(protocol.LATENT_BITS, 32)
        if bits not in protocol.LATENT_DTYPES:
            raise ValueError(f"{protocol.LATENT_BITS} must be one of "
                             f"{sorted(protocol.LATENT_DTYPES)}, got {bits!r}")
        self._latent_bits = int(bits)
        self.server_labels = server_labels
        self.task = task
        self.model = model
        self.search_iterations = search_iterations
        self.supervised = supervised
        self.label_epsilon = float(label_epsilon)
        self.label_seed = secrets.randbits(63) if label_seed is None else label_seed
        self.test_fraction = test_fraction
        self.min_entities = min_entities
        self.num_peers = num_peers
        self.min_peers = min_peers
        self.alignment = alignment
        self.seed = seed
        self.result = VerticalResult()
        self._peers: dict[int, str] = {}
        self._fingerprints: dict[int, str] = {}
        self._plan: AlignmentPlan | None = None
        self._y = np.empty(0)
        self._ids: np.ndarray | None = None
        self._evaluated = np.empty(0, dtype=bool)
        self._classes: list[str] = []
        self._resolved_task = task

    # ------------------------------------------------------------ workflow
    def start(self, grid: Grid, timeout: float = 900.0) -> VerticalResult:  # type: ignore[override]
        """Run align, embed and learn; return the held-out evaluation.

        If a phase fails, the error propagates and :attr:`result` keeps what
        the finished phases produced, with ``status = "failed"``.

        Parameters
        ----------
        grid : Grid
            The Grid to reach the peers' SuperNodes.
        timeout : float (default: 900.0)
            Seconds to wait for the peers in each phase.
        """
        self.summary()
        self.result = VerticalResult()
        try:
            with self._phase("align"):
                self._align(grid, timeout)
            with self._phase("fit-embed"):
                joined = self._embed(grid, timeout)
            with self._phase("learn"):
                self._learn(joined)
        except Exception as err:
            self.result.status, self.result.error = "failed", str(err)
            raise
        self.result.status, self.result.phase = "completed", "done"
        return self.result

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        self.result.phase = name
        started = time.perf_counter()
        try:
            yield
        finally:
            self.result.seconds[name] = time.perf_counter() - started

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every peer its aligned row positions and the encoder settings."""
        plan = self._require_plan()
        targets = self._training_targets()
        messages = []
        for node_id in self._peers:
            peer_config = ConfigRecord(dict(self.encoder_config) | {
                protocol.FINGERPRINT: self._fingerprints[node_id],
                "task": self._resolved_task,
            })
            messages.append(protocol.embed_request(
                node_id, plan.positions[self._peers[node_id]], plan.is_test,
                peer_config, targets, self.label_epsilon,
            ))
        return messages

    def _training_targets(self) -> np.ndarray | None:
        """Return the training rows' labels the peers receive, in the plan's order.

        One copy for every peer: noised once when ``label_epsilon > 0``, so
        the run's label epsilon does not grow with the number of peers.
        Records in :attr:`result` what was sent.
        """
        if not self.supervised:
            self.result.label_privacy = {"labels_sent": "none"}
            return None
        targets = self._y[~self._require_plan().is_test]
        if self.label_epsilon == 0.0:
            self.result.label_privacy = {"labels_sent": "clear"}
            return targets
        release = private_labels(targets, task=self._resolved_task,
                                 epsilon=self.label_epsilon, seed=self.label_seed,
                                 n_classes=len(self._classes))
        self.result.label_privacy = {"labels_sent": "label-dp"} | release.statement
        log(INFO, "[embed] training labels go to the peers with %s, label epsilon %g",
            release.statement["mechanism"], self.label_epsilon)
        return release.labels

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every peer's latents and join them in peer-name order.

        Raises :class:`~vfl_embed.errors.PeerReplyError` naming every peer
        whose reply is unusable, or that is not a peer of this run.
        """
        latents, failures = {}, []
        for reply in replies:
            node_id = reply.metadata.src_node_id
            try:
                latents[node_id] = self._read_latents(node_id, reply)
            except PeerReplyError as err:
                failures.append(err)
        if failures:
            raise PeerReplyError.of_peers(failures)
        metrics = {f"{self._peers[n]}/{key}": value for n in latents
                   for key, value in self.result.peer_metrics[self._peers[n]].items()}
        return ArrayRecord({"latents": Array(self._join(latents))}), MetricRecord(metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send nothing: held-out entities are evaluated on the server."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Nothing to aggregate; see :meth:`configure_evaluate`."""
        return None

    def summary(self) -> None:
        """Log the strategy's settings."""
        log(INFO, "VerticalEmbedding: model=%s, task=%s, supervised=%s, "
            "label_epsilon=%g, alignment=%s, test_fraction=%.2f, min_entities=%d, "
            "min_peers=%d, seed=%d", self.model, self.task, self.supervised,
            self.label_epsilon, self.alignment, self.test_fraction,
            self.min_entities, self.min_peers, self.seed)

    # -------------------------------------------------------------- phases
    def _align(self, grid: Grid, timeout: float) -> None:
        node_ids = self._wait_for_nodes(grid, timeout)
        log(INFO, "[align] asking %d peers for %s", len(node_ids),
            "their blinded IDs (private set intersection)" if self.alignment == "psi"
            else "keyed pseudonyms")
        infos = self._exchange(
            grid, [protocol.pseudonyms_request(n, ConfigRecord({})) for n in node_ids],
            lambda node_id, reply: protocol.read_pseudonyms(reply, f"node {node_id}"),
            "alignment", timeout,
        )
        pseudonyms, has_label = {}, []
        for node_id, name in protocol.peer_names(infos).items():
            values, info = infos[node_id]
            self._peers[node_id] = name
            self._fingerprints[node_id] = info[protocol.FINGERPRINT]
            pseudonyms[name] = values
            self.result.peer_rows[name] = len(values)
            if info[protocol.HAS_LABEL]:
                has_label.append((node_id, name))
            log(INFO, "[align] %s: %d rows", name, len(values))
        if self.alignment == "psi":
            pseudonyms = self._blind_round_the_ring(grid, pseudonyms, timeout)
        if self.server_labels is not None:
            pseudonyms["server labels"] = self.server_labels.pseudonyms
        plan = intersect(pseudonyms, self.test_fraction, self.seed)
        if self.server_labels is not None:
            self._check_label_coverage(pseudonyms, plan)
            plan.positions.pop("server labels")
        self._plan = plan
        self.result.n_entities = len(plan)
        log(INFO, "[align] %d entities in all peers: %d train, %d held out",
            len(plan), int((~plan.is_test).sum()), int(plan.is_test.sum()))
        self._check_entities(plan)
        labels, self._classes = self._collect_labels(grid, has_label, timeout)
        self._set_targets(labels)

    def _blind_round_the_ring(
        self, grid: Grid, lists: dict[str, np.ndarray], timeout: float
    ) -> dict[str, np.ndarray]:
        """Pass every peer's blinded IDs round the ring until all keys are on them.

        In each of the n - 1 rounds every peer blinds one other peer's list
        (:func:`~vfl_embed.wire.psi.ring_sender` says whose); afterwards the same
        ID has the same value in every list, and the server intersects those
        values like pseudonyms. Every peer must answer every round.
        """
        ring = sorted(self._peers, key=self._peers.__getitem__)
        current = {node: lists[self._peers[node]] for node in ring}
        for round_index in range(1, len(ring)):
            owner = {node: ring[ring_sender(round_index, i, len(ring))]
                     for i, node in enumerate(ring)}
            log(INFO, "[align] PSI round %d of %d: each peer blinds another's IDs",
                round_index + 1, len(ring))
            blinded = self._exchange(
                grid, [protocol.blind_request(node, current[owner[node]],
                                              self._fingerprints[node]) for node in ring],
                partial(_read_points, self._peers, {n: len(current[owner[n]]) for n in ring}),
                "alignment", timeout, droppable=False,
            )
            current = {owner[node]: points for node, points in blinded.items()}
        return {self._peers[node]: values for node, values in current.items()}

    def _embed(self, grid: Grid, timeout: float) -> np.ndarray:
        plan = self._require_plan()
        log(INFO, "[embed] %d peers fit their encoders on %d training rows",
            len(self._peers), int((~plan.is_test).sum()))
        messages = list(self.configure_train(1, ArrayRecord(), ConfigRecord(), grid))
        return self._join(
            self._exchange(grid, messages, self._read_latents, "embed", timeout))

    def _learn(self, joined: np.ndarray) -> None:
        plan = self._require_plan()
        train, test = ~plan.is_test, plan.is_test & self._evaluated
        y, result = self._y, self.result
        log(INFO, "[learn] training %s (%s) on %d x %d joined latents", self.model,
            self._resolved_task, int(train.sum()), joined.shape[1])
        model = DownstreamModel(self.model, self._resolved_task,
                                self.search_iterations, self.seed)
        model.fit(joined[train], y[train])
        result.task, result.classes, result.model = (
            self._resolved_task, self._classes, model)
        result.metrics = model.evaluate(joined[test], y[test])
        result.train_metrics = model.evaluate(joined[train], y[train])
        result.y_test, result.y_pred = y[test], model.predict(joined[test])
        if self._resolved_task == "classification":
            result.y_proba = model.predict_proba(joined[test])
        result.test_ids = self._ids[test] if self._ids is not None else None
        result.n_train, result.n_test = int(train.sum()), int(test.sum())
        result.latent_mean = joined[train].mean(axis=0, dtype=np.float64)
        result.latent_cov = np.cov(joined[train], rowvar=False, dtype=np.float64)
        result.projection = _projection(joined[test], y[test], self._classes)

    # ------------------------------------------------------------- helpers
    def _read_latents(self, node_id: int, reply: Message) -> np.ndarray:
        """Validate one peer's latents; keep its metrics even if the phase fails."""
        if node_id not in self._peers:
            raise PeerReplyError(f"node {node_id}", "is not a peer of this run")
        name = self._peers[node_id]
        latents, metrics = protocol.read_latents(reply, name, len(self._require_plan()),
                                                 bits=self._latent_bits)
        privacy = {k.removeprefix(PRIVACY_PREFIX): v for k, v in metrics.items()
                   if k.startswith(PRIVACY_PREFIX)}
        self.result.peer_metrics[name] = {k: v for k, v in metrics.items()
                                          if not k.startswith(PRIVACY_PREFIX)}
        if privacy:
            self.result.privacy[name] = privacy
        self.result.bytes_received[name] = latents.size * self._latent_bits // 8
        log(INFO, "[embed] %s: %d latent dims, reconstruction MAE %.4f, within 5%% "
            "%.1f%%", name, latents.shape[1], metrics.get("reconstruction-mae", np.nan),
            100 * metrics.get("within-5pct", np.nan))
        return latents

    def _join(self, latents: dict[int, np.ndarray]) -> np.ndarray:
        """Join the peers' latent blocks side by side, in peer-name order."""
        order = sorted(latents, key=self._peers.__getitem__)
        self.result.latent_blocks = [(self._peers[n], latents[n].shape[1]) for n in order]
        return np.concatenate([latents[n] for n in order], axis=1)

    def _wait_for_nodes(self, grid: Grid, timeout: float) -> list[int]:
        node_ids = wait_for_nodes(grid, self.num_peers, timeout)
        if not node_ids or len(node_ids) < self.num_peers:
            raise VerticalRunError(f"{len(node_ids)} of {self.num_peers} peers "
                                   f"connected within {timeout:.0f} s")
        return node_ids

    def _check_entities(self, plan: AlignmentPlan) -> None:
        labels = " and the label file" if self.server_labels is not None else ""
        if len(plan) == 0:
            raise VerticalRunError(
                f"no entity is held by every peer{labels}: check that all peers use "
                "the same alignment secret and write IDs alike ('007' and '7' are "
                "different IDs)"
            )
        if len(plan) < self.min_entities:
            raise VerticalRunError(
                f"only {len(plan)} entities are held by every peer{labels}; the run "
                f"needs at least min-entities={self.min_entities}"
            )

    def _collect_labels(
        self, grid: Grid, has_label: list[tuple[int, str]], timeout: float
    ) -> tuple[np.ndarray, list[str]]:
        plan = self._require_plan()
        if self.server_labels is not None:
            rows = locate(plan.pseudonyms, self.server_labels.pseudonyms)
            if self.server_labels.ids is not None:
                self._ids = np.asarray(self.server_labels.ids)[rows]
            return self.server_labels.values[rows].astype(float), self.server_labels.classes
        if len(has_label) != 1:
            found = ", ".join(n for _, n in has_label) or "none"
            raise VerticalRunError(
                "without a server label file exactly one peer must hold the label "
                f"column; found: {found}"
            )
        node_id, name = has_label[0]
        log(INFO, "[align] asking %s for the labels of aligned rows", name)
        replies = self._exchange(
            grid, [protocol.labels_request(
                node_id, plan.positions[name], self._fingerprints[node_id])],
            lambda _, reply: protocol.read_labels(reply, name, len(plan)),
            "labels", timeout, droppable=False,
        )
        return replies[node_id]

    def _check_label_coverage(self, pseudonyms: dict, plan: AlignmentPlan) -> None:
        peers_only = intersect(
            {k: v for k, v in pseudonyms.items() if k != "server labels"},
            self.test_fraction, self.seed,
        )
        missing = len(peers_only) - len(plan)
        if missing:
            raise VerticalRunError(
                f"the label file does not cover {missing} of the {len(peers_only)} "
                "entities all peers hold; add their labels or drop those rows"
            )

    def _set_targets(self, labels: np.ndarray) -> None:
        """Fix the task and the targets; check the training rows can teach it."""
        train = ~self._require_plan().is_test
        self._resolved_task = self._infer_task(labels, self._classes)
        self._evaluated = np.ones(len(labels), dtype=bool)
        if self._resolved_task == "regression":
            if np.ptp(labels[train]) == 0:
                raise VerticalRunError(f"the label is constant over the {int(train.sum())} "
                                       "training entities; there is nothing to learn")
            self._y = labels
            return
        codes, names = self._class_codes(labels)
        seen = np.unique(codes[train])
        if len(seen) < 2:
            raise VerticalRunError(
                f"the label has {len(seen)} class in the {int(train.sum())} training "
                "entities; classification needs at least two"
            )
        # Held-out entities of a class never seen in training cannot be
        # predicted by any model trained here: leave them out, and say so.
        self._evaluated = np.isin(codes, seen)
        unseen = int((~self._evaluated).sum())
        if unseen:
            log(WARNING, "[align] %d held-out entities have a class no training entity "
                "has; they are left out of the evaluation", unseen)
        self.result.unseen_class_test_rows = unseen
        self._y = np.where(self._evaluated, np.searchsorted(seen, codes), -1)
        self._classes = [names[c] for c in seen]

    def _infer_task(self, labels: np.ndarray, classes: list[str]) -> str:
        if self.task != "auto":
            return self.task
        if classes:
            return "classification"
        integral = np.all(np.equal(np.mod(labels, 1), 0))
        return "classification" if integral and len(np.unique(labels)) <= 20 else (
            "regression")

    def _class_codes(self, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Class codes ``0..K-1`` of the labels, and the class names."""
        if self._classes:  # already codes of the named classes
            return labels.astype(np.int64), self._classes
        values, codes = np.unique(labels, return_inverse=True)
        return codes, [str(int(v)) if float(v).is_integer() else str(v) for v in values]

    def _exchange(
        self,
        grid: Grid,
        messages: list[Message],
        read: Callable[[int, Message], T],
        phase: str,
        timeout: float,
        droppable: bool = True,
    ) -> dict[int, T]:
        """Send ``messages``; return the validated replies by node.

        Peers without a usable reply are dropped (see ``min_peers``) if
        ``droppable`` and enough peers remain; otherwise the run stops with
        an error naming each of them.
        """
        accepted, failures = exchange(grid, messages, read, phase=phase,
                                      timeout=timeout, names=self._peers)
        if not failures:
            return accepted
        if not droppable or not self.min_peers or len(accepted) < self.min_peers:
            note = (f" ({len(accepted)} peers remain, min-peers={self.min_peers})"
                    if droppable and self.min_peers else "")
            raise PeerReplyError.of_peers(failures.values(), note)
        for node_id, err in failures.items():
            log(WARNING, "[%s] going on without %s: %s", phase, err.peer, err.reason)
            self.result.dropped_peers[err.peer] = err.reason
            self._peers.pop(node_id, None)
        return accepted

    def _require_plan(self) -> AlignmentPlan:
        if self._plan is None:
            raise RuntimeError("peers are not aligned yet; call start()")
        return self._plan


def _read_points(
    names: Mapping[int, str], rows: Mapping[int, int], node_id: int, reply: Message
) -> np.ndarray:
    return protocol.read_points(reply, names[node_id], rows[node_id])


def _projection(latents: np.ndarray, y: np.ndarray, classes: list[str],
                limit: int = 2000) -> dict:
    """First two principal components of held-out latents, with their labels."""
    latents, y = latents[:limit].astype(np.float64), y[:limit]
    if len(latents) < 3 or latents.shape[1] < 2:
        return {}
    centered = latents - latents.mean(axis=0)
    _, singular, axes = np.linalg.svd(centered, full_matrices=False)
    points = centered @ axes[:2].T
    variance = singular**2 / max(float((singular**2).sum()), 1e-300)
    labels = [classes[int(v)] for v in y] if classes else y.tolist()
    return {"method": "pca", "explained_variance": variance[:2].tolist(),
            "x": points[:, 0].tolist(), "y": points[:, 1].tolist(), "label": labels,
            "label_kind": "class" if classes else "value"}

