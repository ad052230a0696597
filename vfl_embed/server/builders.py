"""The training and prediction runs a run config describes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import ConfigRecord

from ..config import RunConfig
from ..data.tables import PeerTable, read_table
from ..errors import VerticalRunError
from ..wire.alignment import KeyedHashAlignment
from .labels import server_labels, server_secret
from .prediction import TrainedFederation, VerticalPrediction
from .strategy import VerticalEmbedding

__all__ = ["prediction_from_config", "strategy_from_config"]


def strategy_from_config(values: Mapping[str, object]) -> VerticalEmbedding:
    """Build the strategy the run config describes.

    Every peer receives the run config's ``peers`` keys (see
    :mod:`vfl_embed.config`) in its embed request.
    """
    config = RunConfig(values)
    label_source = config["label-source"]
    if config["alignment"] == "psi" and label_source == "server":
        raise VerticalRunError("alignment 'psi' keeps every ID blinded from the server, "
                               "so the server cannot hold labels by ID: set "
                               "label-source='peer' (a peer's file holds the label)")
    return VerticalEmbedding(
        encoder_config=ConfigRecord(config.side("peers")),
        server_labels=server_labels(config) if label_source == "server" else None,
        task=config["task"],
        model=config["model"],
        search_iterations=config["search-iterations"],
        # The prediction release is supervised by construction.
        supervised=config["supervised"] or config["encoder"] == "prediction",
        label_epsilon=config["label-dp-epsilon"],
        test_fraction=config["test-fraction"],
        min_entities=config["min-entities"],
        num_peers=config["num-peers"],
        min_peers=config["min-peers"],
        alignment=config["alignment"],
        seed=config["seed"],
    )


def prediction_from_config(
    values: Mapping[str, object], trained: TrainedFederation
) -> VerticalPrediction:
    """Build the prediction run the run config describes (``mode = "predict"``).

    The entities to score are the IDs in ``predict-ids`` (a CSV or Parquet
    file with the ``id-column``), else every ID of the label file or built-in
    dataset; the server keys them with the alignment secret, so it needs it.
    """
    config = RunConfig(values)
    if config["alignment"] != "keyed-hash":
        raise VerticalRunError("predict mode keys the IDs to score on the server, which "
                               "needs alignment='keyed-hash'")
    ids = _ids_to_score(config)
    return VerticalPrediction(
        trained, KeyedHashAlignment(server_secret(config)).pseudonymize(ids), ids,
        missing_policy=config["missing-policy"], num_peers=config["num-peers"],
    )


def _ids_to_score(config: RunConfig) -> np.ndarray:
    """IDs in ``predict-ids``, else in ``label-path``, else of the built-in dataset."""
    path = str(config["predict-ids"] or config["label-path"])
    if path:
        frame, id_column, source = (read_table(path, owner="predict-ids file"),
                                    str(config["id-column"]), path)
    elif config["data-paths"]:
        raise VerticalRunError("predict mode needs the IDs to score: set run config "
                               "'predict-ids' to a file with the id-column")
    else:
        from ..data.datasets import load_dataset  # built-in tables: simulation only

        frame, id_column, source = (load_dataset(str(config["dataset"])).labels, "id",
                                    None)
    return PeerTable(frame, id_column, "predict-ids file", require_features=False,
                     source=source).ids
