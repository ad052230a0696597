"""The peer a SuperNode runs, built from its node config and the run config.

Whether the peer is simulated comes from the runtime
(:func:`~vfl_embed.peer.runtime.is_simulated`), never from the node config.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

from ..config import RunConfig
from ..data.tables import PeerTable, read_table
from ..errors import PeerDataError
from ..wire.alignment import MIN_SECRET_BYTES
from .node_config import NodeConfig, peer_name
from .peer import Peer
from .runtime import is_simulated
from .secret import make_alignment, peer_secret

__all__ = ["peer_from_context", "peer_name"]

def peer_from_context(
    node_config: Mapping[str, object], run_config: Mapping[str, object]
) -> Peer:
    """Build the peer a SuperNode runs, from its node config and the run config.

    Deployment: the node config names ``data-path`` (CSV or Parquet),
    ``id-column``, optionally ``label-column``, ``peer-name``, the keyed-hash
    secret as ``alignment-secret-file`` (a file only the peers can read),
    ``state-dir`` and the peer's privacy policy (see
    :class:`~vfl_embed.peer.node_config.NodeConfig`). Simulation:
    ``partition-id`` and ``num-partitions`` pick either the user's file from
    the run config's ``data-paths`` (one per peer) or a column group of the
    built-in ``dataset``; the run config's demo secret is used.

    The run config's ``alignment`` picks how IDs become pseudonyms; ``psi``
    needs no shared secret. The peer keeps its fitted encoders under the node
    config's ``state-dir``: by default next to its data file
    (``vfl-embed-state/``) in deployment, and under the run config's
    ``state-dir`` (default ``<results-dir>/peer-state``) in simulation.
    """
    simulated = is_simulated()
    node = NodeConfig(node_config, simulated=simulated)
    config = RunConfig(run_config)
    name = peer_name(node_config)
    mode = str(config["alignment"])
    if not simulated:
        table = PeerTable.from_file(node.data_path, node.id_column, name,
                                    node.label_column)
        shared = _node_secret(node, name) if mode == "keyed-hash" else ""
        return _peer(table, mode, shared, config, node, node.state_dir, simulated=False)
    secret = str(config["alignment-secret"])
    state_dir = node.state_dir or Path(str(config["state-dir"]) or Path(
        str(config["results-dir"]) or "results") / "peer-state")
    table = _simulated_table(node.partition, node.partitions, name, config)
    return _peer(table, mode, secret, config, node, Path(state_dir), simulated=True)


def _peer(
    table: PeerTable, mode: str, shared_secret: str, config: RunConfig, node: NodeConfig,
    state_dir: Path, simulated: bool,
) -> Peer:
    _refuse_label_as_feature(table, str(config["target"]))
    secret = partial(peer_secret, table.peer, state_dir=state_dir,
                     simulated_secret=shared_secret if simulated else "")
    alignment = make_alignment(mode, table.peer, shared_secret=shared_secret,
                               secret=secret, seed=int(config["seed"]), simulated=simulated)
    return Peer(table, alignment, simulated=simulated, state_dir=state_dir, secret=secret,
                policy=node.policy)


def _refuse_label_as_feature(table: PeerTable, target: str) -> None:
    # A copy of the label among a peer's columns would pass into its latents
    # and make the held-out metric a measure of that leak.
    if target and target in table.features.columns:
        where = f"'{table.source}'" if table.source else "its table"
        raise PeerDataError(
            f"{table.peer}: {where} has a column '{target}', the run's label "
            "column, that is not this peer's label: drop it from the file, or "
            "let this peer send the labels (label-source='peer' in simulation, "
            "node config 'label-column' in deployment)")


def _simulated_table(
    partition: int, num_partitions: int, name: str, config: RunConfig
) -> PeerTable:
    paths = [p.strip() for p in str(config["data-paths"]).split(";") if p.strip()]
    holds_label = config["label-source"] == "peer"
    if paths:
        if len(paths) != num_partitions:
            raise PeerDataError(
                f"{name}: run config 'data-paths' names {len(paths)} files but the "
                f"federation has {num_partitions} SuperNodes; give one file per peer"
            )
        frame = read_table(paths[partition], owner=name)
        target = str(config["target"])
        label_column = target if holds_label and target in frame.columns else ""
        return PeerTable(frame, str(config["id-column"]), name, label_column,
                         source=paths[partition])
    # Built-in tables exist only in simulation: a deployed SuperNode never
    # loads this module.
    from ..data.datasets import ID_COLUMN, load_dataset, vertical_split

    holds_label = holds_label and partition == 0
    try:
        dataset = load_dataset(str(config["dataset"]))
        frame = vertical_split(dataset, num_partitions, partition,
                               coverage=float(config["peer-coverage"]),
                               seed=int(config["seed"]), with_label=holds_label)
    except ValueError as err:
        raise PeerDataError(f"{name}: {err}") from err
    return PeerTable(frame, ID_COLUMN, name, dataset.target if holds_label else "")


def _node_secret(node: NodeConfig, name: str) -> str:
    path = node.alignment_secret_file
    if not path:
        raise PeerDataError(
            f"{name}: no alignment secret; pass --node-config "
            "\"alignment-secret-file='...'\" (a file shared by the peers only)"
        )
    if not Path(path).is_file():
        raise PeerDataError(f"{name}: alignment secret file '{path}' does not exist")
    secret = Path(path).read_text().strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise PeerDataError(f"{name}: alignment secret file '{path}' holds "
                            f"{'nothing' if not secret else 'too short a secret'}; "
                            f"it needs at least {MIN_SECRET_BYTES} bytes")
    return secret
