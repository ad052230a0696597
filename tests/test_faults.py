"""Faults in the federation, through the real strategy and ClientApp code.

Peers misbehave on purpose (``faulty_client.py``); the network's and the
SuperLink's faults are played by tampering with the replies an in-process
Grid delivers. Every fault must stop the run with an error naming the peer,
or, when ``min-peers`` allows, leave that peer out without touching the
other peers' rows. The same faults through a real Flower simulation are in
``test_faults_e2e.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from faulty_client import app as faulty_app
from flwr.app import ConfigRecord, Error, Message
from flwr.common.constant import ErrorCode
from in_process_grid import InProcessGrid

from vfl_embed.deploy.flwr_commands import PROJECT_ROOT
from vfl_embed.errors import PeerReplyError, VerticalRunError
from vfl_embed.report.files import write_report
from vfl_embed.server.builders import strategy_from_config
from vfl_embed.wire import protocol
from vfl_embed.wire.alignment import KeyedHashAlignment, intersect

pytestmark = pytest.mark.usefixtures("server_identity")

N_ENTITIES = 240


def write_peers(directory, num_peers: int = 3, label=None) -> list[str]:
    """Synthetic peer files over the same entities; peer-0 holds the label ``y``."""
    rng = np.random.default_rng(0)
    ids = [f"E{k:04d}" for k in range(N_ENTITIES)]
    columns = rng.normal(size=(num_peers, N_ENTITIES, 3))
    paths = []
    for peer in range(num_peers):
        frame = pd.DataFrame(columns[peer], columns=[f"p{peer}c{j}" for j in range(3)])
        frame.insert(0, "id", ids)
        if peer == 0:
            frame["y"] = columns.sum(axis=(0, 2)) if label is None else label
        path = directory / f"peer-{peer}.csv"
        frame.sample(frac=1.0, random_state=peer).to_csv(path, index=False)
        paths.append(str(path))
    return paths


def config(paths: list[str], **overrides) -> dict:
    """A run config for these files: raw columns as latents, so no TensorFlow."""
    return {
        "data-paths": ";".join(paths), "id-column": "id", "target": "y",
        "label-source": "peer", "encoder": "none", "alignment-secret": "secret-of-the-peers",
        "test-fraction": 0.25, "timeout": 5.0, "seed": 42, "min-entities": 50,
        "audit": False,
    } | overrides


def run(run_config: dict, tamper=None):
    """Run the strategy on an in-process federation; return (strategy, error)."""
    num_peers = len(run_config["data-paths"].split(";"))
    strategy = strategy_from_config(run_config)
    grid = InProcessGrid(faulty_app, run_config, num_peers, tamper)
    try:
        strategy.start(grid, timeout=float(run_config["timeout"]))
    except (PeerReplyError, VerticalRunError) as err:
        return strategy, err
    return strategy, None


@pytest.fixture
def paths(tmp_path) -> list[str]:
    return write_peers(tmp_path)


@pytest.fixture
def two_peer_metrics(paths) -> dict[str, float]:
    """Held-out metrics of an honest run of peer-0 and peer-1 alone."""
    strategy, error = run(config(paths[:2]))
    assert error is None
    return strategy.result.metrics


# -------------------------------------------------------- spoiled replies
SPOILED = {
    "nan-latents": "peer-2: sent non-finite latent values",
    "extra-rows": f"peer-2: sent latents of shape ({N_ENTITIES + 5}, 3), expected "
                  f"{N_ENTITIES} rows",
    "missing-rows": f"peer-2: sent latents of shape ({N_ENTITIES - 1}, 3)",
    "float64": "peer-2: latents must be a 2-D float32 matrix",
    "huge": "peer-2: sent latent values up to",
    "no-latents": "peer-2: reply lacks the 'latents' record",
    "crash": "peer-2: failed: RuntimeError(\"the peer's process crashed\")",
}


@pytest.mark.parametrize("fault", sorted(SPOILED))
def test_spoiled_reply_stops_the_run_naming_the_peer(paths, fault):
    strategy, error = run(config(paths, faults=f"peer-2={fault}"))
    assert isinstance(error, PeerReplyError)
    assert str(error).startswith(SPOILED[fault]), str(error)
    assert error.peer == "peer-2"
    # What the finished phase produced is kept, with a clear status.
    result = strategy.result
    assert (result.status, result.phase) == ("failed", "fit-embed")
    assert result.peer_rows == {f"peer-{k}": N_ENTITIES for k in range(3)}
    assert result.n_entities == N_ENTITIES and not result.metrics
    assert sorted(result.peer_metrics) == ["peer-0", "peer-1"]


@pytest.mark.parametrize("fault", sorted(SPOILED))
def test_spoiled_reply_is_left_out_with_min_peers(paths, two_peer_metrics, fault):
    strategy, error = run(config(paths, faults=f"peer-2={fault}", **{"min-peers": 2}))
    assert error is None
    result = strategy.result
    assert result.status == "completed"
    assert list(result.dropped_peers) == ["peer-2"]
    assert SPOILED[fault].removeprefix("peer-2: ") in result.dropped_peers["peer-2"]
    assert sorted(result.peer_metrics) == ["peer-0", "peer-1"]
    # peer-2's reply changed nothing of the others: the same numbers as a run
    # without it.
    assert result.metrics == two_peer_metrics


def test_several_spoiled_replies_are_named_together(paths):
    _, error = run(config(paths, faults="peer-1=nan-latents;peer-2=crash"))
    assert error.peer == "peer-1, peer-2"
    assert str(error).startswith("peer-1: sent non-finite latent values; peer-2: failed")


def test_too_few_peers_left_stops_the_run(paths):
    _, error = run(config(paths, faults="peer-1=huge;peer-2=crash",
                          **{"min-peers": 2}))
    assert str(error).endswith("(1 peers remain, min-peers=2)")


def test_stopped_run_report_keeps_what_it_finished(paths, tmp_path):
    strategy, error = run(config(paths, faults="peer-1=crash"))
    written = write_report(strategy.result, tmp_path / "report", {})
    assert sorted(written) == ["json", "markdown"]  # no model, no chart
    report = pd.read_json(written["json"], typ="series")
    assert (report["status"], report["phase"]) == ("failed", "fit-embed")
    assert report["error"] == str(error)
    # The peers whose latents arrived keep their metrics.
    assert sorted(report["peers"]) == ["peer-0", "peer-2"]
    assert report["peers"]["peer-0"]["latent_bytes_sent"] == N_ENTITIES * 3 * 4
    assert report["entities"]["aligned"] == N_ENTITIES
    assert "**Stopped in the fit-embed phase**: peer-1: failed" in \
        written["markdown"].read_text()


# ------------------------------------------- the network's and SuperLink's
def _embed_phase(tamper):
    """Apply ``tamper`` to the embed replies only."""

    def apply(messages, replies):
        if messages[0].metadata.message_type != "train.embed":
            return replies
        return tamper(replies)

    return apply


def _reply_of(replies, node_id: int) -> Message:
    return next(r for r in replies if r.metadata.src_node_id == node_id)


def test_stray_reply_is_ignored(paths):
    def stray(replies):
        extra = _reply_of(replies, 102)
        copy = Message(extra.content, reply_to=extra)  # answers no request
        copy.metadata.__dict__["_src_node_id"] = 999
        return [*replies, copy]

    clean, _ = run(config(paths))
    strategy, error = run(config(paths), _embed_phase(stray))
    assert error is None
    assert strategy.result.metrics == clean.result.metrics


def test_second_reply_from_one_peer_rejects_it(paths):
    _, error = run(config(paths),
                   _embed_phase(lambda r: [*r, _reply_of(r, 102)]))
    assert str(error) == "peer-1: answered the embed request twice"


def test_reply_forged_for_another_peer_is_rejected(paths):
    def forge(replies):
        reply = _reply_of(replies, 103)
        reply.metadata.__dict__["_src_node_id"] = 101
        return replies

    _, error = run(config(paths), _embed_phase(forge))
    assert str(error) == "peer-2: its embed reply came from peer-0"


def test_silent_peer_stops_the_run(paths):
    _, error = run(config(paths),
                   _embed_phase(lambda r: [x for x in r if x.metadata.src_node_id != 103]))
    assert str(error) == ("peer-2: did not answer the embed phase within 5 s, or the "
                          "SuperLink lost it")


def test_superlink_reporting_a_lost_node_counts_as_silent(paths, two_peer_metrics):
    def lose(replies):
        lost = _reply_of(replies, 103)
        unavailable = Message(Error(ErrorCode.NODE_UNAVAILABLE, "node offline"),
                              reply_to=lost)
        return [r for r in replies if r is not lost] + [unavailable]

    strategy, error = run(config(paths, **{"min-peers": 2}), _embed_phase(lose))
    assert error is None
    assert "did not answer the embed phase" in strategy.result.dropped_peers["peer-2"]
    assert strategy.result.metrics == two_peer_metrics


def test_unknown_node_cannot_join_the_latents(paths):
    strategy, error = run(config(paths))
    assert error is None
    stranger = Message(Error(ErrorCode.UNKNOWN, "x"), reply_to=_request_to(103))
    stranger.metadata.__dict__["_src_node_id"] = 999
    with pytest.raises(PeerReplyError, match="node 999: is not a peer of this run"):
        strategy.aggregate_train(1, [stranger])


def _request_to(node_id: int) -> Message:
    request = protocol.pseudonyms_request(node_id, ConfigRecord({}))
    request.metadata.__dict__["_message_id"] = "m-1"
    return request


# ------------------------------------------------------ a peer's bad data
def test_peer_with_bad_data_is_left_out_at_alignment(tmp_path, paths, two_peer_metrics):
    broken = [*paths[:2], str(tmp_path / "missing.csv")]
    strategy, error = run(config(broken, **{"min-peers": 2}))
    assert error is None
    assert list(strategy.result.dropped_peers) == ["peer-2"]
    assert "missing.csv" in strategy.result.dropped_peers["peer-2"]
    assert strategy.result.metrics == two_peer_metrics


def test_no_common_entity_is_explained(tmp_path, paths):
    table = pd.read_csv(paths[1])
    table["id"] = "other-" + table["id"]
    table.to_csv(paths[1], index=False)
    strategy, error = run(config(paths))
    assert str(error) == ("no entity is held by every peer: check that all peers use "
                          "the same alignment secret and write IDs alike ('007' and "
                          "'7' are different IDs)")
    assert strategy.result.n_entities == 0 and len(strategy.result.peer_rows) == 3


def test_label_file_not_covering_aligned_entities(tmp_path, paths):
    peer_0 = pd.read_csv(paths[0])
    peer_0[["id", "y"]].iloc[100:].to_csv(tmp_path / "labels.csv", index=False)
    peer_0.drop(columns="y").to_csv(paths[0], index=False)  # the server holds the label
    _, error = run(config(paths, **{"label-source": "server",
                                    "label-path": str(tmp_path / "labels.csv")}))
    assert str(error) == ("the label file does not cover 100 of the 240 entities all "
                          "peers hold; add their labels or drop those rows")


# -------------------------------------------------------------- labels
def test_single_class_label_is_refused(tmp_path):
    paths = write_peers(tmp_path, label=["yes"] * N_ENTITIES)
    _, error = run(config(paths))
    assert str(error) == ("the label has 1 class in the "
                          f"{_n_train()} training entities; classification "
                          "needs at least two")


def test_constant_regression_label_is_refused(tmp_path):
    paths = write_peers(tmp_path, label=[3.5] * N_ENTITIES)
    _, error = run(config(paths, task="regression"))
    assert "the label is constant over the" in str(error)


def test_held_out_class_unseen_in_training_is_left_out(tmp_path):
    labels = np.where(np.arange(N_ENTITIES) % 2 == 0, "even", "odd").astype(object)
    first_test = _held_out_positions()[0]
    labels[first_test] = "only-in-test"
    paths = write_peers(tmp_path, label=labels)
    strategy, error = run(config(paths))
    assert error is None
    result = strategy.result
    assert result.unseen_class_test_rows == 1
    assert result.classes == ["even", "odd"]
    assert result.n_test == N_ENTITIES - result.n_train - 1
    assert len(result.y_test) == result.n_test


def _held_out_positions() -> np.ndarray:
    """Entity numbers the split holds out (it depends on the pseudonym only)."""
    ids = [f"E{k:04d}" for k in range(N_ENTITIES)]
    pseudonyms = KeyedHashAlignment("secret-of-the-peers").pseudonymize(ids)
    plan = intersect({"all": pseudonyms}, 0.25, 42)
    return np.sort(plan.positions["all"][plan.is_test])


def _n_train() -> int:
    return N_ENTITIES - len(_held_out_positions())


# ------------------------------------------- through a real Flower simulation
@pytest.fixture(scope="module")
def faulty_app_dir(tmp_path_factory):
    """This project's Flower App with the misbehaving ClientApp in its place."""
    directory = tmp_path_factory.mktemp("faulty_app")
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    text = text.replace('clientapp = "vfl_embed.client_app:app"',
                        'clientapp = "faulty_client:app"')
    text = text.replace("[tool.flwr.app.config]\n", '[tool.flwr.app.config]\nfaults = ""\n')
    (directory / "pyproject.toml").write_text(text)
    shutil.copy(Path(__file__).with_name("faulty_client.py"), directory)
    return directory


@pytest.mark.slow
def test_faulty_peers_through_flower(federation, faulty_app_dir, tmp_path, paths):
    """Seven peers, five of them faulty: spoiled, crashed and late replies."""
    faults = {"peer-2": "nan-latents", "peer-3": "extra-rows", "peer-4": "float64",
              "peer-5": "crash", "peer-6": "late"}
    (tmp_path / "extra").mkdir()
    extra = write_peers(tmp_path / "extra", num_peers=7)[3:]
    run_config = config(
        paths + extra, faults=";".join(f"{p}={f}" for p, f in faults.items()),
        # Seven SuperNodes start their Ray actors during the first phase; on a
        # busy 2-core machine 15 s was once too short for that cold start.
        timeout=30.0, **{"min-peers": 2, "results-dir": str(tmp_path / "results")},
    )
    finished = federation.run(run_config, num_peers=7, timeout=600, app_dir=faulty_app_dir)
    report = finished.report
    assert report["status"] == "completed", finished.output[-3000:]
    dropped = report["dropped_peers"]
    assert sorted(dropped) == sorted(faults)
    assert dropped["peer-2"] == "sent non-finite latent values"
    assert dropped["peer-3"].startswith(f"sent latents of shape ({N_ENTITIES + 5}, 3)")
    assert dropped["peer-4"].startswith("latents must be a 2-D float32 matrix")
    assert dropped["peer-5"].startswith("failed: ")
    assert dropped["peer-6"] == ("did not answer the embed phase within 30 s, or the "
                                 "SuperLink lost it")
    assert sorted(report["peers"]) == ["peer-0", "peer-1"]
    # The honest peers' result is the in-process run's, to the last bit.
    honest, _ = run(config(paths[:2]))
    assert report["held_out_metrics"] == honest.result.metrics


def test_unexpected_peer_error_reaches_the_server_without_its_text(paths):
    # A bug inside every peer raises an error whose message quotes a value.
    faults = "peer-0=bug;peer-1=bug;peer-2=bug"
    _, error = run(config(paths, faults=faults))
    assert str(error).startswith("peer-0: ValueError while handling train.embed; "
                                 "details in the peer's log")
    assert error.peer == "peer-0, peer-1, peer-2"
    assert "x9q" not in str(error)
