"""Privacy audit of a released latent: how well leaked rows let a server invert it.

Runs inside a peer, on its own encoded columns and the latents it releases;
only the figures of :meth:`AuditResult.to_dict` leave it. See PRIVACY.md
("Audit protocol") for where the protocol comes from.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

__all__ = [
    "ATTACKERS",
    "HEADLINE_KEYS",
    "AuditResult",
    "ReconstructionAudit",
    "encoding_layout",
]

# Attackers the suite knows, in the order ties are broken.
ATTACKERS = ("ridge", "knn", "mlp")
# What the attackers invert: the released latent, then the two references.
SOURCES = ("latent", "pca", "raw")
# Key prefix of each source (and of the decoder ceiling) in the flat figures.
PREFIXES = {"latent": "attack", "pca": "pca", "raw": "raw", "decoder": "decoder"}
# The figures a chart or a one-line summary shows: mean numeric R^2 of the
# attack and of its references (see AuditResult.headline).
# Flower's logger by name: the report and charts import this module, and
# must not pull the flwr package in (``import vfl_embed`` stays light).
_LOG = logging.getLogger("flwr")

HEADLINE_KEYS = ("attack_r2", "pca_r2", "raw_r2", "decoder_r2")
# Fewer leaked rows than this cannot tune an attacker: the audit leaks this many.
MIN_LEAKED_ROWS = 5
# Fewer held-out rows than this cannot score one.
MIN_HELD_OUT_ROWS = 5
# An R^2 below this is reported as this: any negative R^2 already means "worse
# than predicting the mean", and one bad feature must not swamp the mean.
R2_FLOOR = -1.0
# Ridge penalties tried (efficient leave-one-out on the leaked rows).
RIDGE_ALPHAS = np.logspace(-3, 4, 15)
# Neighbour counts tried (leave-one-out on the leaked rows, per feature);
# only those below the number of leaked rows.
KNN_NEIGHBOURS = (1, 2, 3, 5, 8, 13, 21, 34)
# MLP settings tried ((hidden width, L2 penalty), MLP_FOLDS-fold CV on the
# leaked rows); the larger grid once at least MLP_LARGE_FROM rows leaked. The
# MLP is most of the audit's time: keep these short.
MLP_GRID = ((32, 1.0), (128, 1.0), (128, 10.0))
MLP_GRID_LARGE = ((32, 1.0), (128, 0.1), (128, 1.0), (128, 10.0))
MLP_LARGE_FROM = 100
MLP_FOLDS = 3
MLP_MAX_ITER = 200
# The MLP trains on at most this many of the leaked rows (a seeded subset),
# ridge and k-NN on all of them.
MLP_MAX_ROWS = 2000
# Held-out rows scored: a seeded subset of at most this many (the figures are
# means; more rows only cost time).
MAX_SCORED_ROWS = 5000
# Rows per block of a distance computation (memory: CHUNK_ROWS x leaked rows).
CHUNK_ROWS = 1024


@dataclass(frozen=True)
class _Layout:
    """Where the numeric and categorical parts of the encoded matrix are."""

    n_numeric: int
    blocks: tuple[slice, ...]
    scale: np.ndarray
    to_original: Callable[[np.ndarray], np.ndarray]
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]


@dataclass(frozen=True)
class _Scores:
    """One prediction's figures on the held-out rows."""

    r2: np.ndarray  # per numeric feature, unclipped
    within: np.ndarray  # (held-out rows, numeric features) booleans
    accuracy: np.ndarray  # per categorical column


@dataclass(frozen=True)
class AuditResult:
    """Figures of one :meth:`ReconstructionAudit.run`.

    Per-feature arrays follow ``numeric_names`` and ``categorical_names``;
    ``r2``, ``within_5pct`` and ``cat_accuracy`` map a source (``"latent"``,
    ``"pca"``, ``"raw"``, ``"decoder"``) to an attacker name (``"decoder"``
    for the decoder ceiling) to that attacker's per-feature figures on the
    held-out rows. R^2 is unclipped here; :meth:`to_dict` clips it at
    ``R2_FLOOR``.

    Attributes
    ----------
    leak_fraction : float
        The share of rows the attack assumes leaked (the audit's parameter).
    leaked_rows : int
        Rows the attackers were trained on.
    held_out_rows : int
        Rows the attacks were scored on: the rows not leaked, or a seeded
        sample of ``MAX_SCORED_ROWS`` (5,000) of them.
    latent_dim : int
        Width of the audited latent (and of the PCA reference).
    numeric_names, categorical_names : tuple[str, ...]
        Names of the numeric features and categorical columns.
    r2, within_5pct, cat_accuracy : dict
        Per-feature figures, see above.
    rows_within_5pct : dict[str, float]
        Per source, the share of held-out rows whose numeric values are all
        recovered within the tolerance (best attacker per feature).
    majority_accuracy : numpy.ndarray
        Per categorical column, the accuracy of always guessing the level
        most frequent in the leaked rows.
    hyperparameters : dict[str, dict[str, str]]
        Per source and attacker, the setting cross-validation chose.
    leaked, scored : numpy.ndarray
        Boolean masks of the rows taken as leaked and of the held-out rows
        scored (they stay in the peer: not in :meth:`to_dict`).
    seconds : float
        Wall time of the audit (not in :meth:`to_dict`: figures are
        deterministic, times are not).
    """

    leak_fraction: float
    leaked_rows: int
    held_out_rows: int
    latent_dim: int
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    r2: dict[str, dict[str, np.ndarray]]
    within_5pct: dict[str, dict[str, np.ndarray]]
    cat_accuracy: dict[str, dict[str, np.ndarray]]
    rows_within_5pct: dict[str, float]
    majority_accuracy: np.ndarray
    hyperparameters: dict[str, dict[str, str]] = field(default_factory=dict)
    leaked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    scored: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    seconds: float = 0.0

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources audited, in report order."""
        return tuple(s for s in (*SOURCES, "decoder") if s in self.r2)

    def best(self, source: str = "latent", figure: str = "r2") -> tuple[np.ndarray, list[str]]:
        """Best attacker per feature: its figure and its name.

        Parameters
        ----------
        source : str (default: "latent")
            ``"latent"``, ``"pca"``, ``"raw"`` or ``"decoder"``.
        figure : str (default: "r2")
            ``"r2"`` or ``"within_5pct"`` (numeric features) or
            ``"cat_accuracy"`` (categorical columns). Ties go to the
            attacker listed first.
        """
        if figure not in ("r2", "within_5pct", "cat_accuracy"):
            raise ValueError(
                f"figure must be 'r2', 'within_5pct' or 'cat_accuracy', got {figure!r}")
        if source not in self.r2:
            raise ValueError(f"source must be one of {list(self.sources)}, got {source!r}")
        by_attacker = getattr(self, figure)[source]
        names = list(by_attacker)
        values = np.array([by_attacker[a] for a in names])  # (attackers, features)
        winners = values.argmax(axis=0)
        return values.max(axis=0), [names[w] for w in winners]

    def to_dict(self) -> dict[str, float]:
        """Return the audit's figures as a flat dict of finite floats.

        Keys (``<p>`` is ``attack`` for the released latent, ``pca``, ``raw``
        and, with a decoder, ``decoder``; every figure is on the held-out
        rows, best attacker per feature):

        - ``leak_fraction``, ``leaked_rows``, ``held_out_rows``, ``latent_dim``;
        - with numeric features: ``<p>_r2`` (mean R^2 over numeric features,
          each clipped at ``R2_FLOOR``), ``<p>_within_5pct`` (share of
          (row, feature) observations recovered within the tolerance),
          ``<p>_rows_within_5pct`` (share of rows with every numeric value
          within it), and for the latent per feature ``r2/<feature>`` and
          ``within_5pct/<feature>``;
        - with categorical columns: ``<p>_cat_accuracy`` (mean over columns
          of the argmax accuracy of the one-hot block),
          ``majority_cat_accuracy`` (the same for the leaked rows' majority
          level), and for the latent per column ``cat_accuracy/<column>``;
        - ``attacker_wins/<attacker>``: on how many of the latent's features
          (R^2 for numeric, accuracy for categorical) that attacker was best.

        Keys of a kind of column the peer does not have are left out, never
        NaN. :data:`HEADLINE_KEYS` (see :meth:`headline`) are the ones to chart.
        """
        figures: dict[str, float] = {
            "leak_fraction": float(self.leak_fraction),
            "leaked_rows": float(self.leaked_rows),
            "held_out_rows": float(self.held_out_rows),
            "latent_dim": float(self.latent_dim),
        }
        wins = dict.fromkeys(self.r2["latent"], 0)
        if self.numeric_names:
            for source in self.sources:
                prefix = PREFIXES[source]
                r2 = np.maximum(self.best(source, "r2")[0], R2_FLOOR)
                figures[f"{prefix}_r2"] = float(r2.mean())
                figures[f"{prefix}_within_5pct"] = float(
                    self.best(source, "within_5pct")[0].mean())
                figures[f"{prefix}_rows_within_5pct"] = float(
                    self.rows_within_5pct[source])
            r2, winners = self.best("latent", "r2")
            within = self.best("latent", "within_5pct")[0]
            for name, value, share in zip(self.numeric_names, r2, within, strict=True):
                figures[f"r2/{name}"] = float(max(value, R2_FLOOR))
                figures[f"within_5pct/{name}"] = float(share)
            for winner in winners:
                wins[winner] += 1
        if self.categorical_names:
            for source in self.sources:
                figures[f"{PREFIXES[source]}_cat_accuracy"] = float(
                    self.best(source, "cat_accuracy")[0].mean())
            figures["majority_cat_accuracy"] = float(self.majority_accuracy.mean())
            accuracy, winners = self.best("latent", "cat_accuracy")
            for name, value in zip(self.categorical_names, accuracy, strict=True):
                figures[f"cat_accuracy/{name}"] = float(value)
            for winner in winners:
                wins[winner] += 1
        figures |= {f"attacker_wins/{a}": float(n) for a, n in wins.items()}
        return figures

    def headline(self) -> dict[str, float]:
        """Return the :data:`HEADLINE_KEYS` figures this audit has (the chart's bars)."""
        figures = self.to_dict()
        return {key: figures[key] for key in HEADLINE_KEYS if key in figures}


class ReconstructionAudit:
    """Audit a released latent against inversion from leaked (row, latent) pairs.

    The threat (He et al., "Model inversion attacks against collaborative
    inference", ACSAC 2019, black-box setting): an honest-but-curious server
    holds every latent a peer released and has obtained ``leak_fraction`` of
    that peer's raw rows. It trains inversion models latent -> encoded
    columns on the leaked rows and reconstructs the other rows.

    :meth:`run` draws the leaked rows at random, trains each attacker on
    them and scores it on the other (held-out) rows. The latents are centred
    and scaled with the statistics of *all* released latents, not only the
    leaked ones: the server holds them all, so it may. Two scalings are
    offered: each column to unit variance (``"standardized"``), or all
    columns by one common scale, which keeps the latent's geometry
    (``"scaled"``). Attackers, each tuned on the leaked rows only:

    - ``"ridge"``: ridge regression; scaling and penalty by efficient
      leave-one-out (``RidgeCV``), once for the numeric and once for the
      one-hot targets (a penalty per feature proved unstable with a few
      dozen rows);
    - ``"knn"``: mean of the k nearest leaked rows; scaling and ``k`` per
      numeric feature and per categorical column by leave-one-out;
    - ``"mlp"``: a one-hidden-layer ``MLPRegressor`` (tanh, L-BFGS, at most
      ``MLP_MAX_ITER`` iterations) on standardized latents, width and L2
      penalty by ``MLP_FOLDS``-fold cross-validation over ``MLP_GRID``
      (``MLP_GRID_LARGE`` from ``MLP_LARGE_FROM`` leaked rows), on at most
      ``MLP_MAX_ROWS`` of the leaked rows.

    Every attacker predicts all encoded columns (numeric and one-hot) at
    once. A feature that hardly varies in the leaked rows cannot be learnt
    by any of them: that, not a weak suite, is why ``raw_r2`` can stay below 1.

    Every figure is the **best attacker per feature** as scored on the
    held-out rows: the attacker could not pick that well (it does not have
    those rows), so the audit is an upper-bound-ish estimate of the risk,
    as PRIVACY.md asks; a single untuned attacker would understate it. The
    same suite inverts two references: PCA of the latent's width fitted on
    all rows of ``x`` (what the latent must beat) and the encoded columns
    themselves (the ceiling of this suite), plus, when a decoder is given,
    the peer's own decoder on the released latents (the white-box ceiling,
    no training). Numeric features are scored by R^2 and by the share
    recovered within ``tolerance`` (the rule of
    :func:`~vfl_embed.peer.autoencoder.representation_metrics`:
    ``|x_hat - x| <= tolerance * max(|x|, s)`` in original units);
    categorical columns by the accuracy of the argmax of their one-hot
    block, against always guessing the leaked rows' majority level.

    BLAS runs on one thread during the audit, so figures are the same bits
    for the same inputs and seed. Cost: the MLP is most of it, about 2 s per
    peer at 1 % of Ames' 2,930 rows and 8 s at 10 % (one core). At 1 % the
    draw of the leaked rows alone moves ``attack_r2`` by about 0.1: compare
    latents at the same seed, or average seeds.

    Parameters
    ----------
    leak_fraction : float (default: 0.01)
        Share of the rows the attacker holds, in (0, 1). It leaks
        ``round(leak_fraction * n)`` rows, but at least ``MIN_LEAKED_ROWS``
        (5): ``leaked_rows`` in the result says how many.
    attackers : Sequence[str] (default: ("ridge", "knn", "mlp"))
        The attack suite, a non-empty subset of :data:`ATTACKERS`.
    seed : int (default: 42)
        Seed of the leaked rows, the CV folds and the MLP's initialization.
    tolerance : float (default: 0.05)
        Relative tolerance of the "within 5 %" figures.
    """

    def __init__(
        self,
        leak_fraction: float = 0.01,
        attackers: Sequence[str] = ATTACKERS,
        seed: int = 42,
        tolerance: float = 0.05,
    ) -> None:
        self.leak_fraction = leak_fraction
        self.attackers = attackers
        self.seed = seed
        self.tolerance = tolerance

    def run(
        self,
        x: np.ndarray,
        latents: np.ndarray,
        *,
        n_numeric: int,
        categorical_blocks: Sequence[slice] = (),
        numeric_scale: np.ndarray | Sequence[float] | None = None,
        feature_names: Sequence[str] = (),
        numeric_to_original: Callable[[np.ndarray], np.ndarray] | None = None,
        decoder: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> AuditResult:
        """Attack ``latents`` and return the figures.

        :func:`encoding_layout` gives every keyword but ``decoder`` from a
        fitted :class:`~vfl_embed.peer.preprocessing.Preprocessor`.

        Parameters
        ----------
        x : numpy.ndarray
            ``(n, d)`` encoded rows: ``n_numeric`` standardized numeric
            columns first, then one-hot blocks.
        latents : numpy.ndarray
            ``(n, m)`` released latents of the same rows, in the same order.
        n_numeric : int
            Number of numeric columns at the start of ``x``.
        categorical_blocks : Sequence[slice] (default: ())
            Column slices of the one-hot blocks, after the numeric columns.
        numeric_scale : array-like | None (default: None)
            Per numeric feature, the scale ``s`` of the tolerance rule in
            original units (the preprocessor's training standard deviation);
            None takes each feature's standard deviation over the rows of ``x``.
        feature_names : Sequence[str] (default: ())
            Either one name per numeric feature and categorical column
            (``numeric_columns_ + categorical_columns_``) or one per encoded
            column (``feature_names_``, ``"column=level"`` in blocks: only
            the column part is kept). Empty: ``num_<i>`` and ``cat_<j>``.
        numeric_to_original : Callable | None (default: None)
            Maps an ``(rows, n_numeric)`` array of encoded numeric values to
            original units (``Preprocessor.numeric_to_original``); None takes
            the encoded values as the original units.
        decoder : Callable | None (default: None)
            The peer's decoder: called once with ``latents`` as given, returns
            the ``(n, d)`` reconstruction of ``x`` (encoded, like ``x``).
        """
        started = time.perf_counter()
        attackers = self._check_params()
        released = latents
        x, latents = _check_matrices(x, latents)
        layout = _check_layout(x, n_numeric, categorical_blocks, numeric_scale,
                               feature_names, numeric_to_original)
        n = len(x)
        n_leaked = max(int(round(self.leak_fraction * n)), MIN_LEAKED_ROWS)
        if n - n_leaked < MIN_HELD_OUT_ROWS:
            raise ValueError(
                f"the audit needs at least {MIN_LEAKED_ROWS} leaked and "
                f"{MIN_HELD_OUT_ROWS} held-out rows; got {n} rows with leak_fraction "
                f"{self.leak_fraction} ({n_leaked} leaked)")
        rng = np.random.default_rng(self.seed)
        leaked = np.zeros(n, dtype=bool)
        leaked[rng.choice(n, size=n_leaked, replace=False)] = True
        held = ~leaked
        if held.sum() > MAX_SCORED_ROWS:
            held[:] = False
            held[rng.choice(np.flatnonzero(~leaked), MAX_SCORED_ROWS, replace=False)] = True
        x_held = x[held]
        truth = _Truth(x_held, layout, self.tolerance)

        from sklearn.decomposition import PCA
        from threadpoolctl import threadpool_limits

        r2: dict[str, dict[str, np.ndarray]] = {}
        within: dict[str, dict[str, np.ndarray]] = {}
        accuracy: dict[str, dict[str, np.ndarray]] = {}
        rows_within: dict[str, float] = {}
        chosen: dict[str, dict[str, str]] = {}

        def record(source: str, scores: Mapping[str, _Scores]) -> None:
            r2[source] = {a: s.r2 for a, s in scores.items()}
            within[source] = {a: s.within.mean(axis=0) for a, s in scores.items()}
            accuracy[source] = {a: s.accuracy for a, s in scores.items()}
            rows_within[source] = _rows_within(list(scores.values()))

        with threadpool_limits(1, user_api="blas"):
            width = min(latents.shape[1], x.shape[1], n)
            sources = {
                "latent": latents,
                "pca": PCA(width, svd_solver="full").fit_transform(x),
                "raw": x,
            }
            for source, features in sources.items():
                views = _views(features, leaked, held)
                scores, chosen[source] = {}, {}
                for attacker in attackers:
                    predicted, setting = _ATTACKS[attacker](
                        views, x[leaked], layout, self.seed)
                    scores[attacker] = truth.score(predicted)
                    chosen[source][attacker] = setting
                record(source, scores)
            if decoder is not None:
                reconstruction = np.asarray(decoder(released), dtype=np.float64)
                if reconstruction.shape != x.shape:
                    raise ValueError(
                        f"decoder returned shape {reconstruction.shape} for {n} latents; "
                        f"expected the shape of x, {x.shape}")
                if not np.isfinite(reconstruction).all():
                    raise ValueError("decoder returned non-finite values")
                record("decoder", {"decoder": truth.score(reconstruction[held])})
        majority = np.array([
            float(np.mean(x_held[:, block].argmax(axis=1)
                          == x[leaked][:, block].sum(axis=0).argmax()))
            for block in layout.blocks])
        result = AuditResult(
            leak_fraction=float(self.leak_fraction), leaked_rows=n_leaked,
            held_out_rows=int(held.sum()), latent_dim=int(latents.shape[1]),
            numeric_names=layout.numeric_names,
            categorical_names=layout.categorical_names, r2=r2, within_5pct=within,
            cat_accuracy=accuracy, rows_within_5pct=rows_within,
            majority_accuracy=majority, hyperparameters=chosen, leaked=leaked,
            scored=held,
            seconds=time.perf_counter() - started,
        )
        _LOG.debug("privacy audit: %d leaked rows, %d held out, %.2f s; %s",
                   n_leaked, result.held_out_rows, result.seconds, chosen)
        return result

    def _check_params(self) -> tuple[str, ...]:
        fraction = self.leak_fraction
        if not isinstance(fraction, Real) or isinstance(fraction, bool) or not (
                0.0 < fraction < 1.0):
            raise ValueError(f"leak_fraction must be a number in (0, 1), got {fraction!r}")
        if isinstance(self.attackers, str):
            raise ValueError(f"attackers must be a sequence of names such as "
                             f"{list(ATTACKERS)}, got the string {self.attackers!r}")
        attackers = tuple(self.attackers)
        unknown = [a for a in attackers if a not in ATTACKERS]
        if not attackers or unknown or len(set(attackers)) != len(attackers):
            raise ValueError(f"attackers must be distinct names among {list(ATTACKERS)}, "
                             f"got {list(attackers)}")
        if not isinstance(self.seed, Integral) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        tolerance = self.tolerance
        if not isinstance(tolerance, Real) or isinstance(tolerance, bool) or not (
                tolerance > 0 and np.isfinite(tolerance)):
            raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
        return attackers


def encoding_layout(preprocessor) -> dict[str, object]:  # noqa: ANN001
    """Keywords of :meth:`ReconstructionAudit.run` from a fitted Preprocessor.

    Example: ``ReconstructionAudit().run(x, latents, **encoding_layout(pre))``.
    Column names go into the figures' keys; category levels do not.
    """
    return {
        "n_numeric": len(preprocessor.numeric_columns_),
        "categorical_blocks": preprocessor.categorical_blocks(),
        "numeric_scale": preprocessor.stds_.to_numpy(dtype=float),
        "feature_names": [*preprocessor.numeric_columns_,
                          *preprocessor.categorical_columns_],
        "numeric_to_original": preprocessor.numeric_to_original,
    }


# ------------------------------------------------------------------ scoring
class _Truth:
    """The held-out rows, ready to score predictions of them."""

    def __init__(self, x_held: np.ndarray, layout: _Layout, tolerance: float) -> None:
        self.x = x_held
        self.layout = layout
        numeric = x_held[:, :layout.n_numeric]
        self.original = _checked_original(layout.to_original, numeric)
        self.tolerance = tolerance * np.maximum(np.abs(self.original), layout.scale)
        self.sst = ((numeric - numeric.mean(axis=0)) ** 2).sum(axis=0)
        self.levels = [x_held[:, block].argmax(axis=1) for block in layout.blocks]

    def score(self, predicted: np.ndarray) -> _Scores:
        numeric = predicted[:, :self.layout.n_numeric]
        sse = ((numeric - self.x[:, :self.layout.n_numeric]) ** 2).sum(axis=0)
        # A feature constant in the held-out rows: R^2 1 if hit exactly, else 0
        # (scikit-learn's force_finite convention).
        constant = self.sst == 0
        r2 = np.where(constant, (sse == 0).astype(float),
                      1.0 - sse / np.where(constant, 1.0, self.sst))
        original = _checked_original(self.layout.to_original, numeric)
        within = np.abs(original - self.original) <= self.tolerance
        accuracy = np.array([
            float(np.mean(predicted[:, block].argmax(axis=1) == levels))
            for block, levels in zip(self.layout.blocks, self.levels, strict=True)])
        return _Scores(r2, within, accuracy)


def _rows_within(scores: Sequence[_Scores]) -> float:
    """Share of rows with every numeric value within tolerance, best attacker per feature."""
    within = np.array([s.within for s in scores])  # (attackers, rows, features)
    if within.shape[2] == 0:
        return 0.0
    best = within.mean(axis=1).argmax(axis=0)
    chosen = within[best, :, np.arange(within.shape[2])]  # (features, rows)
    return float(chosen.all(axis=0).mean())


def _checked_original(
    to_original: Callable[[np.ndarray], np.ndarray], numeric: np.ndarray
) -> np.ndarray:
    original = np.asarray(to_original(numeric), dtype=np.float64)
    if original.shape != numeric.shape:
        raise ValueError(f"numeric_to_original returned shape {original.shape} for "
                         f"input of shape {numeric.shape}; expected the same shape")
    return original


def _views(
    values: np.ndarray, leaked: np.ndarray, held: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return the two scalings of the released latents the attackers may use.

    Both use the statistics of all rows (the server holds every released
    latent): ``"standardized"`` gives each column unit variance, ``"scaled"``
    divides all columns by one common scale and so keeps the latent's own
    geometry (a low-variance column stays small). Each view is split into the
    leaked and the scored held-out rows.
    """
    centred = values - values.mean(axis=0)
    std = centred.std(axis=0)
    common = np.sqrt(np.mean(std ** 2))
    views = {
        "standardized": centred / np.where(std > 0, std, 1.0),
        "scaled": centred / (common if common > 0 else 1.0),
    }
    return {name: (view[leaked], view[held]) for name, view in views.items()}


# ---------------------------------------------------------------- attackers
_Views = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _target_groups(layout: _Layout, width: int) -> list[tuple[str, slice]]:
    """Numeric columns and one-hot columns: each group gets its own tuning."""
    groups = []
    if layout.n_numeric:
        groups.append(("numeric", slice(0, layout.n_numeric)))
    if layout.n_numeric < width:
        groups.append(("categorical", slice(layout.n_numeric, width)))
    return groups


def _ridge(views: _Views, y: np.ndarray, layout: _Layout, seed: int) -> tuple[np.ndarray, str]:
    """Ridge; view and penalty per group of targets by efficient leave-one-out.

    One penalty per group rather than per feature: with a few dozen leaked
    rows a per-feature choice is noisy and sometimes picks a penalty that
    explodes on the held-out rows.
    """
    from sklearn.linear_model import RidgeCV

    n_new = len(next(iter(views.values()))[1])
    predicted = np.empty((n_new, y.shape[1]))
    settings = []
    for group_name, group in _target_groups(layout, y.shape[1]):
        fits = []
        for view, (z, z_new) in views.items():
            model = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, y[:, group])
            fits.append((-model.best_score_, view, model, z_new))
        _, view, model, z_new = min(fits, key=lambda fit: fit[0])
        predicted[:, group] = model.predict(z_new).reshape(n_new, -1)
        settings.append(f"{group_name}: {view}, alpha {model.alpha_:.3g}")
    return predicted, "; ".join(settings)


def _knn(views: _Views, y: np.ndarray, layout: _Layout, seed: int) -> tuple[np.ndarray, str]:
    """k-NN mean; view and k per numeric feature and per one-hot block, by leave-one-out.

    A one-hot block is scored by its Brier score (squared error summed over
    its columns), so it gets one k.
    """
    ks = np.array([k for k in KNN_NEIGHBOURS if k < len(y)])
    k_max = int(ks.max())
    groups = [slice(j, j + 1) for j in range(layout.n_numeric)] + list(layout.blocks)
    errors, orders_new = [], []
    for z, z_new in views.values():
        order = _nearest(z, z, k_max, leave_one_out=True)
        column_errors = np.zeros((len(ks), y.shape[1]))
        for start in range(0, len(y), CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            means = np.cumsum(y[order[rows]], axis=1)[:, ks - 1] / ks[None, :, None]
            column_errors += ((means - y[rows, None, :]) ** 2).sum(axis=0)
        errors.append([column_errors[:, group].sum(axis=1) for group in groups])
        orders_new.append(_nearest(z_new, z, k_max))
    errors = np.array(errors)  # (views, groups, ks)
    predicted = np.empty((len(orders_new[0]), y.shape[1]))
    chosen_k = []
    for g, group in enumerate(groups):
        v, i = np.unravel_index(errors[:, g, :].argmin(), errors[:, g, :].shape)
        k = int(ks[i])
        predicted[:, group] = y[orders_new[v][:, :k]][:, :, group].mean(axis=1)
        chosen_k.append(k)
    return predicted, f"k in [{min(chosen_k)}, {max(chosen_k)}]"


def _nearest(
    query: np.ndarray, reference: np.ndarray, k: int, leave_one_out: bool = False
) -> np.ndarray:
    """Return the ``k`` nearest reference rows of each query row (ties: lower index).

    With ``leave_one_out``, ``query`` is ``reference`` and a row is not its
    own neighbour. Computed in chunks of rows to bound memory.
    """
    nearest = np.empty((len(query), k), dtype=np.intp)
    for start in range(0, len(query), CHUNK_ROWS):
        distances = _sq_distances(query[start:start + CHUNK_ROWS], reference)
        if leave_one_out:
            rows = np.arange(len(distances))
            distances[rows, start + rows] = np.inf
        nearest[start:start + len(distances)] = np.argsort(
            distances, axis=1, kind="stable")[:, :k]
    return nearest


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a ** 2).sum(axis=1)[:, None] + (b ** 2).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.maximum(squared, 0.0)


def _mlp(views: _Views, y: np.ndarray, layout: _Layout, seed: int) -> tuple[np.ndarray, str]:
    """MLP on standardized latents; width and L2 penalty by k-fold CV on the leaked rows."""
    from sklearn.model_selection import KFold

    # float32 halves the time of a fit and changes no figure that matters.
    z, z_new = (view.astype(np.float32) for view in views["standardized"])
    y = y.astype(np.float32)
    if len(z) > MLP_MAX_ROWS:  # bound the cost on very large leaks
        rows = np.sort(np.random.default_rng(seed).choice(len(z), MLP_MAX_ROWS,
                                                          replace=False))
        z, y = z[rows], y[rows]
    grid = MLP_GRID_LARGE if len(z) >= MLP_LARGE_FROM else MLP_GRID
    folds = list(KFold(MLP_FOLDS, shuffle=True, random_state=seed).split(z))
    errors = []
    for width, alpha in grid:
        error = 0.0
        for train, test in folds:
            model = _fit_mlp(z[train], y[train], width, alpha, seed)
            error += ((model.predict(z[test]).reshape(len(test), -1) - y[test]) ** 2).sum()
        errors.append(error)
    width, alpha = grid[int(np.argmin(errors))]
    model = _fit_mlp(z, y, width, alpha, seed)
    predicted = model.predict(z_new).reshape(len(z_new), -1).astype(np.float64)
    return predicted, f"width {width}, alpha {alpha:g}"


def _fit_mlp(z: np.ndarray, y: np.ndarray, width: int, alpha: float, seed: int):  # noqa: ANN202
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    model = MLPRegressor(hidden_layer_sizes=(width,), activation="tanh", solver="lbfgs",
                         alpha=alpha, max_iter=MLP_MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        # Bounded iterations are the budget, not a failure.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(z, y if y.shape[1] > 1 else y.ravel())


_ATTACKS = {"ridge": _ridge, "knn": _knn, "mlp": _mlp}


# --------------------------------------------------------------- validation
def _check_matrices(x: object, latents: object) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, values in (("x", x), ("latents", latents)):
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric matrix ({err})") from err
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"{name} must be a 2-D matrix with rows and columns, got "
                             f"shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} has non-finite values")
        arrays.append(array)
    x, latents = arrays
    if len(x) != len(latents):
        raise ValueError(f"x has {len(x)} rows but latents has {len(latents)}; pass the "
                         "latents of the rows of x, in the same order")
    return x, latents


def _check_layout(
    x: np.ndarray,
    n_numeric: object,
    blocks: Sequence[slice],
    scale: object,
    names: Sequence[str],
    to_original: Callable[[np.ndarray], np.ndarray] | None,
) -> _Layout:
    width = x.shape[1]
    if not isinstance(n_numeric, Integral) or isinstance(n_numeric, bool) or not (
            0 <= n_numeric <= width):
        raise ValueError(f"n_numeric must be an integer in [0, {width}] (the columns of "
                         f"x), got {n_numeric!r}")
    n_numeric = int(n_numeric)
    blocks = tuple(blocks)
    start = n_numeric
    for block in blocks:
        if not isinstance(block, slice) or block.step not in (None, 1):
            raise ValueError(f"categorical_blocks must be slices with step 1, got {block!r}")
        if block.start != start or block.stop is None or not start < block.stop <= width:
            raise ValueError(
                f"categorical_blocks must tile columns {n_numeric}..{width} of x "
                f"one after another; got {list(blocks)}")
        start = block.stop
    if start != width:
        raise ValueError(f"x has {width} columns but n_numeric ({n_numeric}) and "
                         f"categorical_blocks cover {start}")
    to_original = to_original if to_original is not None else _identity
    if scale is None:  # the spread of each feature in original units
        scale = _checked_original(to_original, x[:, :n_numeric]).std(axis=0)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    if scale.shape != (n_numeric,) or not np.isfinite(scale).all() or (scale < 0).any():
        raise ValueError(f"numeric_scale must hold {n_numeric} finite non-negative "
                         f"values (one per numeric feature), got shape {scale.shape}")
    return _Layout(n_numeric, blocks, scale, to_original,
                   *_names(names, n_numeric, blocks, width))


def _identity(values: np.ndarray) -> np.ndarray:
    return values


def _names(
    names: Sequence[str], n_numeric: int, blocks: tuple[slice, ...], width: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = [str(name) for name in names]
    if not names:
        return (tuple(f"num_{i}" for i in range(n_numeric)),
                tuple(f"cat_{j}" for j in range(len(blocks))))
    if len(names) == n_numeric + len(blocks):
        numeric, categorical = names[:n_numeric], names[n_numeric:]
    elif len(names) == width:
        numeric = names[:n_numeric]
        categorical = [_column_of(names[block], j) for j, block in enumerate(blocks)]
    else:
        raise ValueError(
            f"feature_names must name the {n_numeric} numeric features and "
            f"{len(blocks)} categorical columns ({n_numeric + len(blocks)} names) or "
            f"every encoded column ({width}); got {len(names)} names")
    if len(set(numeric + categorical)) != len(numeric) + len(categorical):
        raise ValueError("feature_names must be distinct")
    return tuple(numeric), tuple(categorical)


def _column_of(level_names: Sequence[str], j: int) -> str:
    """'col' from one-hot names 'col=a', 'col=b', ...; 'cat_<j>' if they disagree."""
    prefix = level_names[0]
    for name in level_names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix.rpartition("=")[0] or f"cat_{j}"
