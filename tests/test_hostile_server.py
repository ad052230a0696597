"""A deviating server against the peers' own checks, through the real ClientApp.

Each test plays a server that writes its own requests, as a review tried an
attacker would: rows outside the aligned set, duplicates, the wrong types, a
second release with another noise level, privacy switched off. The peers
are vfl_embed's ClientApp, reached through the in-process grid (messages
serialized as between Flower processes; each node keeps its Flower context
for the run). Every refusal is an input-error reply of one line that names
the peer and the rule, and no data value.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from in_process_grid import two_peer_grid

from vfl_embed.testing.in_process import InProcessGrid
from vfl_embed.wire import protocol

N_ROWS = 60
NODE = 101  # peer-0, the label holder


@pytest.fixture
def grid(tmp_path, server_identity) -> InProcessGrid:
    """Two simulated peers over 60 entities; raw columns, so no TensorFlow."""
    return two_peer_grid(tmp_path, N_ROWS, label=True)


def ask(grid: InProcessGrid, request: Message) -> Message:
    request.metadata.__dict__["_message_id"] = "m"
    (reply,) = grid.send_and_receive([request])
    return reply


def fingerprint(grid: InProcessGrid, node: int = NODE) -> str:
    reply = ask(grid, protocol.pseudonyms_request(node, ConfigRecord({})))
    return protocol.read_pseudonyms(reply, f"node {node}")[1][protocol.FINGERPRINT]


def embed(grid: InProcessGrid, positions, is_test=None, node: int = NODE, **config):
    is_test = np.arange(len(positions)) % 4 == 0 if is_test is None else is_test
    settings = {protocol.FINGERPRINT: fingerprint(grid, node), "encoder": "none",
                "audit": False} | config
    return ask(grid, protocol.embed_request(node, np.asarray(positions), is_test,
                                            ConfigRecord(settings)))


def refusal(reply: Message) -> str:
    assert reply.has_error() and reply.error.code == protocol.PEER_INPUT_ERROR
    return str(reply.error.reason)


def with_plan(grid: InProcessGrid, plan: dict[str, np.ndarray]) -> Message:
    content = RecordDict({
        protocol.PLAN: ArrayRecord({k: Array(v) for k, v in plan.items()}),
        protocol.CONFIG: ConfigRecord({protocol.FINGERPRINT: fingerprint(grid)}),
    })
    return Message(content, dst_node_id=NODE, message_type=protocol.TRAIN_EMBED)


def test_a_good_request_is_answered(grid):
    reply = embed(grid, np.arange(N_ROWS))
    latents, _ = protocol.read_latents(reply, "peer-0", N_ROWS)
    assert latents.shape == (N_ROWS, 4)


@pytest.mark.parametrize(("plan", "said"), [
    ({"positions": np.array([1, 1, 2], np.int64)}, "repeated row positions"),
    ({"positions": np.array([0, 60], np.int64)}, "out of range for a table of 60"),
    ({"positions": np.array([-1, 2], np.int64)}, "out of range"),
    ({"positions": np.array([0.0, 1.0])}, "positions must be a 1-D int64 array"),
    ({"positions": np.array([True, False])}, "positions must be a 1-D int64 array"),
    ({"positions": np.zeros((2, 2), np.int64)}, "positions must be a 1-D int64 array"),
    ({"positions": np.arange(10, dtype=np.int64), "is-test": np.zeros(9, np.uint8)},
     "one 0 or 1 per position"),
    ({"positions": np.arange(3, dtype=np.int64), "is-test": np.array([0, 2, 0], np.uint8)},
     "one 0 or 1 per position"),
    ({"positions": np.arange(3, dtype=np.int64), "is-test": np.ones(3, np.uint8)},
     "holds no training row"),
    ({"positions": np.arange(3, dtype=np.int64), "is-test": np.array([0, 1, 0], np.uint8),
      "train-targets": np.array([1.0, np.nan])}, "one finite value per training row"),
    ({"positions": np.arange(3, dtype=np.int64), "is-test": np.array([0, 1, 0], np.uint8),
      "train-targets": np.array([1.0])}, "one finite value per training row"),
])
def test_a_malformed_plan_is_refused(grid, plan, said):
    reason = refusal(ask(grid, with_plan(grid, plan)))
    assert reason.startswith("peer-0: ") and said in reason


def test_a_huge_plan_is_refused_before_it_is_decoded(grid):
    # Declared 20,000,000 positions on a 60-row table: refused on the record's
    # metadata, so the peer never builds the array.
    huge = Array(dtype="int64", shape=(20_000_000,), stype="numpy.ndarray", data=b"")
    content = RecordDict({
        protocol.PLAN: ArrayRecord({protocol.POSITIONS: huge}),
        protocol.CONFIG: ConfigRecord({protocol.FINGERPRINT: fingerprint(grid)}),
    })
    request = Message(content, dst_node_id=NODE, message_type=protocol.QUERY_LABELS)
    assert "at most 60 values" in refusal(ask(grid, request))


def test_every_request_needs_the_fingerprint(grid):
    request = protocol.labels_request(NODE, np.arange(5), "0" * 64)
    assert "the data changed since alignment" in refusal(ask(grid, request))
    bare = Message(RecordDict({protocol.PLAN: ArrayRecord(
        {protocol.POSITIONS: Array(np.arange(5, dtype=np.int64))})}),
        dst_node_id=NODE, message_type=protocol.QUERY_LABELS)
    assert refusal(ask(grid, bare)) == "peer-0: the request carries no fingerprint"


def test_rows_outside_the_aligned_set_are_refused(grid):
    aligned = np.arange(0, N_ROWS, 2)
    labels = ask(grid, protocol.labels_request(NODE, aligned, fingerprint(grid)))
    assert len(protocol.read_labels(labels, "peer-0", len(aligned))[0]) == len(aligned)
    reason = refusal(embed(grid, np.arange(N_ROWS)))
    assert reason == ("peer-0: refused by its policy (aligned set): the request names "
                      "rows outside the run's aligned rows")
    assert not embed(grid, aligned[::-1]).has_error()  # any order of the same rows


def test_a_second_release_in_a_run_is_refused(grid):
    """The noise-cancelling attack needs two releases of one run; the second is refused."""
    first = embed(grid, np.arange(N_ROWS), **{"dp-noise-multiplier": 4.0})
    assert not first.has_error()
    reason = refusal(embed(grid, np.arange(N_ROWS), **{"dp-noise-multiplier": 1.0}))
    assert "(one release per run)" in reason
    other_peer = embed(grid, np.arange(N_ROWS), node=102)
    assert not other_peer.has_error()  # the ledger is each peer's own


@pytest.mark.parametrize(("rule", "value", "request_config", "said"), [
    ("min-noise-multiplier", 1.0, {"dp-noise-multiplier": 0.0},
     "asked for noise 0, less than 1"),
    ("require-audit", True, {"audit": False}, "asked to release without the audit"),
    ("max-latent-ratio", 0.5, {}, "asked for 4 latent dimensions from 4 encoded features"),
])
def test_the_peers_own_policy_overrides_the_server(grid, rule, value, request_config,
                                                   said):
    grid.contexts[NODE].node_config[rule] = value
    reason = refusal(embed(grid, np.arange(N_ROWS), **request_config))
    assert reason == f"peer-0: refused by its policy ({rule}): {said}"


def test_encoder_size_and_steps_are_bounded(grid):
    grid.contexts[NODE].node_config |= {"max-encoder-weights": 900}
    reason = refusal(embed(grid, np.arange(N_ROWS), encoder="autoencoder",
                           **{"latent-dim": 2, "hidden-sizes": "64"}))
    # 4 -> 64 -> 2 -> 64 -> 4 dense layers: 320 + 130 + 192 + 260 weights
    assert reason == ("peer-0: refused by its policy (max-encoder-weights): the encoder "
                      "would have 902 weights")
    grid.contexts[NODE].node_config |= {"max-steps": 10}
    reason = refusal(embed(grid, np.arange(N_ROWS), encoder="autoencoder",
                           **{"latent-dim": 2, "hidden-sizes": "8", "epochs": 50,
                              "batch-size": 9}))
    # 45 training rows in batches of 9: 5 steps an epoch, 50 epochs
    assert reason == ("peer-0: refused by its policy (max-steps): the encoder would "
                      "train up to 250 steps")


def test_clear_labels_are_refused_unless_the_peer_accepts_them(grid):
    grid.contexts[102].node_config["accept-labels"] = "none"
    is_test = np.arange(N_ROWS) % 4 == 0
    request = protocol.embed_request(
        102, np.arange(N_ROWS), is_test,
        ConfigRecord({protocol.FINGERPRINT: fingerprint(grid, 102), "encoder": "none",
                      "audit": False}),
        train_targets=np.zeros(int((~is_test).sum())))
    assert refusal(ask(grid, request)) == ("peer-1: refused by its policy (accept-labels): "
                                           "the request sends training labels in clear")


def test_a_run_encodes_each_row_once_at_most(grid):
    grid.contexts[NODE].node_config["max-rows"] = 40
    assert "(max-rows): the run would encode 60 rows, more than 40" in refusal(
        embed(grid, np.arange(N_ROWS)))
