"""Tests of vfl_embed.privacy.dp: clipping, noise, accounting, the statement."""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pytest
from scipy import optimize, stats

from vfl_embed.privacy.dp import GaussianLatentRelease, gaussian_epsilon


def pld_epsilon(z: float, delta: float, releases: int, interval: float = 1e-3) -> float:
    """Epsilon straight from dp-accounting's PLD accountant."""
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier=z), releases))
    return accountant.get_epsilon(delta)


def analytic_epsilon(sigma: float, sensitivity: float, delta: float) -> float:
    """Exact epsilon of one Gaussian release (Balle and Wang, ICML 2018, Theorem 8)."""
    a = sensitivity / (2 * sigma)
    b = sigma / sensitivity

    def excess(eps: float) -> float:
        return (stats.norm.cdf(a - eps * b)
                - math.exp(eps) * stats.norm.cdf(-a - eps * b) - delta)

    return optimize.brentq(excess, 1e-9, 100.0)


@pytest.fixture
def latents() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.normal(size=(300, 4)) * rng.uniform(0.1, 3.0, size=(300, 1))).astype(
        np.float32)


# ----------------------------------------------------------------- accounting
@pytest.mark.parametrize(("z", "releases"), [(0.5, 1), (1.0, 1), (2.0, 1), (5.0, 1),
                                             (1.0, 3), (2.0, 10)])
def test_epsilon_is_the_pld_accountants(z: float, releases: int) -> None:
    expected = pld_epsilon(z, 1e-5, releases)
    assert gaussian_epsilon(z, 1e-5, releases) == expected
    assert GaussianLatentRelease(0.7, z).epsilon(releases) == expected
    # The accountant's finer default discretization gives the same epsilon.
    assert expected == pytest.approx(pld_epsilon(z, 1e-5, releases, 1e-4), rel=1e-5)


@pytest.mark.parametrize(("z", "approx"), [(1.0, 4.4), (2.0, 2.0), (5.0, 0.73)])
def test_one_release_matches_the_exact_gaussian_mechanism(z: float, approx: float) -> None:
    # sigma = z * 2C against sensitivity 2C: the accountant must not count the
    # replace-one relation a second time (that would give the epsilon of z / 2).
    clip = 1.5
    release = GaussianLatentRelease(clip, z)
    exact = analytic_epsilon(release.sigma, 2 * clip, 1e-5)
    assert exact <= release.epsilon() <= exact * 1.001 + 1e-3
    assert release.epsilon() == pytest.approx(approx, abs=0.05)  # PRIVACY.md's figures


def test_epsilon_falls_with_noise_and_grows_with_releases() -> None:
    epsilons = [gaussian_epsilon(z, 1e-5) for z in (0.5, 1.0, 2.0, 5.0, 10.0)]
    assert all(a > b for a, b in zip(epsilons, epsilons[1:], strict=False))
    assert gaussian_epsilon(1.0, 1e-5, 2) > gaussian_epsilon(1.0, 1e-5, 1)
    assert gaussian_epsilon(1.0, 1e-3) < gaussian_epsilon(1.0, 1e-6)


def test_no_noise_is_no_privacy(latents: np.ndarray) -> None:
    release = GaussianLatentRelease(1.0, 0.0)
    assert release.epsilon() == math.inf
    assert gaussian_epsilon(0.0, 1e-5, 4) == math.inf
    np.testing.assert_array_equal(release.release(latents), release.clip(latents))
    statement = release.statement()
    assert statement["epsilon"] is None
    assert "no differential privacy" in statement["mechanism"]
    json.dumps(statement, allow_nan=False)


# ------------------------------------------------------------------- clipping
def test_clipping_bounds_norms_and_keeps_short_rows(latents: np.ndarray) -> None:
    release = GaussianLatentRelease(clip_norm=1.0, noise_multiplier=0.0)
    clipped = release.clip(latents)
    norms = np.linalg.norm(latents.astype(np.float64), axis=1)
    short = norms <= 1.0
    assert 0 < short.sum() < len(latents)
    assert clipped.dtype == np.float32
    assert (np.linalg.norm(clipped.astype(np.float64), axis=1) <= 1.0 + 1e-6).all()
    np.testing.assert_array_equal(clipped[short], latents[short])
    # Long rows keep their direction and reach the bound.
    long = ~short
    np.testing.assert_allclose(clipped[long], latents[long] / norms[long, None], rtol=1e-6)
    release.release(latents)
    assert release.clipped_share_ == pytest.approx(long.mean())
    assert release.statement()["clipped_share"] == pytest.approx(long.mean())


# ---------------------------------------------------------------------- noise
def test_noise_has_standard_deviation_sigma() -> None:
    release = GaussianLatentRelease(clip_norm=0.5, noise_multiplier=1.3, seed=7)
    assert release.sigma == pytest.approx(1.3 * 2 * 0.5)
    noise = release.release(np.zeros((25_000, 4), dtype=np.float32))  # 100k draws
    assert noise.dtype == np.float32
    assert noise.std() == pytest.approx(release.sigma, rel=0.02)
    assert abs(noise.mean()) < 0.02 * release.sigma


def test_release_is_seeded(latents: np.ndarray) -> None:
    first = GaussianLatentRelease(2.0, 1.0, seed=3)
    again = GaussianLatentRelease(2.0, 1.0, seed=3)
    one, two = first.release(latents), first.release(latents)
    np.testing.assert_array_equal(one, again.release(latents))
    np.testing.assert_array_equal(two, again.release(latents))
    assert np.abs(one - two).min() > 0  # later calls draw fresh noise
    other = GaussianLatentRelease(2.0, 1.0, seed=4).release(latents)
    assert np.abs(one - other).max() > 0.1
    assert first.releases_ == 2
    assert first.statement()["releases"] == 2
    assert first.statement()["epsilon"] == first.epsilon(2)


def test_given_noise_is_added_to_the_clipped_rows(latents: np.ndarray) -> None:
    release = GaussianLatentRelease(1.0, 2.0)
    noise = np.random.default_rng(9).normal(0.0, release.sigma, latents.shape)
    released = release.release(latents, noise=noise)
    expected = (release.clip(latents).astype(np.float64) + noise).astype(np.float32)
    np.testing.assert_allclose(released, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="latents' shape"):
        release.release(latents, noise=noise[:10])
    with pytest.raises(ValueError, match="noise_multiplier is 0"):
        GaussianLatentRelease(1.0, 0.0).release(latents, noise=noise)


# ------------------------------------------------------------------ statement
def test_statement_is_json_and_says_what_is_covered(latents: np.ndarray) -> None:
    release = GaussianLatentRelease(clip_norm=2.0, noise_multiplier=2.0, delta=1e-6)
    before = release.statement()
    assert before["clipped_share"] is None and before["rows"] is None
    release.release(latents)
    statement = json.loads(json.dumps(release.statement(), allow_nan=False))
    assert statement["epsilon"] == pytest.approx(gaussian_epsilon(2.0, 1e-6))
    assert statement["sigma"] == pytest.approx(8.0)
    assert statement["sensitivity"] == pytest.approx(4.0)
    assert statement["delta"] == 1e-6 and statement["rows"] == 300
    assert "replace one" in statement["neighbouring_relation"]
    not_covered = " ".join(statement["not_covered"])
    for words in ("encoder", "P * epsilon", "predict run", "membership", "seed"):
        assert words in not_covered
    assert release.statement(releases=3)["epsilon"] == pytest.approx(
        gaussian_epsilon(2.0, 1e-6, 3))


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"clip_norm": 0.0, "noise_multiplier": 1.0}, "clip_norm must be"),
        ({"clip_norm": -1.0, "noise_multiplier": 1.0}, "clip_norm must be"),
        ({"clip_norm": math.inf, "noise_multiplier": 1.0}, "clip_norm must be"),
        ({"clip_norm": 1.0, "noise_multiplier": -0.1}, "noise_multiplier must be"),
        ({"clip_norm": 1.0, "noise_multiplier": math.nan}, "noise_multiplier must be"),
        ({"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 0.0}, "delta must be"),
        ({"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1.0}, "delta must be"),
    ],
)
def test_invalid_settings_raise(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianLatentRelease(**params)


def test_invalid_inputs_raise(latents: np.ndarray) -> None:
    release = GaussianLatentRelease(1.0, 1.0)
    with pytest.raises(ValueError, match="2-D matrix"):
        release.release(latents[0])
    broken = latents.copy()
    broken[2, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        release.release(broken)
    with pytest.raises(ValueError, match="releases must be a positive integer"):
        release.epsilon(0)
    with pytest.raises(ValueError, match="releases must be a positive integer"):
        gaussian_epsilon(1.0, 1e-5, 1.5)
    with pytest.raises(ValueError, match="delta must be"):
        gaussian_epsilon(1.0, 2.0)
