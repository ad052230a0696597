"""A peer's privacy machinery, in process: PSI alignment, the noised release, the audit."""

from __future__ import annotations

import stat

import dp_accounting
import numpy as np
import pytest
from conftest import set_server_identity
from in_process_grid import InProcessGrid

from vfl_embed.client_app import app as client_app
from vfl_embed.data.datasets import load_dataset, vertical_split
from vfl_embed.data.tables import PeerTable
from vfl_embed.errors import PeerDataError, VerticalRunError
from vfl_embed.peer.context import peer_from_context
from vfl_embed.peer.peer import Peer
from vfl_embed.peer.release import LatentRelease
from vfl_embed.peer.secret import make_alignment, peer_secret
from vfl_embed.server.builders import strategy_from_config
from vfl_embed.server.strategy import VerticalEmbedding
from vfl_embed.wire.alignment import KeyedHashAlignment
from vfl_embed.wire.psi import PsiAlignment, PsiKey, hash_to_group

RAW = {"dataset": "digits", "encoder": "none", "model": "logistic", "seed": 42,
       "alignment-secret": "secret-of-the-peers", "label-source": "peer", "audit": False}


def _aligned(config: dict, num_peers: int = 3) -> VerticalEmbedding:
    """Run the real strategy and ClientApp in process; return the strategy."""
    with pytest.MonkeyPatch.context() as patch:
        set_server_identity(patch)
        strategy = strategy_from_config(config)
        strategy.start(InProcessGrid(client_app, config, num_peers), timeout=30)
    return strategy


def _rows(strategy: VerticalEmbedding) -> dict[str, set[int]]:
    plan = strategy._require_plan()
    return {peer: set(positions.tolist()) for peer, positions in plan.positions.items()}


def test_psi_joins_the_rows_keyed_hash_joins():
    psi = _aligned(RAW | {"alignment": "psi"})
    keyed = _aligned(RAW)
    assert _rows(psi) == _rows(keyed)
    assert psi.result.n_entities == keyed.result.n_entities > 1500
    assert psi.result.metrics["accuracy"] > 0.9
    # Each peer's rows line up across peers: the same entity in every column.
    plan = psi._require_plan()
    dataset = load_dataset("digits")
    ids = [vertical_split(dataset, 3, k, coverage=0.95, seed=42)["id"].to_numpy()
           for k in range(3)]
    aligned = [ids[k][plan.positions[f"peer-{k}"]] for k in range(3)]
    np.testing.assert_array_equal(aligned[0], aligned[1])
    np.testing.assert_array_equal(aligned[0], aligned[2])


def test_psi_alignment_repeats_and_depends_on_the_peer_keys():
    first, second = _aligned(RAW | {"alignment": "psi"}), _aligned(RAW | {"alignment": "psi"})
    np.testing.assert_array_equal(first._require_plan().pseudonyms,
                                  second._require_plan().pseudonyms)
    other = _aligned(RAW | {"alignment": "psi", "alignment-secret": "another-peers-secret"})
    assert not np.isin(other._require_plan().pseudonyms.view("V32"),
                       first._require_plan().pseudonyms.view("V32")).any()


def test_psi_refuses_server_labels():
    with pytest.raises(VerticalRunError, match="label-source='peer'"):
        strategy_from_config(RAW | {"alignment": "psi", "label-source": "server"})
    with pytest.raises(ValueError, match="use label-source 'peer'"):
        VerticalEmbedding(alignment="psi", server_labels=object())
    with pytest.raises(ValueError, match="alignment must be one of"):
        VerticalEmbedding(alignment="clear")


def test_a_peer_refuses_points_that_are_not_group_elements():
    peer = Peer(PeerTable(load_dataset("digits").features.head(100), "id", "alice"),
                PsiAlignment(PsiKey.derive(b"k", b"c")))
    good = hash_to_group(["a", "b"])
    assert peer.blind(good).shape == (2, 32)
    bad = good.copy()
    bad[1] = 255
    with pytest.raises(PeerDataError, match="alice: the server sent points it cannot blind"):
        peer.blind(bad)
    keyed = Peer(peer.table, KeyedHashAlignment("secret-of-the-peers"))
    with pytest.raises(PeerDataError, match="alignment is not 'psi'"):
        keyed.blind(good)


def test_plain_alignment_only_in_simulation():
    secret = lambda: b"x" * 32  # noqa: E731
    assert make_alignment("plain", "p", shared_secret="", secret=secret, seed=1,
                          simulated=True).name == "plain"
    with pytest.raises(PeerDataError, match="only allowed in simulation"):
        make_alignment("plain", "p", shared_secret="", secret=secret, seed=1,
                       simulated=False)
    with pytest.raises(PeerDataError, match="unknown alignment 'clear'"):
        make_alignment("clear", "p", shared_secret="", secret=secret, seed=1,
                       simulated=True)


def test_deployed_peer_keeps_its_secret_in_its_state_dir(tmp_path):
    data = tmp_path / "crm.csv"
    load_dataset("digits").features.head(100).to_csv(data, index=False)
    node = {"data-path": str(data), "state-dir": str(tmp_path / "state")}
    first = peer_from_context(node, {"alignment": "psi"})
    key_file = tmp_path / "state" / "crm" / "peer.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # No shared secret file is needed, and the same key serves the next message.
    np.testing.assert_array_equal(first.pseudonyms(),
                                  peer_from_context(node, {"alignment": "psi"}).pseudonyms())
    key_file.write_bytes(b"short")
    with pytest.raises(PeerDataError, match="crm: its secret file .* is damaged"):
        peer_from_context(node, {"alignment": "psi"})
    assert peer_secret("x", state_dir=None, simulated_secret="demo") != peer_secret(
        "y", state_dir=None, simulated_secret="demo")


# -------------------------------------------------------- the noised release
def _pld_epsilon(noise_multiplier: float, delta: float) -> float:
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier))
    return accountant.get_epsilon(delta)


def test_reported_epsilon_is_the_accountants(tmp_path, simulated):
    config = {"encoder": "none", "seed": 3, "dp-noise-multiplier": 2.0,
              "dp-clip-norm": 3.0, "dp-delta": 1e-6, "audit": False}
    peer = peer_from_context({"partition-id": 1, "num-partitions": 3},
                             {"dataset": "digits", "alignment-secret": "secret-of-the-peers",
                              "results-dir": str(tmp_path)})
    n = len(peer.table)
    is_test = np.arange(n) % 5 == 0
    latents, metrics = peer.embed(np.arange(n), is_test, config, run_id=11)
    assert metrics["privacy/dp_epsilon"] == pytest.approx(_pld_epsilon(2.0, 1e-6),
                                                          rel=1e-9)
    assert np.linalg.norm(latents, axis=1).mean() > 3.0  # noise of sigma 12 per value
    # The noise is keyed by the peer's secret, the run and the entity: a prediction
    # with this run's encoder releases the same values; another run's noise differs.
    np.testing.assert_array_equal(peer.encode(np.arange(n), 11)[0], latents)
    again, _ = peer.embed(np.arange(n), is_test, config, run_id=12)
    assert not np.allclose(again, latents)


def test_release_noise_is_keyed_by_secret_run_and_entity():
    rows = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32)
    off = LatentRelease({}, secret=lambda: pytest.fail("no secret needed"), train_run=1)
    assert off.apply(rows, ["a", "b"], "p") == (rows, {})

    def release(train_run: int = 1, secret: bytes = b"k" * 32, ids=("a", "b"),
                latents=rows):
        return LatentRelease({"dp-noise-multiplier": 0.5, "dp-clip-norm": 1.0},
                             secret=lambda: secret, train_run=train_run).apply(
                                 latents, list(ids), "p")

    released, figures = release()
    assert figures["dp_clipped_share"] == 0.5  # [3, 4] is longer than the bound
    np.testing.assert_array_equal(release()[0], released)
    # An entity's noise does not depend on the other rows released with it.
    assert release(ids=("a", "c"))[0][0].tolist() == released[0].tolist()
    for other in (release(train_run=2)[0], release(secret=b"j" * 32)[0]):
        assert not np.isclose(other, released).any()
    # A row whose latent changed gets fresh noise: the two releases' difference
    # is not the (noise-free) difference of the latents.
    changed = rows + np.array([[0.0, 0.0], [0.1, 0.0]], dtype=np.float32)
    again = release(latents=changed)[0]
    np.testing.assert_array_equal(again[0], released[0])
    assert not np.allclose(again[1] - released[1], [0.1, 0.0], atol=1e-3)
    with pytest.raises(PeerDataError, match="p: clip_norm"):
        LatentRelease({"dp-noise-multiplier": 1.0, "dp-clip-norm": 0.0},
                      secret=lambda: b"k", train_run=1).apply(rows, ["a", "b"], "p")


def test_two_noise_levels_do_not_cancel_out():
    """The review's attack: two releases of the same latents that differ only in
    the noise multiplier. With shared draws, ``(s2 * r1 - s1 * r2) / (s2 - s1)``
    gives the noiseless latents; with every setting in the noise key it does not."""
    latents = np.random.default_rng(0).normal(0.0, 0.1, (400, 4)).astype(np.float32)
    ids = [f"e{i}" for i in range(len(latents))]

    def release(multiplier: float) -> tuple[np.ndarray, float]:
        mechanism = LatentRelease({"dp-noise-multiplier": multiplier, "dp-clip-norm": 1.0},
                                  secret=lambda: b"k" * 32, train_run=7)
        return mechanism.apply(latents, ids, "p")[0], multiplier

    (r1, s1), (r2, s2) = release(20.0), release(5.0)
    solved = (s1 * r2 - s2 * r1) / (s1 - s2)
    error = float(np.abs(solved - latents).mean())
    # Independent draws leave noise of about 4 per value (sigma 20 and 5 combined).
    assert error > 1.0, error


def test_release_sends_latents_in_the_float_width_asked_for():
    rows = np.array([[3.0, 4.0], [0.1, 0.2]], dtype=np.float32)
    half = LatentRelease({"latent-bits": 16}, secret=None, train_run=1)
    released, _ = half.apply(rows, ["a", "b"], "p")
    assert released.dtype == np.float16
    np.testing.assert_allclose(released, rows, rtol=2**-11)
    assert half.settings() == {"latent-bits": 16.0}  # kept for prediction runs
    with pytest.raises(PeerDataError, match=r"p: latent values up to 8e\+04 do not fit "
                                            r"float16; set latent-bits = 32"):
        half.apply(rows * 2e4, ["a", "b"], "p")
    with pytest.raises(PeerDataError, match=r"p: latent-bits must be one of \[16, 32\], "
                                            r"got 8"):
        LatentRelease({"latent-bits": 8}, secret=None, train_run=1).apply(rows, ["a", "b"],
                                                                          "p")


def test_half_width_latents_halve_the_bytes_and_keep_the_metric():
    config = RAW | {"encoder": "none"}
    full, half = _aligned(config), _aligned(config | {"latent-bits": 16})
    assert sum(half.result.bytes_received.values()) * 2 == sum(
        full.result.bytes_received.values())
    # Rounding to float16 (relative error 2**-11) barely moves the model.
    assert half.result.metrics["accuracy"] == pytest.approx(
        full.result.metrics["accuracy"], abs=0.005)
    with pytest.raises(ValueError, match="'latent-bits' must be one of 32, 16, got 64"):
        strategy_from_config(RAW | {"latent-bits": 64})


# ------------------------------------------------------------------ the audit
def test_audit_figures_reach_the_report_per_peer(tmp_path):
    strategy = _aligned(RAW | {"audit": True, "encoder": "autoencoder", "latent-dim": 4,
                               "epochs": 3, "audit-leak-fraction": 0.05})
    privacy = strategy.result.privacy
    assert sorted(privacy) == ["peer-0", "peer-1", "peer-2"]
    for figures in privacy.values():
        assert figures["leak_fraction"] == 0.05
        # A 4-dim latent of ~21 pixels is far harder to invert than the raw columns.
        assert figures["attack_r2"] < figures["raw_r2"] - 0.2
        assert all(np.isfinite(v) for v in figures.values())
    assert not any(k.startswith("privacy/") for m in strategy.result.peer_metrics.values()
                   for k in m)
