from __future__ import annotations

import pytest

from vfl_embed.strategy import VerticalEmbedding


@pytest.mark.parametrize(("num_peers", "min_peers"), [(0, -1), (3, 4)])
def test_min_peers_out_of_range_is_refused(num_peers, min_peers):
    with pytest.raises(ValueError, match=f"between 0 and num_peers={num_peers}, got "
                                         f"{min_peers}"):
        VerticalEmbedding(num_peers=num_peers, min_peers=min_peers)


def test_min_peers_up_to_num_peers_is_accepted():
    assert VerticalEmbedding(num_peers=3, min_peers=3).min_peers == 3
    assert VerticalEmbedding(num_peers=0, min_peers=2).min_peers == 2
