"""A peer's checks of the server's requests, as strict as the server's of replies.

A deviating server may send anything in a request's plan. Before a peer
decodes an array it checks its dtype and shape from the record's metadata,
so a request of twenty million positions costs nothing; then it checks the
values: positions are unique int64 row numbers of the peer's table, flags
are 0 or 1 and as many as the positions, and training targets are finite
and as many as the training rows. Every failure is one line naming the peer
and the field, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, Message

from ..errors import PeerDataError
from ..wire import protocol

__all__ = ["RequestPlan", "check_in_range", "read_request_plan"]


@dataclass(frozen=True)
class RequestPlan:
    """The checked plan of a request.

    Attributes
    ----------
    positions : np.ndarray
        Unique int64 row numbers into the peer's table, in the server's order.
    is_test : np.ndarray | None
        True for held-out rows (``train.embed`` only).
    train_targets : np.ndarray | None
        Finite labels of the training rows, in their order (supervised only).
    """

    positions: np.ndarray
    is_test: np.ndarray | None
    train_targets: np.ndarray | None


def read_request_plan(message: Message, peer: str, n_rows: int) -> RequestPlan:
    """Return the checked plan of ``message`` for a peer with ``n_rows`` rows.

    Raises
    ------
    PeerDataError
        The plan is missing, or a field has the wrong type, length or values.
    """
    if protocol.PLAN not in message.content.array_records:
        raise PeerDataError(f"{peer}: the request carries no plan")
    plan = message.content.array_records[protocol.PLAN]
    positions = _decoded(plan, protocol.POSITIONS, "int64", n_rows, peer)
    if positions is None:
        raise PeerDataError(f"{peer}: the request's plan has no positions")
    _check_positions(positions, n_rows, peer)
    is_test = _decoded(plan, protocol.IS_TEST, "uint8", len(positions), peer)
    if is_test is not None:
        if len(is_test) != len(positions) or is_test.max(initial=0) > 1:
            raise PeerDataError(f"{peer}: the request's is-test flags must be one 0 or 1 "
                                "per position")
        is_test = is_test.astype(bool)
        if is_test.all():
            raise PeerDataError(f"{peer}: the request holds no training row")
    targets = _decoded(plan, protocol.TRAIN_TARGETS, "float64", len(positions), peer)
    if targets is not None:
        n_train = len(positions) - int(is_test.sum()) if is_test is not None else -1
        if len(targets) != n_train or not np.isfinite(targets).all():
            raise PeerDataError(f"{peer}: the request's training targets must be one "
                                "finite value per training row")
    return RequestPlan(positions, is_test, targets)


def _decoded(plan, key: str, dtype: str, most: int, peer: str) -> np.ndarray | None:  # noqa: ANN001
    if key not in plan:
        return None
    array: Array = plan[key]
    # The metadata is checked before the bytes are decoded: a huge or
    # odd-typed field is refused without being materialized.
    if array.dtype != dtype or len(array.shape) != 1 or array.shape[0] > most:
        raise PeerDataError(f"{peer}: the request's {key} must be a 1-D {dtype} array "
                            f"of at most {most} values")
    values = array.numpy()
    if values.dtype != np.dtype(dtype) or values.shape != tuple(array.shape):
        raise PeerDataError(f"{peer}: the request's {key} does not decode as declared")
    return values


def check_in_range(positions: np.ndarray, n_rows: int, peer: str) -> None:
    """Raise :class:`PeerDataError` unless ``positions`` are 1-D rows of ``n_rows``."""
    if positions.ndim != 1 or (len(positions) and (
            positions.min() < 0 or positions.max() >= n_rows)):
        raise PeerDataError(f"{peer}: the server sent row positions out of range for a "
                            f"table of {n_rows} rows")


def _check_positions(positions: np.ndarray, n_rows: int, peer: str) -> None:
    check_in_range(positions, n_rows, peer)
    if len(np.unique(positions)) != len(positions):
        raise PeerDataError(f"{peer}: the server sent repeated row positions")
