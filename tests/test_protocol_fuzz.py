"""Fuzz tests of the server's reply validation in vfl_embed.wire.protocol.

Contract: whatever a reply holds, ``read_pseudonyms``, ``read_labels`` and
``read_latents`` either return valid values or raise ``PeerReplyError`` whose
message starts with the peer's name; never any other exception. Replies are
real Flower messages, half of them sent through Flower's serialization.

The profile loaded in conftest.py sets the number of examples (``VFL_FUZZ=long``
for a long run).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, SType
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import event, example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vfl_embed.errors import PeerReplyError
from vfl_embed.wire import protocol
from vfl_embed.wire.alignment import PSEUDONYM_BYTES, KeyedHashAlignment

# The name the server gives a peer: its node before the peer tells its own.
PEERS = {"pseudonyms": "node 5", "labels": "alice", "latents": "alice"}
PEER_NODE = 5
N_ROWS = 4


def _requests() -> dict[str, Message]:
    """One request per message type, built as the ServerApp runtime would."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskIdentity, "_task_id", 1)
        patch.setattr(TaskIdentity, "_run_id", 7)
        patch.setattr(TaskIdentity, "_node_id", SUPERLINK_NODE_ID)
        positions, is_test = np.arange(N_ROWS), np.zeros(N_ROWS, dtype=bool)
        return {
            "pseudonyms": protocol.pseudonyms_request(PEER_NODE, ConfigRecord({})),
            "labels": protocol.labels_request(PEER_NODE, positions, "f" * 64),
            "latents": protocol.embed_request(PEER_NODE, positions, is_test,
                                              ConfigRecord({})),
        }


REQUESTS = _requests()

# np.save of a structured dtype with non-ASCII field names writes format 3.0.
pytestmark = pytest.mark.filterwarnings("ignore:Stored array in format 3.0")


# ----------------------------------------------------------------- strategies
int64s = st.integers(-(2**63), 2**63 - 1)
_scalars = (int64s, st.floats(), st.text(max_size=8), st.binary(max_size=8), st.booleans())
config_values = st.one_of(*_scalars, *(st.lists(s, max_size=3) for s in _scalars))
metric_values = st.one_of(int64s, st.floats(), st.lists(int64s, max_size=3),
                          st.lists(st.floats(), max_size=3))

# Any dtype numpy can save without pickling, in either byte order.
dtypes = st.one_of(
    hnp.scalar_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.byte_string_dtypes(max_len=4),
    hnp.unicode_string_dtypes(max_len=4),
    hnp.array_dtypes(max_size=2),
)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
any_arrays = hnp.arrays(dtypes, shapes)


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def _npz(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, values)
    return buffer.getvalue()


# Arrays whose bytes are not one plain .npy: random bytes, a cut .npy, an .npz
# archive, a header claiming far more data than sent, another stype.
raw_arrays = st.builds(
    Array,
    dtype=st.sampled_from(["float32", "uint8", "float64", "", "object"]),
    shape=st.lists(st.integers(0, 5), max_size=3).map(tuple),
    stype=st.sampled_from([SType.NUMPY, SType.NUMPY, "torch", ""]),
    data=st.one_of(
        st.binary(max_size=64),
        st.tuples(any_arrays.map(_npy), st.integers(0, 200)).map(lambda d: d[0][:d[1]]),
        any_arrays.map(_npz),
        st.just(_npy(np.zeros(3, np.uint8)).replace(b"(3,)", b"(1099511627776,)")),
    ),
)


def mostly(likely: st.SearchStrategy, rest: st.SearchStrategy) -> st.SearchStrategy:
    """Draw from ``likely`` three times in four, else from ``rest``."""
    return st.integers(0, 3).flatmap(lambda k: rest if k == 3 else likely)


def arrays_of(
    dtypes: st.SearchStrategy, cols: st.SearchStrategy | None = None
) -> st.SearchStrategy[np.ndarray]:
    """Arrays near a valid shape, ``(rows,)`` or ``(rows, cols)``, or any shape."""
    rows = st.integers(0, 5)
    near = st.tuples(rows) if cols is None else st.tuples(rows, cols)
    return hnp.arrays(dtypes, mostly(near, shapes))


@st.composite
def records(draw, good: dict[str, st.SearchStrategy], kind: type = ConfigRecord):
    """A record meant to be a ``kind`` holding ``good``'s keys.

    Missing (None), of another record type, or a ``kind`` whose keys are each
    good (most often), of a wrong value or type, or absent; maybe an unknown key.
    """
    meant = kind
    kind = draw(st.sampled_from([meant] * 6 + [ConfigRecord, MetricRecord, ArrayRecord,
                                               None]))
    if kind is None:
        return None
    values = {ConfigRecord: config_values, MetricRecord: metric_values,
              ArrayRecord: any_arrays.map(Array)}[kind]
    content = {}
    for key in [*good, "other"]:
        how = draw(st.sampled_from(["good"] * 6 + ["any", "absent"] if key in good
                                   else ["absent"] * 3 + ["any"]))
        if how != "absent":
            content[key] = draw(good[key] if how == "good" and kind is meant else values)
    return kind(content)


def _array_record(key: str, values: np.ndarray | Array) -> ArrayRecord:
    return ArrayRecord({key: values if isinstance(values, Array) else Array(values)})


def _hex_sha256(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


FUZZ_ALIGNMENT = KeyedHashAlignment("fuzzing-secret-of-the-peers")
GOOD_PSEUDONYMS = FUZZ_ALIGNMENT.pseudonymize([f"id-{k}" for k in range(5)])
GOOD_FINGERPRINT = _hex_sha256(GOOD_PSEUDONYMS)
GOOD = {
    "pseudonyms": _array_record("pseudonyms", GOOD_PSEUDONYMS),
    "labels": _array_record("labels", np.array([0.0, 1.0, 2.0, 1.0])),
    "latents": _array_record("latents", np.arange(8, dtype=np.float32).reshape(4, 2)),
}
peer_names = st.sampled_from(["alice", "peer-1"]) | st.text(max_size=10)
peer_info = {"name": peer_names, "fingerprint": st.just(GOOD_FINGERPRINT),
             "has-label": st.booleans()}


def _or_broken(record: ArrayRecord, key: str) -> st.SearchStrategy:
    """The good array record most of the time, else a missing or broken one."""
    return mostly(st.just(record), records({key: any_arrays.map(Array)}, ArrayRecord))


# -------------------------------------------------------------------- checks
def _reply(request: Message, content: dict | Error, wire: bool) -> Message:
    """A reply holding the records of ``content`` that are not None, or an error;
    sent through Flower's serialization if ``wire``."""
    if isinstance(content, dict):
        content = RecordDict({k: r for k, r in content.items() if r is not None})
    reply = Message(content, reply_to=request)
    return message_from_proto(message_to_proto(reply)) if wire else reply


def _usable(name: object) -> bool:
    """Tell whether a name a peer gave can name it in an error message."""
    return (isinstance(name, str) and name != "" and name == name.strip()
            and name.isprintable() and ": " not in name)


def _own_names(reply: Message) -> tuple:
    """Usable names a reply gives its peer: in an error's reason
    (``"<name>: <reason>"``) or in a pseudonyms reply's ``peer.name``."""
    if reply.has_error():
        reason = reply.error.reason or ""
        name = reason.partition(": ")[0] if ": " in reason else None
    else:
        info = reply.content.get("peer")
        name = info.get("name") if isinstance(info, ConfigRecord) else None
    return (name,) if _usable(name) else ()


def _read(read: Callable, kind: str, reply: Message, *args: int) -> tuple | None:
    """Return what ``read`` returns, or None when it raised a PeerReplyError
    naming the peer; any other exception fails the test.

    The error names the peer by the name the server gave, or by a usable name
    the reply gives (the existing tests ask for the declared name once known).
    """
    try:
        result = read(reply, PEERS[kind], *args)
    except PeerReplyError as err:
        message = str(err)
        # What was rejected, for --hypothesis-show-statistics.
        event("rejected: " + ("error reply" if reply.has_error()
                              else re.split(r"[:(\d]", err.reason)[0].strip()))
        assert message.startswith(f"{err.peer}: "), message
        assert err.peer in (PEERS[kind], *_own_names(reply)), message
        return None
    event("accepted")
    return result


def _check_array(reply: Message, kind: str, values: np.ndarray, dtype: str | type,
                 shape: tuple) -> None:
    """An accepted array is the finite ndarray the reply holds, of ``dtype`` (a
    dtype, or a kind letter) and ``shape`` (None: any size above 0)."""
    assert isinstance(values, np.ndarray)
    assert values.dtype.kind == dtype if isinstance(dtype, str) else values.dtype == dtype
    assert len(values.shape) == len(shape)
    assert all(n > 0 if want is None else n == want
               for n, want in zip(values.shape, shape, strict=True))
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(values, reply.content[kind][kind].numpy())


def check_pseudonyms(reply: Message) -> tuple | None:
    result = _read(protocol.read_pseudonyms, "pseudonyms", reply)
    if result is not None:
        values, info = result
        _check_array(reply, "pseudonyms", values, np.uint8, (None, PSEUDONYM_BYTES))
        assert len({bytes(row) for row in values}) == len(values)
        assert set(info) == {"name", "fingerprint", "has-label"}
        assert (info["name"],) == _own_names(reply)
        assert info["fingerprint"] == _hex_sha256(values)
        assert info["has-label"] is reply.content["peer"]["has-label"]
        assert isinstance(info["has-label"], bool)
    return result


def check_labels(reply: Message, n_rows: int) -> tuple | None:
    result = _read(protocol.read_labels, "labels", reply, n_rows)
    if result is not None:
        labels, classes = result
        _check_array(reply, "labels", labels, "f", (n_rows,))
        declared = reply.content["label-info"].get("classes", [])
        assert isinstance(declared, list)
        assert all(isinstance(c, str) for c in declared)
        assert classes == declared
        assert len(set(classes)) == len(classes)
        if classes:
            assert np.isin(labels, np.arange(len(classes))).all()
    return result


def check_latents(reply: Message, n_rows: int) -> tuple | None:
    result = _read(protocol.read_latents, "latents", reply, n_rows)
    if result is not None:
        latents, metrics = result
        _check_array(reply, "latents", latents, np.float32, (n_rows, None))
        assert (np.abs(latents) <= protocol.LATENT_LIMIT).all()
        assert all(isinstance(k, str) for k in metrics)
        assert all(isinstance(v, int | float) and not isinstance(v, bool)
                   for v in metrics.values())
    return result


CHECKS = {
    "pseudonyms": lambda reply, n_rows: check_pseudonyms(reply),
    "labels": check_labels,
    "latents": check_latents,
}


# --------------------------------------------------------------------- tests
# Cases the fuzzer found once are pinned by an @example.
@pytest.mark.parametrize("kind", ["pseudonyms", "labels", "latents"])
@given(code=st.sampled_from([protocol.PEER_INPUT_ERROR, 101, 102, 0, 1, 3, 4]) | int64s,
       reason=st.none() | st.text() | st.sampled_from(
           ["", ": x", "alice: x", "node 5: x", "node 6: x", "peer-2:", "a\nb: x"]),
       wire=st.booleans())
@example(code=protocol.PEER_INPUT_ERROR, reason=": 0", wire=False)
def test_error_replies(kind, code, reason, wire) -> None:
    reply = _reply(REQUESTS[kind], Error(code, reason), wire)
    assert CHECKS[kind](reply, N_ROWS) is None  # a PeerReplyError naming the peer


@pytest.mark.parametrize("kind", sorted(CHECKS))
@given(array=raw_arrays, n_rows=st.integers(0, 5), wire=st.booleans())
@example(array=Array(dtype="float32", shape=(), stype=SType.NUMPY,
                     data=_npz(np.array(False))), n_rows=0, wire=False)
def test_arrays_that_are_not_one_npy(kind, array, n_rows, wire) -> None:
    content = {kind: _array_record(kind, array),
               "peer": ConfigRecord({"name": "alice", "has-label": False,
                                     "fingerprint": GOOD_FINGERPRINT}),
               "label-info": ConfigRecord({"classes": []}),
               "metrics": MetricRecord({})}
    CHECKS[kind](_reply(REQUESTS[kind], content, wire), n_rows)


# Real pseudonym tables, with a repeated ID now and then, or other arrays.
pseudonym_tables = mostly(
    st.lists(st.integers(0, 30), max_size=6).map(
        lambda ks: FUZZ_ALIGNMENT.pseudonymize([f"id-{k}" for k in ks])),
    arrays_of(mostly(st.just(np.uint8), dtypes),
              cols=st.sampled_from([PSEUDONYM_BYTES] * 4 + [0, 31])),
)


@given(values=pseudonym_tables,
       fingerprint=st.sampled_from(["right", "right", "reversed", "junk"]),
       has_label=st.booleans(), wire=st.booleans())
def test_pseudonyms_payload(values, fingerprint, has_label, wire) -> None:
    wrong = {"reversed": values.ravel()[::-1], "junk": np.zeros(1)}
    sent = wrong.get(fingerprint, values)
    info = {"name": "alice", "fingerprint": _hex_sha256(sent), "has-label": has_label}
    content = {"pseudonyms": _array_record("pseudonyms", values),
               "peer": ConfigRecord(info)}
    check_pseudonyms(_reply(REQUESTS["pseudonyms"], content, wire))


@given(pseudonyms=_or_broken(GOOD["pseudonyms"], "pseudonyms"),
       peer=records(peer_info), wire=st.booleans())
def test_pseudonyms_records(pseudonyms, peer, wire) -> None:
    content = {"pseudonyms": pseudonyms, "peer": peer}
    check_pseudonyms(_reply(REQUESTS["pseudonyms"], content, wire))


def _rows_asked(values: np.ndarray, delta: int) -> int:
    """Rows the server asks for: those sent (if a 1-D or more array), or off by one."""
    return max((values.shape[0] if values.ndim else 1) + delta, 0)


row_errors = st.sampled_from([0, 0, 0, 1, -1])
label_dtypes = st.sampled_from([np.float64] * 3 + [np.float32, np.int64, np.bool_,
                                                   np.complex128, "M8[D]", "<U2"])
class_lists = st.lists(st.text(max_size=5), min_size=3, max_size=3, unique=True)


@given(values=arrays_of(mostly(label_dtypes, dtypes)), delta=row_errors,
       classes=st.just([]) | class_lists, wire=st.booleans())
def test_labels_payload(values, delta, classes, wire) -> None:
    content = {"labels": _array_record("labels", values),
               "label-info": ConfigRecord({"classes": classes})}
    check_labels(_reply(REQUESTS["labels"], content, wire), _rows_asked(values, delta))


@given(labels=_or_broken(GOOD["labels"], "labels"),
       info=records({"classes": st.just([]) | class_lists | st.lists(st.text(), max_size=4)}),
       wire=st.booleans())
@example(labels=GOOD["labels"], info=ConfigRecord({"classes": [0, 1, 2]}), wire=False)
def test_labels_records(labels, info, wire) -> None:
    content = {"labels": labels, "label-info": info}
    check_labels(_reply(REQUESTS["labels"], content, wire), N_ROWS)


latent_dtypes = st.sampled_from([np.float32] * 6 + [">f4", np.float64, np.float16])


@given(values=arrays_of(mostly(latent_dtypes, dtypes), cols=st.integers(0, 3)),
       delta=row_errors, wire=st.booleans())
@example(values=np.zeros((0, 1), np.float32), delta=0, wire=False)
def test_latents_payload(values, delta, wire) -> None:
    content = {"latents": _array_record("latents", values), "metrics": MetricRecord({})}
    check_latents(_reply(REQUESTS["latents"], content, wire), _rows_asked(values, delta))


@given(latents=_or_broken(GOOD["latents"], "latents"),
       metrics=records({"reconstruction-mae": st.floats(), "within-5pct": st.floats()},
                       MetricRecord),
       wire=st.booleans())
def test_latents_records(latents, metrics, wire) -> None:
    content = {"latents": latents, "metrics": metrics}
    check_latents(_reply(REQUESTS["latents"], content, wire), N_ROWS)
