"""The ServerApp: align, then train the top model one mini-batch exchange at a time.

Alignment and the held-out split are vfl_embed's: keyed pseudonyms from
every peer, intersected with the server's labels by
:func:`vfl_embed.wire.alignment.intersect` (same ``test-fraction`` and ``seed``,
hence the same held-out entities as a ``vfl_embed`` run on the same data).
A seeded ``validation-split`` of the training entities drives early
stopping; the held-out entities are scored once, with the best epoch's
weights on both sides. Each exchange is one ``send_and_receive`` round with
one message per peer; the report counts them and their bytes per message
type.

With ``held-out-curve = true`` the held-out entities are also scored after
every epoch, with the weights of that epoch, and the history records the
training time and bytes spent so far: how soon split learning reaches a
given metric. That scoring is a measurement, not training: its exchanges are
counted apart (message type ``"held-out curve"``, left out of the totals) and
its time is left out of ``elapsed``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from logging import ERROR, INFO
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from vfl_embed.config import RunConfig
from vfl_embed.errors import PeerReplyError
from vfl_embed.server.downstream import score
from vfl_embed.server.exchange import exchange_all, wait_for_nodes
from vfl_embed.server.labels import server_labels
from vfl_embed.wire import protocol
from vfl_embed.wire.alignment import AlignmentPlan, intersect, locate

from . import wire
from .models import Trainable, build_mlp, parse_sizes

app = ServerApp()

CURVE = "held-out curve"


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run split learning as the run config says; write ``report.json``."""
    config = dict(context.run_config)
    fast = wire.FastGrid(grid, float(config.get("poll-interval", 0.01)))
    run = SplitLearning(config)
    try:
        report = run.start(fast, float(config.get("timeout", 300.0)))
    except Exception as err:
        log(ERROR, "split learning stopped in the %s phase: %s", run.phase, err)
        raise
    report |= {"run_id": str(context.run_id), "run_config": config}
    path = _results_dir(config, context.run_id) / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in report["held_out_metrics"].items())
    totals = report["totals"]
    log(INFO, "[split] held-out %s; %d rounds, %.2f MB up, %.2f MB down (array data)",
        metrics, totals["rounds"], totals["payload_up"] / 1e6, totals["payload_down"] / 1e6)
    log(INFO, "[report] %s", path)


class SplitLearning:
    """Split learning of bottom models (peers) and a top model (server).

    Parameters
    ----------
    config : dict
        The run config (keys of this app's ``pyproject.toml``).
    """

    def __init__(self, config: dict) -> None:
        self.config = config
        self.seed = int(config.get("seed", 42))
        self.cut = int(config.get("cut-dim", 16))
        self.phase = "align"
        self.names: dict[int, str] = {}  # node id -> peer name, in peer-name order
        self.seconds: dict[str, float] = {}
        self.curve = bool(config.get("held-out-curve", False))

    def start(self, grid: wire.FastGrid, timeout: float) -> dict:
        """Align, set up the peers, train, score the held-out entities; return the report."""
        self.grid, self.timeout = grid, timeout
        self.started, self.curve_seconds = time.perf_counter(), 0.0
        self._timed("align", self._align)
        self._timed("setup", self._setup)
        history = self._timed("train", self._train)
        metrics = self._timed("test", self._test)
        self.seconds["total"] = time.perf_counter() - self.started
        self.seconds["curve"] = self.curve_seconds
        traffic = {kind: vars(t) for kind, t in grid.traffic.items()}
        totals = self._training_traffic("rounds", "messages", "payload_down",
                                        "payload_up", "wire_down", "wire_up")
        n_test = int(self.is_test.sum())
        return {
            "app": "split-learning", "status": "completed", "task": self.task,
            "dataset": str(self.config.get("dataset", "")),
            "held_out_metrics": metrics, "history": history,
            "best_epoch": self.best_epoch, "epochs_run": len(history),
            "steps_per_epoch": self.steps_per_epoch,
            "entities": {"aligned": len(self.y), "train": len(self.y) - n_test,
                         "fit": len(self.fit_rows), "validation": len(self.val_rows),
                         "held_out": n_test, "held_out_evaluated": len(self.test_rows)},
            "peers": self.peers, "top_parameters": self.top.model.count_params(),
            "traffic": traffic, "totals": totals, "seconds": self.seconds,
        }

    # -------------------------------------------------------------- phases
    def _align(self) -> None:
        """Align by vfl_embed's keyed pseudonyms; take the labels of the aligned entities.

        With server labels (the default) their keyed IDs are one more set to
        intersect, as in vfl_embed.
        """
        nodes = wait_for_nodes(self.grid, int(self.config.get("num-peers", 0)),
                               self.timeout)
        replies = exchange_all(
            self.grid, [protocol.pseudonyms_request(n, ConfigRecord({})) for n in nodes],
            lambda n, reply: protocol.read_pseudonyms(reply, f"node {n}"),
            phase="alignment", timeout=self.timeout, names={})
        names = protocol.peer_names(replies)
        self.names = dict(sorted(names.items(), key=lambda item: item[1]))
        self.fingerprints = {n: replies[n][1][protocol.FINGERPRINT] for n in nodes}
        pseudonyms = {names[n]: replies[n][0] for n in nodes}
        fraction = float(self.config.get("test-fraction", 0.2))
        if self.config.get("label-source", "server") == "peer":
            plan = intersect(pseudonyms, fraction, self.seed)
            y, classes = self._peer_labels(
                [n for n in nodes if replies[n][1][protocol.HAS_LABEL]], plan)
        else:
            labels = server_labels(RunConfig(self.config))
            plan = intersect(pseudonyms | {"server labels": labels.pseudonyms}, fraction,
                             self.seed)
            y = labels.values[locate(plan.pseudonyms, labels.pseudonyms)]
            classes = labels.classes
        self.positions = {n: plan.positions[names[n]] for n in nodes}
        self.peers = {name: {"rows": len(replies[n][0])} for n, name in self.names.items()}
        self.is_test = plan.is_test
        self._set_targets(y, classes)
        if not len(self.fit_rows) or not len(self.test_rows):
            raise RuntimeError(f"{len(y)} entities are held by every peer and the label "
                               "file: too few to train and to hold some out")
        log(INFO, "[split] %d peers, %d aligned entities: %d fit, %d validation, "
            "%d held out; %s", len(nodes), len(y), len(self.fit_rows), len(self.val_rows),
            int(self.is_test.sum()), self.task)

    def _peer_labels(self, holders: list[int],
                     plan: AlignmentPlan) -> tuple[np.ndarray, list[str]]:
        """Ask the one peer that holds the label column for the aligned rows' labels."""
        if len(holders) != 1:
            raise RuntimeError("label-source 'peer' needs exactly one peer holding the "
                               f"label column; found {len(holders)}")
        name = self.names[holders[0]]
        replies = self._exchange(
            [protocol.labels_request(holders[0], plan.positions[name],
                                    self.fingerprints[holders[0]])],
            lambda n, reply: protocol.read_labels(reply, name, len(plan)), "labels")
        return replies[holders[0]]

    def _setup(self) -> None:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        settings = {k: self.config[k] for k in wire.BOTTOM_KEYS if k in self.config}
        messages = [wire.setup_request(n, self.positions[n], self.is_test,
                                       settings | {protocol.FINGERPRINT: self.fingerprints[n]})
                    for n in self.names]
        replies = self._exchange(messages, self._read_metrics, "setup")
        for node, metrics in replies.items():
            self.peers[self.names[node]] |= {k: int(v) for k, v in metrics.items()}
        n_outputs = len(self.classes) if self.task == "classification" else 1
        self.top = Trainable(
            build_mlp(self.cut * len(self.names), parse_sizes(
                self.config.get("top-hidden-sizes", "64")), n_outputs,
                str(self.config.get("activation", "relu")), self.seed, name="top"),
            float(self.config.get("learning-rate", 1e-3)))

    def _train(self) -> list[dict]:
        """Mini-batch epochs with early stopping on the validation entities."""
        import keras

        self.loss = (keras.losses.MeanSquaredError() if self.task == "regression"
                     else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        batch = int(self.config.get("batch-size", 128))
        epochs, patience = int(self.config.get("epochs", 50)), int(
            self.config.get("patience", 5))
        self.steps_per_epoch = -(-len(self.fit_rows) // batch)
        best_loss, best_top, self.best_epoch, history = np.inf, None, -1, []
        for epoch in range(epochs):
            started = time.perf_counter()
            order = np.random.default_rng([self.seed, epoch]).permutation(self.fit_rows)
            losses = []
            for start in range(0, len(order), batch):
                rows = order[start:start + batch]
                loss, gradient = self.top.step_on_loss(
                    self._forward(rows), self.target[rows], self.loss)
                self._backward(rows, gradient)
                losses.append(loss * len(rows))
            entry = {"epoch": epoch, "train_loss": sum(losses) / len(order),
                     "seconds": time.perf_counter() - started}
            if len(self.val_rows):
                joined = self._forward(self.val_rows, save=epoch, keep=self.best_epoch)
                entry["validation_loss"] = float(
                    self.loss(self.target[self.val_rows], self.top(joined)))
                if entry["validation_loss"] < best_loss:
                    best_loss, self.best_epoch = entry["validation_loss"], epoch
                    best_top = self.top.model.get_weights()
            if self.curve:
                entry |= self._curve_point()
            history.append(entry)
            log(INFO, "[split] epoch %d: train loss %.4f, validation loss %.4f%s (%.1f s)",
                epoch + 1, entry["train_loss"], entry.get("validation_loss", np.nan),
                " (best)" if self.best_epoch == epoch else "", entry["seconds"])
            if len(self.val_rows) and epoch - self.best_epoch >= patience:
                break
        if best_top is not None:
            self.top.model.set_weights(best_top)
        return history

    def _test(self) -> dict[str, float]:
        return self._score(self._forward(self.test_rows, load=self.best_epoch))

    def _curve_point(self) -> dict:
        """Held-out metrics of the current weights and the training cost so far."""
        spent = {"elapsed": time.perf_counter() - self.started - self.curve_seconds}
        spent |= self._training_traffic("payload_up", "payload_down", "rounds")
        started = time.perf_counter()
        self.grid.tag = CURVE
        try:
            metrics = self._score(self._forward(self.test_rows))
        finally:
            self.grid.tag = None
        self.curve_seconds += time.perf_counter() - started
        return spent | {"held_out_metrics": metrics}

    def _training_traffic(self, *keys: str) -> dict[str, int]:
        """Sum ``keys`` of the traffic over every exchange but the held-out curve's."""
        return {key: sum(getattr(t, key) for kind, t in self.grid.traffic.items()
                         if kind != CURVE) for key in keys}

    def _score(self, joined: np.ndarray) -> dict[str, float]:
        """Score the top model on the held-out rows' joined activations."""
        rows, output = self.test_rows, self.top(joined)
        if self.task == "regression":
            return score("regression", self.y[rows],
                         output[:, 0] * self.scale + self.center)
        logits = output - output.max(axis=1, keepdims=True)
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return score("classification", self.target[rows], proba.argmax(axis=1), proba)

    # ------------------------------------------------------------- helpers
    def _set_targets(self, y: np.ndarray, classes: list[str]) -> None:
        """Task, model targets and the fit / validation / test rows."""
        train = np.flatnonzero(~self.is_test)
        order = np.random.default_rng(self.seed).permutation(train)
        n_val = round(float(self.config.get("validation-split", 0.1)) * len(train))
        self.val_rows, self.fit_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.test_rows = np.flatnonzero(self.is_test)
        self.y = y
        integral = bool(np.all(np.mod(y, 1) == 0))
        if classes or (integral and len(np.unique(y)) <= 20):
            self.task = "classification"
            seen = np.unique(y[train])
            self.classes = [classes[int(c)] if classes else str(int(c)) for c in seen]
            # As vfl_embed: held-out entities of a class no training entity has
            # cannot be predicted; they are left out of the evaluation.
            self.test_rows = self.test_rows[np.isin(y[self.test_rows], seen)]
            self.target = np.searchsorted(seen, y).astype(np.int64)
        else:
            self.task, self.classes = "regression", []
            self.center = float(y[self.fit_rows].mean())
            self.scale = float(y[self.fit_rows].std()) or 1.0
            self.target = ((y - self.center) / self.scale).astype(np.float32)[:, None]

    def _forward(self, rows: np.ndarray, save: int = -1, keep: int = -1,
                 load: int = -1) -> np.ndarray:
        """Return the peers' activations of ``rows``, joined in peer-name order."""
        messages = [wire.forward_request(n, rows, save, keep, load) for n in self.names]
        replies = self._exchange(
            messages, lambda n, r: wire.read_activations(r, self.names[n], len(rows),
                                                         self.cut), "forward")
        return np.concatenate([replies[n] for n in self.names], axis=1)

    def _backward(self, rows: np.ndarray, gradient: np.ndarray) -> None:
        """Send each peer the gradient w.r.t. its block of the joined activations."""
        cut = self.cut
        messages = [wire.backward_request(n, rows, gradient[:, i * cut:(i + 1) * cut])
                    for i, n in enumerate(self.names)]
        steps = self.top.steps
        for node, metrics in self._exchange(messages, self._read_metrics,
                                             "backward").items():
            if metrics.get(wire.STEP) != steps:
                raise PeerReplyError(self.names[node], f"is at step {metrics.get(wire.STEP)}"
                                                       f", the server at {steps}")

    def _read_metrics(self, node: int, reply: Message) -> dict[str, float]:
        return wire.read_metrics(reply, self.names[node])

    def _exchange(self, messages: list[Message], read, phase: str) -> dict:  # noqa: ANN001
        return exchange_all(self.grid, messages, read, phase=phase, timeout=self.timeout,
                            names=self.names)

    def _timed(self, phase: str, step):  # noqa: ANN001, ANN202
        self.phase = phase
        started = time.perf_counter()
        try:
            return step()
        finally:
            self.seconds[phase] = time.perf_counter() - started


def _results_dir(config: dict, run_id: int) -> Path:
    base = Path(str(config.get("results-dir", "") or "results")).expanduser().resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = "custom" if config.get("data-paths") else config.get("dataset", "custom")
    return base / f"split-{name}-{stamp}-run{run_id}"
