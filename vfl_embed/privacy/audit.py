"""Privacy audit of a released latent: how well leaked rows let a server invert it.

Runs inside a peer, on its own encoded columns and the latents it releases;
only the aggregate figures of :meth:`AuditResult.to_dict` leave it (the
per-column ones of :meth:`AuditResult.column_figures` stay in the peer's
log). See PRIVACY.md ("Audit protocol", "The label floor") for where the
protocol comes from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from .attackers import ATTACKERS, attack, latent_views

__all__ = [
    "ATTACKERS",
    "HEADLINE_KEYS",
    "AuditResult",
    "ReconstructionAudit",
    "encoding_layout",
    "label_floor",
]

# What the attackers invert: the released latent, then the two references.
SOURCES = ("latent", "pca", "raw")
# Key prefix of each source (and of the decoder ceiling) in the flat figures.
PREFIXES = {"latent": "attack", "pca": "pca", "raw": "raw", "decoder": "decoder"}
# The "attacker" of the raw reference: the raw columns are their own
# reconstruction, so the reference is a true ceiling (R^2 1 on every column).
IDENTITY = "identity"
# The figures a chart or a one-line summary shows: mean numeric R^2 of the
# attack and of its references (see AuditResult.headline).
HEADLINE_KEYS = ("attack_r2", "pca_r2", "raw_r2", "decoder_r2")
# Flower's logger by name: the report and charts import this module, and
# must not pull the flwr package in (``import vfl_embed`` stays light).
_LOG = logging.getLogger("flwr")
# Fewer leaked rows than this cannot tune an attacker: the audit leaks this many.
MIN_LEAKED_ROWS = 5
# Fewer held-out rows than this cannot score one.
MIN_HELD_OUT_ROWS = 5
# An R^2 below this is reported as this: any negative R^2 already means "worse
# than predicting the mean", and one bad feature must not swamp the mean.
R2_FLOOR = -1.0
# Held-out rows scored: a seeded subset of at most this many (the figures are
# means; more rows only cost time).
MAX_SCORED_ROWS = 5000
# Bootstrap resamples of the held-out rows for the interval of the mean R^2.
BOOTSTRAP_RESAMPLES = 200


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
    squared_error: np.ndarray  # (held-out rows, numeric features), for the bootstrap


@dataclass(frozen=True)
class AuditResult:
    """Figures of one :meth:`ReconstructionAudit.run`.

    Per-feature arrays follow ``numeric_names`` and ``categorical_names``;
    ``r2``, ``within_5pct`` and ``cat_accuracy`` map a source (``"latent"``,
    ``"pca"``, ``"raw"``, ``"decoder"``) to an attacker name (``"identity"``
    for the raw reference, ``"decoder"`` for the decoder ceiling) to that
    attacker's per-feature figures on the held-out rows. R^2 is unclipped
    here; :meth:`to_dict` clips it at ``R2_FLOOR``.

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
    r2_interval : tuple[float, float] | None
        95 % bootstrap interval of the latent's mean R^2 over resamples of
        the held-out rows (each feature's attacker fixed); None without
        numeric features. It does not cover the draw of the leaked rows.
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
    r2_interval: tuple[float, float] | None = None
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

    def _clipped(self, source: str, figure: str) -> np.ndarray:
        """Return the best attacker's figure per feature, R^2 clipped at ``R2_FLOOR``."""
        values = self.best(source, figure)[0]
        return np.maximum(values, R2_FLOOR) if figure == "r2" else values

    def to_dict(self) -> dict[str, float]:
        """Return the audit's aggregate figures as a flat dict of finite floats.

        No key names a column: these figures leave the peer. Keys (``<p>``
        is ``attack`` for the released latent, ``pca``, ``raw`` and, with a
        decoder, ``decoder``; every figure is on the held-out rows, best
        attacker per feature, R^2 clipped at ``R2_FLOOR``):

        - ``leak_fraction``, ``leaked_rows``, ``held_out_rows``, ``latent_dim``;
        - with numeric features: ``<p>_r2`` (mean R^2 over numeric features),
          ``<p>_r2_worst`` (the highest, the worst column for privacy),
          ``attack_r2_low`` and ``attack_r2_high`` (the bootstrap interval of
          ``attack_r2``), ``<p>_within_5pct`` (share of (row, feature)
          observations recovered within the tolerance) and
          ``<p>_rows_within_5pct`` (share of rows with every numeric value
          within it);
        - with categorical columns: ``<p>_cat_accuracy`` (mean over columns
          of the argmax accuracy of the one-hot block) and
          ``majority_cat_accuracy`` (the same for the leaked rows' majority
          level);
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
        for source in self.sources:
            prefix = PREFIXES[source]
            if self.numeric_names:
                r2 = self._clipped(source, "r2")
                figures[f"{prefix}_r2"] = float(r2.mean())
                figures[f"{prefix}_r2_worst"] = float(r2.max())
                figures[f"{prefix}_within_5pct"] = float(
                    self._clipped(source, "within_5pct").mean())
                figures[f"{prefix}_rows_within_5pct"] = float(
                    self.rows_within_5pct[source])
            if self.categorical_names:
                figures[f"{prefix}_cat_accuracy"] = float(
                    self._clipped(source, "cat_accuracy").mean())
        if self.r2_interval is not None:
            figures["attack_r2_low"], figures["attack_r2_high"] = map(
                float, self.r2_interval)
        if self.categorical_names:
            figures["majority_cat_accuracy"] = float(self.majority_accuracy.mean())
        for figure, names in (("r2", self.numeric_names),
                              ("cat_accuracy", self.categorical_names)):
            for winner in self.best("latent", figure)[1] if names else ():
                wins[winner] += 1
        figures |= {f"attacker_wins/{a}": float(n) for a, n in wins.items()}
        return figures

    def column_figures(self) -> dict[str, dict[str, float]]:
        """Return, per numeric feature and categorical column, its figures.

        Each column maps to ``<p>_r2`` and ``<p>_within_5pct`` (numeric) or
        ``<p>_cat_accuracy`` and ``majority_cat_accuracy`` (categorical), as
        in :meth:`to_dict` but for that column alone. The keys are column
        names: log them at the peer, never send them.
        """
        columns: dict[str, dict[str, float]] = {
            name: {} for name in (*self.numeric_names, *self.categorical_names)}
        for figure, names in (("r2", self.numeric_names), ("within_5pct", self.numeric_names),
                              ("cat_accuracy", self.categorical_names)):
            for source in self.sources if names else ():
                values = self._clipped(source, figure)
                for name, value in zip(names, values, strict=True):
                    columns[name][f"{PREFIXES[source]}_{figure}"] = float(value)
        for name, value in zip(self.categorical_names, self.majority_accuracy, strict=True):
            columns[name]["majority_cat_accuracy"] = float(value)
        return columns

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

    :meth:`run` draws the leaked rows at random, trains each attacker of
    :mod:`~vfl_embed.privacy.attackers` (ridge, k-nearest neighbours, an
    MLP; each tuned on the leaked rows only, each predicting all encoded
    columns at once) on them and scores it on the other (held-out) rows.
    The latents are centred and scaled with the statistics of *all*
    released latents, not only the leaked ones: the server holds them all,
    so it may.

    Every figure is the **best attacker per feature** as scored on the
    held-out rows: the attacker could not pick that well (it does not have
    those rows), so the audit is an upper-bound-ish estimate of the risk,
    as PRIVACY.md asks; a single untuned attacker would understate it. The
    same suite inverts PCA of the latent's width fitted on all rows of ``x``
    (the reference the latent must beat). The raw reference is the encoded
    columns as their own reconstruction (R^2 1, every value within
    tolerance): the ceiling of any release, which no reference exceeds.
    When a decoder is given, the peer's own decoder on the released latents
    is the white-box ceiling (no training). Numeric features are scored by
    R^2 and by the share recovered within ``tolerance`` (the rule of
    :func:`~vfl_embed.peer.autoencoder.representation_metrics`:
    ``|x_hat - x| <= tolerance * max(|x|, s)`` in original units);
    categorical columns by the accuracy of the argmax of their one-hot
    block, against always guessing the leaked rows' majority level.

    The leaked rows are the first ones of a seeded permutation, so at one
    seed a larger leak holds every row of a smaller one (:meth:`curve`).
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
        The attack suite, a non-empty subset of :data:`ATTACKERS`; one name
        runs that attacker alone.
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
        references: bool = True,
    ) -> AuditResult:
        """Attack ``latents`` and return the figures.

        :func:`encoding_layout` gives every layout keyword from a fitted
        :class:`~vfl_embed.peer.preprocessing.Preprocessor`.

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
        references : bool (default: True)
            False skips the PCA and raw references (:func:`label_floor`
            needs only the attack).
        """
        started = time.perf_counter()
        attackers = self._check_params()
        released = latents
        x, latents = _check_matrices(x, latents)
        layout = _check_layout(x, n_numeric, categorical_blocks, numeric_scale,
                               feature_names, numeric_to_original)
        leaked, held = self._draw_rows(len(x))
        truth = _Truth(x[held], layout, self.tolerance)
        scores: dict[str, dict[str, _Scores]] = {}
        chosen: dict[str, dict[str, str]] = {}

        from sklearn.decomposition import PCA
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            sources = {"latent": latents}
            if references:
                width = min(latents.shape[1], x.shape[1], len(x))
                sources["pca"] = PCA(width, svd_solver="full").fit_transform(x)
            for source, features in sources.items():
                views = latent_views(features, leaked, held)
                predictions = {a: attack(a, views, x[leaked], layout, self.seed)
                               for a in attackers}
                scores[source] = {a: truth.score(p) for a, (p, _) in predictions.items()}
                chosen[source] = {a: setting for a, (_, setting) in predictions.items()}
            if references:
                scores["raw"] = {IDENTITY: truth.score(x[held])}
            if decoder is not None:
                scores["decoder"] = {"decoder": truth.score(
                    _checked_decoding(decoder, released, x.shape)[held])}
        result = AuditResult(
            leak_fraction=float(self.leak_fraction), leaked_rows=int(leaked.sum()),
            held_out_rows=int(held.sum()), latent_dim=int(latents.shape[1]),
            numeric_names=layout.numeric_names,
            categorical_names=layout.categorical_names,
            r2={s: {a: v.r2 for a, v in by.items()} for s, by in scores.items()},
            within_5pct={s: {a: v.within.mean(axis=0) for a, v in by.items()}
                         for s, by in scores.items()},
            cat_accuracy={s: {a: v.accuracy for a, v in by.items()}
                          for s, by in scores.items()},
            rows_within_5pct={s: _rows_within(list(by.values())) for s, by in scores.items()},
            majority_accuracy=_majority_accuracy(x, leaked, held, layout),
            r2_interval=_r2_interval(truth, list(scores["latent"].values()), self.seed),
            hyperparameters=chosen, leaked=leaked, scored=held,
            seconds=time.perf_counter() - started,
        )
        _LOG.debug("privacy audit: %d leaked rows, %d held out, %.2f s; %s",
                   result.leaked_rows, result.held_out_rows, result.seconds, chosen)
        return result

    def curve(
        self,
        x: np.ndarray,
        latents: np.ndarray,
        fractions: Sequence[float] = (0.01, 0.05, 0.10),
        **layout: object,
    ) -> dict[float, dict[str, float]]:
        """Run the audit at each leaked fraction; return its aggregate figures per fraction.

        Every run uses this audit's attackers, seed and tolerance, so a
        larger fraction's leaked rows include a smaller one's.

        Parameters
        ----------
        x, latents : numpy.ndarray
            As in :meth:`run`.
        fractions : Sequence[float] (default: (0.01, 0.05, 0.10))
            The leaked fractions, each in (0, 1), distinct.
        **layout
            The keywords of :meth:`run` (``n_numeric``, ..., ``decoder``).
        """
        fractions = tuple(fractions)
        if not fractions or len(set(fractions)) != len(fractions):
            raise ValueError(
                f"fractions must be distinct leak fractions, got {list(fractions)}")
        return {float(f): ReconstructionAudit(f, self.attackers, self.seed, self.tolerance)
                .run(x, latents, **layout).to_dict() for f in fractions}

    def _draw_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the leaked rows and of the held-out rows scored."""
        n_leaked = max(int(round(self.leak_fraction * n)), MIN_LEAKED_ROWS)
        if n - n_leaked < MIN_HELD_OUT_ROWS:
            raise ValueError(
                f"the audit needs at least {MIN_LEAKED_ROWS} leaked and "
                f"{MIN_HELD_OUT_ROWS} held-out rows; got {n} rows with leak_fraction "
                f"{self.leak_fraction} ({n_leaked} leaked)")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        leaked, held = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        leaked[order[:n_leaked]] = True
        rest = order[n_leaked:]
        held[rest if len(rest) <= MAX_SCORED_ROWS else
             rng.choice(rest, MAX_SCORED_ROWS, replace=False)] = True
        return leaked, held

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


def label_floor(
    x: np.ndarray,
    label: np.ndarray | Sequence[object],
    *,
    categorical: bool,
    leak_fraction: float = 0.1,
    seed: int = 42,
    prediction: np.ndarray | None = None,
    attackers: Sequence[str] = ATTACKERS,
    **layout: object,
) -> dict[str, float]:
    """Attack a release that is the label itself: the floor of any label-useful release.

    A release from which the label can be learnt tells an attacker at least
    what the label tells (PRIVACY.md, "The label floor"). This runs the
    audit of :meth:`ReconstructionAudit.run`, without references, with the
    label as the "latent", and with ``prediction`` also on the downstream
    prediction alone. At the same ``leak_fraction`` and ``seed`` as a
    peer's audit the leaked rows are the same.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)`` encoded rows of one peer, as in :meth:`ReconstructionAudit.run`.
    label : array-like
        ``(n,)`` labels of the same rows.
    categorical : bool
        True for a class label: released as the one-hot of its classes (the
        attack cannot then use an arbitrary order of class codes); False for
        a numeric label, released as one column.
    leak_fraction : float (default: 0.1)
        Share of the rows the attacker holds, in (0, 1).
    seed : int (default: 42)
        Seed of the audit (:class:`ReconstructionAudit`).
    prediction : numpy.ndarray | None (default: None)
        ``(n,)`` or ``(n, k)`` downstream predictions of the same rows (a
        value, or class probabilities), floored in the same way.
    attackers : Sequence[str] (default: ("ridge", "knn", "mlp"))
        The attack suite, as in :class:`ReconstructionAudit`.
    **layout
        The layout keywords of :meth:`ReconstructionAudit.run`
        (``n_numeric``, ``categorical_blocks``, ...; :func:`encoding_layout`).

    Returns
    -------
    dict[str, float]
        ``floor_label_r2`` and ``floor_label_r2_worst`` (mean and highest R^2
        over numeric features) and ``floor_label_cat_accuracy``, for the
        kinds of column the peer has; with ``prediction`` the same for
        ``floor_prediction_*``.
    """
    releases = {"label": _label_release(label, categorical, len(x))}
    if prediction is not None:
        releases["prediction"] = np.asarray(prediction, dtype=np.float64).reshape(len(x), -1)
    audit = ReconstructionAudit(leak_fraction, attackers, seed)
    floor = {}
    for name, release in releases.items():
        figures = audit.run(x, release, references=False, **layout).to_dict()
        floor |= {f"floor_{name}_{key}": figures[f"attack_{key}"]
                  for key in ("r2", "r2_worst", "cat_accuracy") if f"attack_{key}" in figures}
    return floor


def _label_release(label: np.ndarray | Sequence[object], categorical: bool,
                   n: int) -> np.ndarray:
    label = np.asarray(label)
    if label.shape != (n,):
        raise ValueError(f"label must hold one value per row of x ({n}), got shape "
                         f"{label.shape}")
    if categorical:
        _, codes = np.unique(label, return_inverse=True)
        return np.eye(codes.max() + 1)[codes]
    return label.astype(np.float64)[:, None]


def encoding_layout(preprocessor) -> dict[str, object]:  # noqa: ANN001
    """Keywords of :meth:`ReconstructionAudit.run` from a fitted Preprocessor.

    Example: ``ReconstructionAudit().run(x, latents, **encoding_layout(pre))``.
    Column names go only into :meth:`AuditResult.column_figures`; category
    levels nowhere.
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
        self.numeric = x_held[:, :layout.n_numeric]
        self.original = _checked_original(layout.to_original, self.numeric)
        self.tolerance = tolerance * np.maximum(np.abs(self.original), layout.scale)
        self.sst = ((self.numeric - self.numeric.mean(axis=0)) ** 2).sum(axis=0)
        self.levels = [x_held[:, block].argmax(axis=1) for block in layout.blocks]

    def score(self, predicted: np.ndarray) -> _Scores:
        numeric = predicted[:, :self.layout.n_numeric]
        squared_error = (numeric - self.numeric) ** 2
        original = _checked_original(self.layout.to_original, numeric)
        within = np.abs(original - self.original) <= self.tolerance
        accuracy = np.array([
            float(np.mean(predicted[:, block].argmax(axis=1) == levels))
            for block, levels in zip(self.layout.blocks, self.levels, strict=True)])
        return _Scores(_r2(squared_error.sum(axis=0), self.sst), within, accuracy,
                       squared_error)


def _r2(sse: np.ndarray, sst: np.ndarray) -> np.ndarray:
    # A feature constant in the scored rows: R^2 1 if hit exactly, else 0
    # (scikit-learn's force_finite convention).
    constant = sst <= 0
    return np.where(constant, (sse == 0).astype(float),
                    1.0 - sse / np.where(constant, 1.0, sst))


def _r2_interval(
    truth: _Truth, scores: Sequence[_Scores], seed: int
) -> tuple[float, float] | None:
    """95 % bootstrap interval of the mean clipped R^2, best attacker per feature.

    Resamples the held-out rows (as multinomial weights, so no resample is
    materialized); each feature keeps the attacker that was best on all of them.
    """
    n, features = truth.numeric.shape
    if features == 0:
        return None
    best = np.array([s.r2 for s in scores]).argmax(axis=0)
    errors = np.array([s.squared_error for s in scores])[best, :, np.arange(features)].T
    weights = np.random.default_rng(seed).multinomial(
        n, np.full(n, 1.0 / n), size=BOOTSTRAP_RESAMPLES).astype(np.float64)
    centred = truth.numeric - truth.numeric.mean(axis=0)
    means = weights @ centred / n
    # Rounding leaves a tiny positive sum of squares on a constant feature.
    sst = np.maximum(weights @ centred ** 2 - n * means ** 2, 0.0)
    sst[sst <= 1e-12 * (1.0 + truth.sst)] = 0.0
    r2 = np.maximum(_r2(weights @ errors, sst), R2_FLOOR).mean(axis=1)
    low, high = np.percentile(r2, [2.5, 97.5])
    return float(low), float(high)


def _majority_accuracy(
    x: np.ndarray, leaked: np.ndarray, held: np.ndarray, layout: _Layout
) -> np.ndarray:
    """Per categorical column, the accuracy of guessing the leaked rows' majority level."""
    return np.array([
        float(np.mean(x[held][:, block].argmax(axis=1)
                      == x[leaked][:, block].sum(axis=0).argmax()))
        for block in layout.blocks])


def _checked_decoding(
    decoder: Callable[[np.ndarray], np.ndarray], released: np.ndarray,
    shape: tuple[int, int],
) -> np.ndarray:
    reconstruction = np.asarray(decoder(released), dtype=np.float64)
    if reconstruction.shape != shape:
        raise ValueError(f"decoder returned shape {reconstruction.shape} for {shape[0]} "
                         f"latents; expected the shape of x, {shape}")
    if not np.isfinite(reconstruction).all():
        raise ValueError("decoder returned non-finite values")
    return reconstruction


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
