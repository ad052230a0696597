from __future__ import annotations

import pytest

from vfl_embed.server.strategy import VerticalEmbedding


@pytest.mark.parametrize(("num_peers", "min_peers"), [(0, -1), (3, 4)])
def test_min_peers_out_of_range_is_refused(num_peers, min_peers):
    with pytest.raises(ValueError, match=f"between 0 and num_peers={num_peers}, got "
                                         f"{min_peers}"):
        VerticalEmbedding(num_peers=num_peers, min_peers=min_peers)


def test_min_peers_up_to_num_peers_is_accepted():
    assert VerticalEmbedding(num_peers=3, min_peers=3).min_peers == 3
    assert VerticalEmbedding(num_peers=0, min_peers=2).min_peers == 2


@pytest.mark.parametrize(("setting", "message"), [
    ({"task": "ranking"}, "task must be auto, regression or classification"),
    ({"model": "svm"}, "model must be one of xgboost, logistic, ridge, mlp, got 'svm'"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\), got 1.0"),
    ({"min_entities": 0}, "min_entities must be at least 1, got 0"),
    ({"search_iterations": -1}, "must not be negative"),
])
def test_bad_settings_are_refused_at_construction(setting, message):
    with pytest.raises(ValueError, match=message):
        VerticalEmbedding(**setting)
