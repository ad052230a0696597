"""The labels a server holds, keyed like the peers key their IDs, and the server's secret.

With a label file (or, in simulation, a built-in table's labels) the server is
itself a data holder: it needs the peers' keyed-hash secret to key its IDs.
Where the server must not hold the secret, labels come from a peer
(``label-source = "peer"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..data.tables import PeerTable, read_table
from ..errors import VerticalRunError
from ..wire.alignment import MIN_SECRET_BYTES, KeyedHashAlignment
from .result import ServerLabels

__all__ = ["server_labels", "server_secret"]


def server_secret(config: RunConfig) -> str:
    """Return the keyed-hash secret the server keys IDs with.

    ``alignment-secret-file`` (read here, at the server) wins over the run
    config's ``alignment-secret``, so that a deployment keeps the secret out
    of the run config, the SuperLink's database and every command line.
    """
    path = str(config["alignment-secret-file"])
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise VerticalRunError(f"run config 'alignment-secret-file': '{path}' is not "
                                   "a file")
        secret = file.read_text().strip()
    else:
        secret = str(config["alignment-secret"])
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise VerticalRunError(
            f"the server's keyed-hash secret is {'empty' if not secret else 'too short'}: "
            f"it keys IDs like the peers, so it needs at least {MIN_SECRET_BYTES} bytes "
            "(set 'alignment-secret-file')")
    return secret


def server_labels(config: RunConfig) -> ServerLabels:
    """Load the server's labels and key them like the peers key their IDs."""
    alignment = KeyedHashAlignment(server_secret(config))
    label_path = str(config["label-path"])
    if label_path:
        target = str(config["target"])
        if not target:
            raise VerticalRunError("run config 'label-path' needs 'target', the "
                                   "label column")
        table = PeerTable(read_table(label_path, owner="server label file"),
                          str(config["id-column"]), "server label file",
                          target, require_features=False, source=label_path)
    else:
        # Built-in labels exist only in simulation; a deployed ServerApp with
        # a label file never loads the built-in tables.
        from ..data.datasets import load_dataset

        dataset = load_dataset(str(config["dataset"]))
        table = PeerTable(dataset.labels, "id", "server label file", dataset.target,
                          require_features=False)
    labels = table.labels
    if labels.isna().any():
        raise VerticalRunError(f"server label file: {int(labels.isna().sum())} "
                               "labels are missing")
    classes: list[str] = []
    if labels.dtype == object or str(labels.dtype) in ("category", "string", "str"):
        classes = sorted(labels.astype(str).unique())
        values = labels.astype(str).map({c: i for i, c in enumerate(classes)})
    else:
        values = labels
    return ServerLabels(alignment.pseudonymize(table.ids),
                        values.to_numpy(dtype=float), classes, np.asarray(table.ids))
