"""Every node-config key a peer reads: what the organization running a SuperNode decides.

The node config is set by whoever starts the SuperNode (``flower-supernode
--node-config "data-path='...' ..."``); the server cannot change it. It names
the peer's data and secret in deployment, and its privacy policy
(:class:`~vfl_embed.peer.policy.PeerPolicy`), which every request is checked
against. In simulation Flower sets ``partition-id`` and ``num-partitions``,
and the run config names the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import PeerDataError
from .policy import PeerPolicy

__all__ = ["DATA_KEYS", "NodeConfig", "peer_name"]

# Node-config keys of a deployed peer's data, secret and folders, with what they mean.
DATA_KEYS = {
    "data-path": "the peer's table, a CSV or Parquet file (deployment: required)",
    "id-column": "its ID column (default 'id')",
    "label-column": "its label column, on the one peer that holds the labels",
    "peer-name": "the name the peer goes by in messages and reports (default: the "
                 "data file's stem)",
    "alignment-secret-file": "a file with the keyed-hash secret the peers share",
    "state-dir": "where the peer keeps its secret and fitted encoders (default: "
                 "vfl-embed-state/ next to the data file)",
    "message-log-dir": "where the peer writes every message it sends and receives",
}
# Keys Flower's simulation sets.
SIMULATION_KEYS = ("partition-id", "num-partitions")


class NodeConfig:
    """A peer's node config, checked: its data, secret, folders and policy.

    Parameters
    ----------
    values : Mapping[str, object]
        The SuperNode's ``node_config``.
    simulated : bool
        True inside Flower's simulation runtime (see
        :func:`~vfl_embed.peer.context.is_simulated`); the policy's defaults
        are then permissive, and ``partition-id`` names the peer's share of
        the run's data.

    Raises
    ------
    PeerDataError
        A key is missing or malformed; the message names the peer and key.
    """

    def __init__(self, values: Mapping[str, object], *, simulated: bool) -> None:
        self.simulated = simulated
        self.name = peer_name(values)
        known = {*DATA_KEYS, *SIMULATION_KEYS, *PeerPolicy.keys()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PeerDataError(f"{self.name}: unknown node-config key(s) {unknown[:5]}; "
                                f"known: {', '.join(sorted(known))}")
        self.data_path = str(values.get("data-path", ""))
        self.id_column = str(values.get("id-column", "id"))
        self.label_column = str(values.get("label-column", ""))
        self.alignment_secret_file = str(values.get("alignment-secret-file", ""))
        self.message_log_dir = str(values.get("message-log-dir", ""))
        self.policy = PeerPolicy.from_node_config(values, simulated=simulated,
                                                  peer=self.name)
        state_dir = str(values.get("state-dir", ""))
        if simulated:
            self.partition, self.partitions = _partition(values, self.name)
            self.state_dir = Path(state_dir) if state_dir else None
            return
        if not self.data_path:
            raise PeerDataError(
                f"{self.name}: this SuperNode is not simulated, and its node config "
                "names no 'data-path'; pass --node-config \"data-path='...'\"")
        self.state_dir = Path(state_dir or Path(self.data_path).parent / "vfl-embed-state")


def peer_name(values: Mapping[str, object]) -> str:
    """Return the name a SuperNode's peer goes by in messages, reports and errors.

    ``peer-name``, else the data file's stem; a simulated peer without
    either is ``peer-<partition-id>``; ``"peer"`` when the node config names
    none of these.
    """
    if values.get("peer-name"):
        return str(values["peer-name"])
    if values.get("data-path"):
        return Path(str(values["data-path"])).stem
    if "partition-id" in values:
        return f"peer-{values['partition-id']}"
    return "peer"


def _partition(values: Mapping[str, object], name: str) -> tuple[int, int]:
    try:
        partition, partitions = int(values["partition-id"]), int(values["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise PeerDataError(f"{name}: a simulated peer needs the node config's "
                            "'partition-id' and 'num-partitions'") from None
    if not 0 <= partition < partitions:
        raise PeerDataError(f"{name}: partition-id {partition} is not below "
                            f"num-partitions {partitions}")
    return partition, partitions
