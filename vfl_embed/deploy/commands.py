"""The commands of a multi-host deployment, built in one place.

The deployment guide (``docker/README.md``), the compose file and the
network test all run these commands; a test checks that the guide and the
compose file use the same flags, so none of them can drift.

A deployment has one SuperLink (the coordinator), one SuperNode per
organization and an operator who runs ``flwr`` from any machine that can
reach the SuperLink. TLS and SuperNode authentication are always on: each
SuperNode's public key must be registered (``flwr supernode register``)
before it may connect, and every process trusts only the federation's CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "SUPERLINK_PORT", "SUPERNODE_PORT", "connection_toml", "node_config",
    "superlink_command", "supernode_command",
]

# Flower 1.42 serves its Fleet, Control and Runtime APIs on one HTTPS port.
SUPERLINK_PORT = 8000
# Each SuperNode's own Runtime API, used by its ClientApp processes (loopback).
SUPERNODE_PORT = 9094


def superlink_command(
    credentials: str | Path,
    host: str = "0.0.0.0",
    port: int = SUPERLINK_PORT,
    *,
    database: str | Path = "",
) -> list[str]:
    """``flower-superlink`` with TLS and SuperNode authentication on.

    Parameters
    ----------
    credentials : str | Path
        Directory holding ``ca.crt``, ``superlink.crt`` and ``superlink.key``
        (see :mod:`vfl_embed.deploy.credentials`).
    host : str (default: "0.0.0.0")
        Address to listen on.
    port : int (default: 8000)
        Port of the Fleet, Control and Runtime APIs.
    database : str | Path (default: "")
        SQLite file (its folder must exist) where the SuperLink keeps the
        registered SuperNode keys, runs and messages, so that a restart
        keeps them. Empty: Flower's in-memory state, lost on restart.
    """
    directory = Path(credentials)
    return [
        "flower-superlink",
        "--ssl-ca-certfile", str(directory / "ca.crt"),
        "--ssl-certfile", str(directory / "superlink.crt"),
        "--ssl-keyfile", str(directory / "superlink.key"),
        "--enable-supernode-auth",
        # The app's dependencies are installed with the image/venv.
        "--disable-runtime-dependency-installation",
        *(["--database", str(database)] if database else []),
        "--host", host, "--port", str(port),
    ]


def supernode_command(
    ca_certificate: str | Path,
    private_key: str | Path,
    superlink: str,
    config: str,
    port: int = SUPERNODE_PORT,
) -> list[str]:
    """``flower-supernode`` for one organization.

    Parameters
    ----------
    ca_certificate : str | Path
        The federation's ``ca.crt``; the SuperNode trusts no other CA.
    private_key : str | Path
        The organization's own ``supernodes/<org>.key``.
    superlink : str
        ``host:port`` of the SuperLink.
    config : str
        The node config, from :func:`node_config`.
    port : int (default: 9094)
        The SuperNode's own Runtime API port (loopback only); distinct per
        SuperNode when several run on one machine.
    """
    return [
        "flower-supernode",
        "--superlink", superlink,
        "--root-certificates", str(ca_certificate),
        "--auth-supernode-private-key", str(private_key),
        "--port", str(port),
        "--node-config", config,
    ]


def node_config(
    data_path: str | Path,
    peer_name: str,
    secret_file: str | Path,
    id_column: str = "id",
    label_column: str = "",
    state_dir: str | Path = "",
    message_log_dir: str | Path = "",
    policy: Mapping[str, object] | None = None,
) -> str:
    """Format the ``--node-config`` value of a peer (keys: see ``peer_from_context``).

    Without ``state_dir`` the peer keeps its encoders next to its data file;
    with ``message_log_dir`` it keeps a copy of every message it sends and
    receives there (see :mod:`vfl_embed.peer.message_log`). ``policy`` sets
    limits of the peer's own policy (``docs/peer-policy.md``) over its
    deployment defaults, e.g. ``{"require-audit": False}``.
    """
    values: dict[str, str] = {
        "data-path": str(data_path), "id-column": id_column,
        "peer-name": peer_name, "alignment-secret-file": str(secret_file),
    }
    if label_column:
        values["label-column"] = label_column
    if state_dir:
        values["state-dir"] = str(state_dir)
    if message_log_dir:
        values["message-log-dir"] = str(message_log_dir)
    values |= {key: str(value).lower() if isinstance(value, bool) else str(value)
               for key, value in (policy or {}).items()}
    for key, value in values.items():
        if "'" in value or '"' in value:
            raise ValueError(f"node config '{key}' must not contain quotes: {value!r}")
    return " ".join(f"{key}='{value}'" for key, value in values.items())


def connection_toml(name: str, address: str, ca_certificate: str | Path) -> str:
    """Return a ``$FLWR_HOME/config.toml`` making ``name`` the default SuperLink.

    ``flwr run . <name>`` and ``flwr supernode register <key> <name>`` then
    reach ``address`` over TLS, trusting ``ca_certificate`` (made absolute,
    as ``flwr`` requires).
    """
    lines = [
        "[superlink]", f'default = "{name}"', "",
        f"[superlink.{name}]", f'address = "{address}"',
        f'root-certificates = "{Path(ca_certificate).resolve()}"',
    ]
    return "\n".join(lines) + "\n"
