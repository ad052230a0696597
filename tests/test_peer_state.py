"""A peer's saved preprocessing and encoder: saved, reloaded, encoding identically."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from vfl_embed.errors import PeerDataError
from vfl_embed.peer.autoencoder import Autoencoder, IdentityEncoder
from vfl_embed.peer.preprocessing import Preprocessor
from vfl_embed.peer.state import PeerState
from vfl_embed.wire.protocol import parse_run_id

RUN_ID = 2**64 - 5  # run ids use the whole unsigned 64-bit range


def table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "area": rng.lognormal(7, 0.4, n),
        "rooms": rng.integers(1, 9, n).astype(float),
        "year": np.where(rng.random(n) < 0.1, np.nan, rng.integers(1900, 2010, n)),
        "zone": rng.choice(["RL", "RM", "FV", "C"], n, p=[0.6, 0.3, 0.095, 0.005]),
    })


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A fitted state saved under a state root, and the frame it encodes."""
    root = tmp_path_factory.mktemp("state")
    frame = table()
    preprocessor = Preprocessor(peer="bank").fit(frame.iloc[:300])
    encoder = Autoencoder(latent_dim=3, epochs=5, seed=1).fit(
        preprocessor.transform(frame.iloc[:300]))
    state = PeerState("bank", RUN_ID, preprocessor, encoder)
    state.save(root)
    return root, frame, state


def test_saved_encoder_encodes_identically_in_a_fresh_process(saved, tmp_path):
    root, frame, state = saved
    frame.to_parquet(tmp_path / "rows.parquet")
    script = (
        "import numpy as np, pandas as pd\n"
        "from vfl_embed.peer.state import PeerState\n"
        f"state = PeerState.load({str(root)!r}, 'bank', {RUN_ID})\n"
        f"rows = pd.read_parquet({str(tmp_path / 'rows.parquet')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, state.transform(rows))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    fresh = np.load(tmp_path / "out.npy")
    assert fresh.shape == (400, 3) and fresh.dtype == np.float32
    np.testing.assert_array_equal(fresh, state.transform(frame))


def test_a_row_encodes_the_same_whatever_rows_come_with_it(saved):
    _, frame, state = saved
    everything = state.transform(frame)
    picked = [399, 3, 250, 251]
    np.testing.assert_array_equal(state.transform(frame.iloc[picked]), everything[picked])
    np.testing.assert_array_equal(state.transform(frame.iloc[[7]]), everything[[7]])


def test_preprocessor_state_round_trips_exactly(saved):
    _, frame, state = saved
    reloaded = Preprocessor.from_state(state.preprocessor.get_state())
    assert reloaded.feature_names_ == state.preprocessor.feature_names_
    assert "zone=(rare)" in reloaded.feature_names_
    np.testing.assert_array_equal(reloaded.transform(frame),
                                  state.preprocessor.transform(frame))


def test_state_layout_is_keyed_by_peer_and_run(saved):
    root, _, _ = saved
    directory = root / "bank" / f"run-{RUN_ID}"
    assert sorted(p.name for p in directory.iterdir()) == ["autoencoder.keras",
                                                           "state.json"]


def test_raw_column_baseline_state_needs_no_keras_file(tmp_path):
    frame = table(50)
    preprocessor = Preprocessor().fit(frame)
    PeerState("p", 3, preprocessor, IdentityEncoder()).save(tmp_path)
    loaded = PeerState.load(tmp_path, "p", 3)
    assert loaded.latent_dim == len(preprocessor.feature_names_)
    np.testing.assert_array_equal(loaded.transform(frame), preprocessor.transform(frame))


def test_missing_or_broken_state_names_the_peer_and_directory(saved, tmp_path):
    root, _, _ = saved
    with pytest.raises(PeerDataError, match=r"bank: no saved encoder of training run 4 in"):
        PeerState.load(root, "bank", 4)
    broken = tmp_path / "bank" / "run-5"
    broken.mkdir(parents=True)
    (broken / "state.json").write_text("{not json")
    with pytest.raises(PeerDataError, match=r"bank: the saved state in .* is unreadable"):
        PeerState.load(tmp_path, "bank", 5)


def test_a_reloaded_frame_missing_a_column_is_named(saved):
    _, frame, state = saved
    with pytest.raises(PeerDataError, match=r"bank: columns missing: \['zone'\]"):
        state.transform(frame.drop(columns="zone"))


@pytest.mark.parametrize("value", ["12", 12, " 18446744073709551615 "])
def test_run_ids_parse_as_unsigned_64_bit(value):
    assert parse_run_id(value, "x") == int(str(value))


@pytest.mark.parametrize("value", ["", "-1", "1e5", "../x", str(2**64), "1 2"])
def test_bad_run_ids_are_refused(value):
    with pytest.raises(PeerDataError, match="is not a Flower run ID"):
        parse_run_id(value, "run config 'train-run'")
