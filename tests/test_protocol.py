"""Tests of vfl_embed.wire.protocol on real flwr Messages: builders and reply checks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import (
    FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE,
    SUPERLINK_NODE_ID,
    ErrorCode,
)
from flwr.supercore.grpc import GRPC_MAX_MESSAGE_LENGTH
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from vfl_embed.errors import PeerReplyError
from vfl_embed.testing.in_process import over_the_wire
from vfl_embed.wire import protocol
from vfl_embed.wire.alignment import KeyedHashAlignment

PEER_NODE = 5


pytestmark = pytest.mark.usefixtures("server_identity")


@pytest.fixture
def pseudonyms() -> np.ndarray:
    ids = [f"id-{k}" for k in range(40)]
    return KeyedHashAlignment("protocol-test-secret").pseudonymize(ids)


@pytest.fixture
def embed_request() -> Message:
    return protocol.embed_request(
        node_id=PEER_NODE, positions=np.array([4, 0, 2]),
        is_test=np.array([False, True, False]),
        config=ConfigRecord({"latent-dim": 2, "fingerprint": "abc"}),
    )


@pytest.fixture
def latents() -> np.ndarray:
    return np.arange(6, dtype=np.float32).reshape(3, 2) / 7


def _with_array(reply: Message, record: str, key: str, values: np.ndarray) -> Message:
    reply.content[record][key] = Array(np.ascontiguousarray(values))
    return reply


# ------------------------------------------------------------------ requests
def test_embed_request_addresses_the_peer(embed_request: Message) -> None:
    assert embed_request.metadata.dst_node_id == PEER_NODE
    assert embed_request.metadata.message_type == protocol.TRAIN_EMBED == "train.embed"
    assert embed_request.content[protocol.CONFIG]["latent-dim"] == 2


def test_pseudonyms_request() -> None:
    request = protocol.pseudonyms_request(9, ConfigRecord({}))
    assert request.metadata.dst_node_id == 9
    assert request.metadata.message_type == "query.pseudonyms"


def test_peer_names_are_in_node_order_and_unique() -> None:
    info = lambda name: (np.zeros((1, 32), np.uint8), {"name": name})  # noqa: E731
    assert protocol.peer_names({9: info("b"), 3: info("a")}) == {3: "a", 9: "b"}
    with pytest.raises(PeerReplyError, match="a: two SuperNodes use this peer name"):
        protocol.peer_names({3: info("a"), 9: info("a")})


# ------------------------------------------------------------------- latents
def test_read_latents_accepts_a_good_reply(embed_request, latents) -> None:
    reply = protocol.latents_reply(embed_request, latents,
                                 {"reconstruction-mae": 0.25, "within-5pct": 0.5})
    assert reply.metadata.dst_node_id == SUPERLINK_NODE_ID
    assert reply.metadata.src_node_id == PEER_NODE
    values, metrics = protocol.read_latents(over_the_wire(reply), "peer-1", 3)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, latents)
    assert metrics == {"reconstruction-mae": 0.25, "within-5pct": 0.5}


def test_encode_request_carries_the_run_id_as_text() -> None:
    request = over_the_wire(protocol.encode_request(
        PEER_NODE, np.array([4, 0, 2]), 2**64 - 1, "f" * 64))
    assert request.metadata.message_type == "query.encode"
    assert request.content["config"]["train-run"] == str(2**64 - 1)


def test_read_latents_checks_the_width_it_was_trained_with(embed_request, latents) -> None:
    reply = over_the_wire(protocol.latents_reply(embed_request, latents, {}))
    assert protocol.read_latents(reply, "peer-1", 3, width=latents.shape[1])[0].shape == (
        3, latents.shape[1])
    with pytest.raises(PeerReplyError, match=r"peer-1: sent latents of shape \(3, 2\), "
                                             r"expected \(3, 5\)"):
        protocol.read_latents(reply, "peer-1", 3, width=5)


def test_latents_reply_sends_float32_or_float16_only(embed_request, latents) -> None:
    with pytest.raises(ValueError, match="float32 or float16, not float64"):
        protocol.latents_reply(embed_request, latents.astype(np.float64), {})


def test_float16_latents_arrive_as_float32_at_half_the_bytes(embed_request,
                                                             latents) -> None:
    half = latents.astype(np.float16)
    reply = over_the_wire(protocol.latents_reply(embed_request, half, {}))
    assert reply.content["latents"]["latents"].numpy().nbytes == latents.nbytes // 2
    values, _ = protocol.read_latents(reply, "peer-1", 3, bits=16)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, half.astype(np.float32))
    np.testing.assert_allclose(values, latents, rtol=2**-11)


@pytest.mark.parametrize(("dtype", "bits"), [(np.float64, 0), (np.int32, 0),
                                             (np.float16, 32), (np.float32, 16)])
def test_latents_of_the_wrong_dtype(embed_request, latents, dtype, bits) -> None:
    reply = protocol.latents_reply(embed_request, latents, {})
    _with_array(reply, "latents", "latents", latents.astype(dtype))
    with pytest.raises(PeerReplyError, match="peer-1: latents must be") as err:
        protocol.read_latents(reply, "peer-1", 3, bits=bits)
    assert f"got (3, 2) {np.dtype(dtype).name}" in str(err.value)
    assert err.value.peer == "peer-1"


def test_latents_must_be_a_matrix(embed_request, latents) -> None:
    reply = protocol.latents_reply(embed_request, latents, {})
    _with_array(reply, "latents", "latents", latents.ravel())
    with pytest.raises(PeerReplyError, match="peer-1: latents must be a 2-D"):
        protocol.read_latents(reply, "peer-1", 6)


@pytest.mark.parametrize("n_rows", [2, 4])
def test_latents_of_the_wrong_row_count(embed_request, latents, n_rows) -> None:
    reply = protocol.latents_reply(embed_request, latents, {})
    with pytest.raises(PeerReplyError, match="peer-1") as err:
        protocol.read_latents(reply, "peer-1", n_rows)
    assert "(3, 2)" in str(err.value)
    assert f"expected {n_rows} rows" in str(err.value)


def test_latents_without_columns(embed_request) -> None:
    reply = protocol.latents_reply(embed_request, np.zeros((3, 0), np.float32), {})
    with pytest.raises(PeerReplyError, match=r"peer-1: sent latents of shape \(3, 0\)"):
        protocol.read_latents(reply, "peer-1", 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_latents(embed_request, latents, bad: float) -> None:
    latents = latents.copy()
    latents[1, 1] = bad
    reply = protocol.latents_reply(embed_request, latents, {})
    with pytest.raises(PeerReplyError, match="peer-1: sent non-finite latent"):
        protocol.read_latents(reply, "peer-1", 3)


@pytest.mark.parametrize("missing", ["latents", "metrics"])
def test_reply_missing_a_record(embed_request, latents, missing: str) -> None:
    records = {
        "latents": ArrayRecord({"latents": Array(latents)}),
        "metrics": MetricRecord({"within-5pct": 0.9}),
    }
    del records[missing]
    reply = Message(RecordDict(records), reply_to=embed_request)
    with pytest.raises(PeerReplyError, match=f"peer-1: reply lacks the '{missing}'"):
        protocol.read_latents(reply, "peer-1", 3)


def test_reply_with_the_array_under_another_key(embed_request, latents) -> None:
    reply = Message(RecordDict({
        "latents": ArrayRecord({"embedding": Array(latents)}),
        "metrics": MetricRecord({}),
    }), reply_to=embed_request)
    with pytest.raises(PeerReplyError, match="peer-1: reply lacks the array"):
        protocol.read_latents(reply, "peer-1", 3)


def test_reply_with_the_wrong_record_type(embed_request) -> None:
    reply = Message(RecordDict({
        "latents": ConfigRecord({"latents": [1.0, 2.0]}),
        "metrics": MetricRecord({}),
    }), reply_to=embed_request)
    with pytest.raises(PeerReplyError, match="peer-1: reply lacks the array"):
        protocol.read_latents(reply, "peer-1", 3)


# ---------------------------------------------------------------- error replies
@pytest.mark.parametrize(
    ("reader", "args"),
    [
        (protocol.read_latents, (3,)),
        (protocol.read_labels, (3,)),
        (protocol.read_pseudonyms, ()),
    ],
)
def test_error_replies_raise_naming_the_peer(embed_request, reader, args) -> None:
    reply = Message(Error(protocol.PEER_INPUT_ERROR, "peer-2: ID column 'id' has "
                          "3 duplicate IDs"), reply_to=embed_request)
    with pytest.raises(PeerReplyError) as err:
        reader(over_the_wire(reply), "peer-2", *args)
    assert err.value.peer == "peer-2"
    assert str(err.value) == "peer-2: ID column 'id' has 3 duplicate IDs"


def test_input_error_names_the_peer_before_alignment(embed_request) -> None:
    reply = Message(Error(protocol.PEER_INPUT_ERROR, "peer-2: data file 'x.csv' "
                          "does not exist"), reply_to=embed_request)
    with pytest.raises(PeerReplyError) as err:
        protocol.read_pseudonyms(over_the_wire(reply), "node 5")
    assert (err.value.peer, err.value.reason) == ("peer-2", "data file 'x.csv' does "
                                                  "not exist")


def test_a_known_peer_cannot_speak_for_another(embed_request) -> None:
    reply = Message(Error(protocol.PEER_INPUT_ERROR, "peer-3: something"),
                    reply_to=embed_request)
    with pytest.raises(PeerReplyError) as err:
        protocol.read_latents(over_the_wire(reply), "peer-2", 3)
    assert str(err.value) == "peer-2: failed: peer-3: something"


def test_latents_beyond_the_limit_are_refused(embed_request, latents) -> None:
    reply = protocol.latents_reply(embed_request, latents * 1e7, {"fit-seconds": 1.0})
    with pytest.raises(PeerReplyError, match="peer-1: sent latent values up to"):
        protocol.read_latents(over_the_wire(reply), "peer-1", 3)


def test_class_codes_outside_the_classes_are_refused(embed_request) -> None:
    reply = protocol.labels_reply(embed_request, np.array([0.0, 1.0, 2.0]), ["a", "b"])
    with pytest.raises(PeerReplyError, match="class codes outside 0..1"):
        protocol.read_labels(over_the_wire(reply), "peer-0", 3)


def test_several_peers_in_one_error() -> None:
    err = PeerReplyError.of_peers(
        [PeerReplyError("peer-1", "sent NaN"), PeerReplyError("peer-2", "crashed")],
        " (1 peers remain)")
    assert err.peer == "peer-1, peer-2"
    assert str(err) == "peer-1: sent NaN; peer-2: crashed (1 peers remain)"


def test_error_reply_without_reason_reports_the_code(embed_request) -> None:
    reply = Message(Error(protocol.PEER_INPUT_ERROR), reply_to=embed_request)
    with pytest.raises(PeerReplyError, match="node 5: failed: error code 100"):
        protocol.check_reply(reply, "node 5")


@pytest.mark.parametrize(("code", "unreachable"), [
    (ErrorCode.NODE_UNAVAILABLE, True),
    (ErrorCode.REPLY_MESSAGE_UNAVAILABLE, True),
    (ErrorCode.MESSAGE_UNAVAILABLE, True),
    (protocol.PEER_INPUT_ERROR, False),
    (ErrorCode.CLIENT_APP_RAISED_EXCEPTION, False),
])
def test_unreachable_replies_are_told_from_peer_failures(embed_request, code,
                                                         unreachable) -> None:
    reply = Message(Error(code, "reason"), reply_to=embed_request)
    assert protocol.is_unreachable(over_the_wire(reply)) is unreachable


def test_a_normal_reply_is_not_unreachable(embed_request) -> None:
    reply = Message(RecordDict(), reply_to=embed_request)
    assert not protocol.is_unreachable(reply)


# ----------------------------------------------------------------- pseudonyms
@pytest.fixture
def pseudonyms_request() -> Message:
    return protocol.pseudonyms_request(PEER_NODE, ConfigRecord({}))


def test_read_pseudonyms_accepts_a_good_reply(pseudonyms_request, pseudonyms) -> None:
    reply = protocol.pseudonyms_reply(pseudonyms_request, "alice", pseudonyms, True)
    values, info = protocol.read_pseudonyms(over_the_wire(reply), "node 5")
    np.testing.assert_array_equal(values, pseudonyms)
    assert values.dtype == np.uint8
    assert info == {
        "name": "alice",
        "fingerprint": hashlib.sha256(pseudonyms.tobytes()).hexdigest(),
        "has-label": True,
    }


def test_fingerprint_is_sha256_of_the_bytes(pseudonyms) -> None:
    assert protocol.fingerprint(pseudonyms) == hashlib.sha256(
        pseudonyms.tobytes()).hexdigest()
    assert protocol.fingerprint(pseudonyms) != protocol.fingerprint(pseudonyms[1:])
    # Non-contiguous views hash like their contiguous copy.
    view = pseudonyms[::2]
    assert protocol.fingerprint(view) == protocol.fingerprint(view.copy())


@pytest.mark.parametrize(
    "bad",
    [
        lambda p: p.astype(np.int64),
        lambda p: p[:, :16],
        lambda p: p.ravel(),
    ],
    ids=["int64", "16-bytes", "1-D"],
)
def test_pseudonyms_of_the_wrong_shape_or_dtype(pseudonyms_request, pseudonyms,
                                                bad) -> None:
    wrong = np.ascontiguousarray(bad(pseudonyms))
    reply = protocol.pseudonyms_reply(pseudonyms_request, "alice", wrong, False)
    with pytest.raises(PeerReplyError, match=r"alice: pseudonyms must be \(n, 32\)"):
        protocol.read_pseudonyms(reply, "node 5")


def test_duplicate_pseudonyms(pseudonyms_request, pseudonyms) -> None:
    doubled = np.concatenate([pseudonyms, pseudonyms[3:4]])
    reply = protocol.pseudonyms_reply(pseudonyms_request, "alice", doubled, False)
    with pytest.raises(PeerReplyError, match="alice: sent duplicate pseudonyms"):
        protocol.read_pseudonyms(reply, "node 5")


def test_no_pseudonyms(pseudonyms_request) -> None:
    empty = np.zeros((0, 32), dtype=np.uint8)
    reply = protocol.pseudonyms_reply(pseudonyms_request, "alice", empty, False)
    with pytest.raises(PeerReplyError, match="alice: sent no pseudonyms"):
        protocol.read_pseudonyms(reply, "node 5")


def test_fingerprint_mismatch(pseudonyms_request, pseudonyms) -> None:
    reply = protocol.pseudonyms_reply(pseudonyms_request, "alice", pseudonyms, False)
    reply.content["peer"]["fingerprint"] = protocol.fingerprint(pseudonyms[::-1])
    with pytest.raises(PeerReplyError, match="alice: pseudonyms do not match"):
        protocol.read_pseudonyms(reply, "node 5")


def test_tampered_pseudonyms_fail_the_fingerprint(pseudonyms_request,
                                                  pseudonyms) -> None:
    reply = protocol.pseudonyms_reply(pseudonyms_request, "alice", pseudonyms, False)
    _with_array(reply, "pseudonyms", "pseudonyms", pseudonyms[::-1])
    with pytest.raises(PeerReplyError, match="alice: pseudonyms do not match"):
        protocol.read_pseudonyms(reply, "node 5")


@pytest.mark.parametrize("key", ["name", "fingerprint", "has-label"])
def test_peer_info_missing_a_key(pseudonyms_request, pseudonyms, key: str) -> None:
    reply = protocol.pseudonyms_reply(pseudonyms_request, "alice", pseudonyms, False)
    del reply.content["peer"][key]
    with pytest.raises(PeerReplyError, match=f"node 5: reply lacks 'peer.{key}'"):
        protocol.read_pseudonyms(reply, "node 5")


def test_pseudonyms_reply_missing_a_record(pseudonyms_request, pseudonyms) -> None:
    reply = Message(RecordDict({
        "pseudonyms": ArrayRecord({"pseudonyms": Array(pseudonyms)}),
    }), reply_to=pseudonyms_request)
    with pytest.raises(PeerReplyError, match="node 5: reply lacks the 'peer' record"):
        protocol.read_pseudonyms(reply, "node 5")
    reply = Message(RecordDict({
        "peer": ConfigRecord({"name": "alice", "fingerprint": "x", "has-label": False}),
    }), reply_to=pseudonyms_request)
    with pytest.raises(PeerReplyError, match="alice: reply lacks the 'pseudonyms'"):
        protocol.read_pseudonyms(reply, "node 5")


# --------------------------------------------------------------------- labels
@pytest.fixture
def labels_request() -> Message:
    return protocol.labels_request(PEER_NODE, np.array([2, 0, 1]), "f" * 64)


def test_read_labels_numeric(labels_request) -> None:
    reply = protocol.labels_reply(labels_request, np.array([1.5, -2.0, 3.25]), [])
    labels, classes = protocol.read_labels(over_the_wire(reply), "alice", 3)
    assert labels.dtype == np.float64
    np.testing.assert_array_equal(labels, [1.5, -2.0, 3.25])
    assert classes == []


def test_read_labels_with_class_names(labels_request) -> None:
    reply = protocol.labels_reply(labels_request, np.array([1, 0, 1]), ["no", "yes"])
    labels, classes = protocol.read_labels(over_the_wire(reply), "alice", 3)
    np.testing.assert_array_equal(labels, [1.0, 0.0, 1.0])
    assert classes == ["no", "yes"]


def test_labels_of_the_wrong_shape(labels_request) -> None:
    reply = protocol.labels_reply(labels_request, np.zeros(2), [])
    with pytest.raises(PeerReplyError, match=r"alice: sent labels of shape \(2,\), "
                                             r"expected \(3,\)"):
        protocol.read_labels(reply, "alice", 3)
    reply = protocol.labels_reply(labels_request, np.zeros(4), [])
    with pytest.raises(PeerReplyError, match=r"alice: array 'labels.labels' declares 4 "
                                             r"values, more than the 3 asked for"):
        protocol.read_labels(reply, "alice", 3)
    reply = protocol.labels_reply(labels_request, np.zeros((3, 1)), [])
    with pytest.raises(PeerReplyError, match="alice: sent labels of shape"):
        protocol.read_labels(reply, "alice", 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_labels(labels_request, bad: float) -> None:
    reply = protocol.labels_reply(labels_request, np.array([1.0, bad, 0.0]), [])
    with pytest.raises(PeerReplyError, match="alice: sent missing, non-finite"):
        protocol.read_labels(reply, "alice", 3)


def test_labels_reply_missing_a_record(labels_request) -> None:
    reply = Message(RecordDict({
        "labels": ArrayRecord({"labels": Array(np.zeros(3))}),
    }), reply_to=labels_request)
    with pytest.raises(PeerReplyError, match="alice: reply lacks the 'label-info'"):
        protocol.read_labels(reply, "alice", 3)
    reply = Message(RecordDict({"label-info": ConfigRecord({"classes": []})}),
                    reply_to=labels_request)
    with pytest.raises(PeerReplyError, match="alice: reply lacks the 'labels'"):
        protocol.read_labels(reply, "alice", 3)


# ------------------------------------------------------------ PSI blinding
def test_blind_request_and_reply_round_trip(pseudonyms) -> None:
    request = over_the_wire(protocol.blind_request(PEER_NODE, pseudonyms, "fp"))
    assert request.metadata.message_type == protocol.QUERY_BLIND
    assert request.content[protocol.CONFIG][protocol.FINGERPRINT] == "fp"
    np.testing.assert_array_equal(protocol.read_points_request(request), pseudonyms)
    reply = over_the_wire(protocol.blind_reply(request, pseudonyms[::-1]))
    np.testing.assert_array_equal(protocol.read_points(reply, "bob", 40), pseudonyms[::-1])


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p[:-1], r"bob: blinded points must be \(40, 32\) uint8, got \(39, 32\)"),
    (lambda p: p.astype(np.int16), r"got \(40, 32\) int16"),
    (lambda p: np.concatenate([p[:-1], p[:1]]), "bob: sent repeated blinded points"),
])
def test_bad_blinded_points_are_refused(pseudonyms, change, message) -> None:
    request = protocol.blind_request(PEER_NODE, pseudonyms, "fp")
    reply = over_the_wire(protocol.blind_reply(request, change(pseudonyms)))
    with pytest.raises(PeerReplyError, match=message):
        protocol.read_points(reply, "bob", 40)


def test_a_million_latents_travel_in_chunks_far_under_the_grpc_limit(embed_request) -> None:
    # Flower sends a message as a tree of objects, pushed and pulled one per
    # gRPC call, and splits every array into chunks: a 1,000,000 x 32 float32
    # reply (128 MB) never puts more than one chunk in one gRPC message.
    latents = np.arange(32_000_000, dtype=np.float32).reshape(1_000_000, 32)
    reply = protocol.latents_reply(embed_request, latents, {"rows": 1e6})
    objects = get_all_nested_objects(reply)
    sizes = [len(obj.deflate()) for obj in objects.values()]
    assert sum(sizes) > latents.nbytes
    assert max(sizes) <= FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE + 1024
    assert FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE + 1024 < GRPC_MAX_MESSAGE_LENGTH / 100


def test_an_oversized_reply_is_refused_before_it_is_decoded(embed_request):
    # 20,000,000 declared rows of latents for a 3-row request: refused on the
    # record's metadata, so the server never builds the array.
    huge = Array(dtype="float32", shape=(20_000_000, 4), stype="numpy.ndarray", data=b"")
    reply = Message(RecordDict({protocol.LATENTS: ArrayRecord({protocol.LATENTS: huge}),
                                protocol.METRICS: MetricRecord({})}),
                    reply_to=embed_request)
    with pytest.raises(PeerReplyError, match="peer-1: array 'latents.latents' declares "
                                             "80000000 values, more than the 300000"):
        protocol.read_latents(reply, "peer-1", 3)
