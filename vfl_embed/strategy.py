"""Vertical strategy: align peers by pseudonym, collect latents, learn downstream."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from . import protocol
from .alignment import AlignmentPlan, intersect
from .downstream import DownstreamModel
from .protocol import PeerReplyError

__all__ = ["ServerLabels", "VerticalEmbedding", "VerticalResult", "VerticalRunError"]


class VerticalRunError(RuntimeError):
    """The run cannot go on (too few entities, labels missing, ...)."""


@dataclass(frozen=True)
class ServerLabels:
    """Labels the server holds, keyed by the same pseudonyms the peers send.

    Attributes
    ----------
    pseudonyms : numpy.ndarray
        ``(n, 32)`` uint8 pseudonyms of the labelled entities.
    values : numpy.ndarray
        ``(n,)`` labels; numbers, or class codes when ``classes`` is set.
    classes : list[str]
        Class names for string labels, else empty.
    """

    pseudonyms: np.ndarray
    values: np.ndarray
    classes: list[str] = field(default_factory=list)


@dataclass
class VerticalResult:
    """What one vertical run produced (all metrics on held-out entities)."""

    task: str
    metrics: dict[str, float]
    train_metrics: dict[str, float]
    peer_metrics: dict[str, dict[str, float]]
    peer_rows: dict[str, int]
    n_entities: int
    n_train: int
    n_test: int
    classes: list[str]
    y_test: np.ndarray
    y_pred: np.ndarray
    model: DownstreamModel
    seconds: dict[str, float]
    bytes_received: dict[str, int]
    dropped_peers: dict[str, str] = field(default_factory=dict)


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
        Encoder settings sent to every peer (``encoder``, ``latent-dim``,
        ``hidden-sizes``, ``epochs``, ...); see the README for the keys.
    server_labels : ServerLabels | None (default: None)
        Labels the server holds. If None, exactly one peer must hold the
        label column, and it is asked for the labels of aligned rows.
    task : str (default: "auto")
        ``"regression"``, ``"classification"`` or ``"auto"`` (string labels
        or at most 20 distinct integer labels mean classification).
    model : str (default: "xgboost")
        Downstream model: ``"xgboost"``, ``"logistic"`` or ``"mlp"``.
    search_iterations : int (default: 0)
        Randomized hyper-parameter search size for the downstream model.
    supervised : bool (default: False)
        Train each peer's encoder with a supervised head; the server then
        sends the training rows' labels to every peer.
    test_fraction : float (default: 0.2)
        Expected share of aligned entities held out for evaluation.
    min_entities : int (default: 50)
        Fewest aligned entities the run accepts.
    num_peers : int (default: 0)
        Peers to wait for before aligning; 0 takes the nodes connected.
    min_peers : int (default: 0)
        Fewest peers the run may finish with. A peer that does not answer a
        phase within the timeout, or that the SuperLink reports unreachable,
        stops the run with an error naming it; with ``min_peers`` set, the
        run instead goes on without it while at least ``min_peers`` remain,
        and the result lists it in ``dropped_peers``. 0 means every peer.
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
        test_fraction: float = 0.2,
        min_entities: int = 50,
        num_peers: int = 0,
        min_peers: int = 0,
        seed: int = 42,
    ) -> None:
        if task not in ("auto", "regression", "classification"):
            raise ValueError(f"task must be auto, regression or classification: {task}")
        if min_peers < 0 or (num_peers and min_peers > num_peers):
            raise ValueError(f"min_peers must be between 0 and num_peers={num_peers}, "
                             f"got {min_peers}")
        self.encoder_config = encoder_config or ConfigRecord()
        self.server_labels = server_labels
        self.task = task
        self.model = model
        self.search_iterations = search_iterations
        self.supervised = supervised
        self.test_fraction = test_fraction
        self.min_entities = min_entities
        self.num_peers = num_peers
        self.min_peers = min_peers
        self.seed = seed
        self._peers: dict[int, str] = {}
        self._fingerprints: dict[int, str] = {}
        self._plan: AlignmentPlan | None = None
        self._rows: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._dropped: dict[str, str] = {}
        self._y = np.empty(0)
        self._classes: list[str] = []
        self._resolved_task = task

    # ------------------------------------------------------------ workflow
    def start(self, grid: Grid, timeout: float = 900.0) -> VerticalResult:  # type: ignore[override]
        """Run align, embed and learn; return the held-out evaluation.

        Parameters
        ----------
        grid : Grid
            The Grid to reach the peers' SuperNodes.
        timeout : float (default: 900.0)
            Seconds to wait for the peers in each phase.
        """
        self.summary()
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        self._align(grid, timeout)
        seconds["align"] = time.perf_counter() - started

        started = time.perf_counter()
        log(INFO, "[embed] %d peers fit their encoders on %d training rows",
            len(self._peers), int((~self._plan.is_test).sum()))
        replies = self._exchange(
            grid, list(self.configure_train(1, ArrayRecord(), ConfigRecord(), grid)),
            "embed", timeout,
        )
        joined, metrics = self.aggregate_train(1, replies.values())
        seconds["fit-embed"] = time.perf_counter() - started

        started = time.perf_counter()
        result = self._learn(joined["latents"].numpy(), metrics)
        seconds["learn"] = time.perf_counter() - started
        result.seconds = seconds
        return result

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every peer its aligned row positions and the encoder settings."""
        plan = self._require_plan()
        targets = self._y[~plan.is_test] if self.supervised else None
        messages = []
        for node_id in self._peers:
            peer_config = ConfigRecord(dict(self.encoder_config) | {
                protocol.FINGERPRINT: self._fingerprints[node_id],
                "task": self._resolved_task,
            })
            messages.append(protocol.embed_request(
                node_id, plan.positions[self._peers[node_id]], plan.is_test,
                peer_config, targets,
            ))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every peer's latents and join them in peer-name order."""
        plan = self._require_plan()
        by_peer = {self._peers[r.metadata.src_node_id]: r for r in replies}
        blocks, metrics = [], {}
        for name in sorted(by_peer):
            latents, peer_metrics = protocol.read_latents(by_peer[name], name, len(plan))
            blocks.append(latents)
            self._bytes[name] = int(latents.nbytes)
            metrics.update({f"{name}/{k}": v for k, v in peer_metrics.items()})
            log(INFO, "[embed] %s: %d latent dims, reconstruction MAE %.4f, "
                "within 5%% %.1f%%", name, latents.shape[1],
                peer_metrics.get("reconstruction-mae", float("nan")),
                100 * peer_metrics.get("within-5pct", float("nan")))
        joined = np.concatenate(blocks, axis=1)
        return ArrayRecord({"latents": Array(joined)}), MetricRecord(metrics)

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
            "test_fraction=%.2f, min_entities=%d, seed=%d", self.model, self.task,
            self.supervised, self.test_fraction, self.min_entities, self.seed)

    # -------------------------------------------------------------- phases
    def _align(self, grid: Grid, timeout: float) -> None:
        node_ids = self._wait_for_nodes(grid, timeout)
        log(INFO, "[align] asking %d peers for keyed pseudonyms", len(node_ids))
        replies = self._exchange(
            grid, [protocol.pseudonyms_request(n, ConfigRecord({})) for n in node_ids],
            "alignment", timeout,
        )
        pseudonyms, has_label = {}, []
        for node_id, reply in sorted(replies.items()):
            values, info = protocol.read_pseudonyms(reply, f"node {node_id}")
            name = info[protocol.NAME]
            if name in pseudonyms:
                raise PeerReplyError(name, "two SuperNodes use this peer name")
            self._peers[node_id] = name
            self._fingerprints[node_id] = info[protocol.FINGERPRINT]
            pseudonyms[name] = values
            self._rows[name] = len(values)
            if info[protocol.HAS_LABEL]:
                has_label.append((node_id, name))
            log(INFO, "[align] %s: %d rows", name, len(values))
        if self.server_labels is not None:
            pseudonyms["server labels"] = self.server_labels.pseudonyms
        plan = intersect(pseudonyms, self.test_fraction, self.seed)
        if self.server_labels is not None:
            self._check_label_coverage(pseudonyms, plan)
            plan.positions.pop("server labels")
        self._plan = plan
        log(INFO, "[align] %d entities in all peers: %d train, %d held out",
            len(plan), int((~plan.is_test).sum()), int(plan.is_test.sum()))
        if len(plan) < self.min_entities:
            raise VerticalRunError(
                f"only {len(plan)} entities are held by every peer"
                + (" and the label file" if self.server_labels is not None else "")
                + f"; the run needs at least min-entities={self.min_entities}"
            )
        labels, self._classes = self._collect_labels(grid, has_label, timeout)
        self._resolved_task = self._infer_task(labels, self._classes)
        self._y = labels if self._resolved_task == "regression" else (
            self._class_codes(labels))

    def _learn(self, joined: np.ndarray, metrics: MetricRecord) -> VerticalResult:
        plan = self._require_plan()
        test, train = plan.is_test, ~plan.is_test
        y = self._y
        log(INFO, "[learn] training %s (%s) on %d x %d joined latents", self.model,
            self._resolved_task, int(train.sum()), joined.shape[1])
        model = DownstreamModel(self.model, self._resolved_task,
                                self.search_iterations, self.seed)
        model.fit(joined[train], y[train])
        held_out = model.evaluate(joined[test], y[test])
        peer_metrics: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            peer, metric = key.split("/", 1)
            peer_metrics.setdefault(peer, {})[metric] = float(value)
        return VerticalResult(
            task=self._resolved_task, metrics=held_out,
            train_metrics=model.evaluate(joined[train], y[train]),
            peer_metrics=peer_metrics,
            peer_rows=dict(self._rows),
            n_entities=len(plan), n_train=int(train.sum()), n_test=int(test.sum()),
            classes=self._classes, y_test=y[test], y_pred=model.predict(joined[test]),
            model=model, seconds={}, bytes_received=dict(self._bytes),
            dropped_peers=dict(self._dropped),
        )

    # ------------------------------------------------------------- helpers
    def _wait_for_nodes(self, grid: Grid, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            node_ids = sorted(grid.get_node_ids())
            if node_ids and len(node_ids) >= self.num_peers:
                return node_ids
            if time.monotonic() > deadline:
                raise VerticalRunError(
                    f"{len(node_ids)} of {self.num_peers} peers connected within "
                    f"{timeout:.0f} s"
                )
            time.sleep(1.0)

    def _collect_labels(
        self, grid: Grid, has_label: list[tuple[int, str]], timeout: float
    ) -> tuple[np.ndarray, list[str]]:
        plan = self._require_plan()
        if self.server_labels is not None:
            order = np.argsort(_keys(self.server_labels.pseudonyms))
            keys = _keys(self.server_labels.pseudonyms)[order]
            rows = order[np.searchsorted(keys, _keys(plan.pseudonyms))]
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
            grid, [protocol.labels_request(node_id, plan.positions[name])],
            "labels", timeout, droppable=False,
        )
        return protocol.read_labels(replies[node_id], name, len(plan))

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

    def _infer_task(self, labels: np.ndarray, classes: list[str]) -> str:
        if self.task != "auto":
            return self.task
        if classes:
            return "classification"
        integral = np.all(np.equal(np.mod(labels, 1), 0))
        return "classification" if integral and len(np.unique(labels)) <= 20 else (
            "regression")

    def _class_codes(self, labels: np.ndarray) -> np.ndarray:
        if self._classes:  # already codes of the named classes
            return labels.astype(np.int64)
        values, codes = np.unique(labels, return_inverse=True)
        if not self._classes:
            self._classes = [str(int(v)) if float(v).is_integer() else str(v)
                             for v in values]
        return codes

    def _exchange(
        self, grid: Grid, messages: list[Message], phase: str, timeout: float,
        droppable: bool = True,
    ) -> dict[int, Message]:
        """Send ``messages`` and return the replies by node.

        Peers that do not answer are dropped (see ``min_peers``) if
        ``droppable`` and enough peers remain; otherwise the run stops.
        """
        replies = grid.send_and_receive(messages, timeout=timeout)
        # Message ids are assigned when the grid pushes the messages.
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        by_node: dict[int, Message] = {}
        for reply in replies:
            node_id = sent_to.get(reply.metadata.reply_to_message_id)
            if node_id is None or node_id in by_node:
                raise PeerReplyError(self._name(reply.metadata.src_node_id),
                                     f"answered the {phase} phase unasked")
            if protocol.is_unreachable(reply):
                continue  # the SuperLink answers for a node it lost
            if reply.metadata.src_node_id != node_id:
                raise PeerReplyError(self._name(reply.metadata.src_node_id),
                                     f"answered in the {phase} phase for "
                                     f"{self._name(node_id)}")
            by_node[node_id] = reply
        absent = [n for n in sent_to.values() if n not in by_node]
        if not absent:
            return by_node
        names = [self._name(n) for n in absent]
        reason = (f"did not answer the {phase} phase within {timeout:.0f} s, or "
                  "the SuperLink lost it")
        if not droppable or not self.min_peers or len(by_node) < self.min_peers:
            if droppable and self.min_peers:
                reason += f"; {len(by_node)} peers remain, min-peers={self.min_peers}"
            raise PeerReplyError(", ".join(names), reason)
        for node_id, name in zip(absent, names, strict=True):
            log(WARNING, "[%s] going on without %s: it %s", phase, name, reason)
            self._dropped[name] = reason
            self._peers.pop(node_id, None)
        return by_node

    def _name(self, node_id: int) -> str:
        return self._peers.get(node_id, f"node {node_id}")

    def _require_plan(self) -> AlignmentPlan:
        if self._plan is None:
            raise RuntimeError("peers are not aligned yet; call start()")
        return self._plan


def _keys(pseudonyms: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pseudonyms).view(f"V{pseudonyms.shape[1]}").ravel()
