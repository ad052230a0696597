"""Privacy-utility sweep: downstream metric against the strongest audit attack.

Every point is a real ``flwr run`` (``vfl_embed.simulate``) of the app on a
built-in dataset with 3 peers, with the audit's leaked share of rows set by
``--leak`` (default 10 %). The knobs: latent size, Gaussian noise on the
released latents (differential privacy) and the encoder's decorrelation
weight. The raw-column run (scenario S0) is the utility reference.

    python benchmarks/privacy_sweep.py --dataset ames --dataset digits

writes ``privacy_sweep.json``, ``privacy_sweep.md`` and ``privacy_sweep.png``
under ``--out`` (default ``results/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from run_settings import machine

from vfl_embed import simulate
from vfl_embed.run.scenarios import DATASETS

# Each setting: a label and its run-config keys (on top of the dataset's defaults).
SETTINGS = {
    "latent 32 (default)": {},
    "latent 16": {"latent-dim": 16},
    "latent 8": {"latent-dim": 8},
    "latent 4": {"latent-dim": 4},
    "latent 2": {"latent-dim": 2},
    "latent 8, decorrelation 1": {"latent-dim": 8, "decorrelation-weight": 1.0},
    "latent 8, noise z=0.1": {"latent-dim": 8, "dp-noise-multiplier": 0.1},
    "latent 8, noise z=0.3": {"latent-dim": 8, "dp-noise-multiplier": 0.3},
    "latent 8, noise z=1": {"latent-dim": 8, "dp-noise-multiplier": 1.0},
    "latent 4, noise z=0.3": {"latent-dim": 4, "dp-noise-multiplier": 0.3},
}


def sweep(dataset: str, leak: float, clip_norm: float, results: Path) -> list[dict]:
    """Run the raw-column reference and every setting; return one row each."""
    spec = DATASETS[dataset]
    base = {"model": spec["model"], "audit-leak-fraction": leak, "dp-clip-norm": clip_norm}
    runs = [("raw columns (S0)", "S0", {})] + [
        (label, "S2", keys) for label, keys in SETTINGS.items()]
    rows = []
    for label, scenario, keys in runs:
        started = time.perf_counter()
        report = simulate(dataset, spec["peers"], scenario, results_dir=results / "runs",
                          config=base | keys)
        privacy = report.privacy
        attack = max((f.get("attack_r2", float("nan")) for f in privacy.values()),
                     default=float("nan"))
        epsilon = max((f.get("dp_epsilon", 0.0) for f in privacy.values()), default=0.0)
        rows.append({
            "dataset": dataset, "setting": label, "scenario": scenario, "config": keys,
            "metric": spec["metric"], "value": report.metrics[spec["metric"]],
            "strongest_attack_r2": attack,
            "pca_r2": max((f.get("pca_r2", float("nan")) for f in privacy.values()),
                          default=float("nan")),
            "epsilon_per_peer": epsilon or None,
            "seconds": time.perf_counter() - started,
        })
        print(f"[sweep] {dataset} {label}: {spec['metric']} {rows[-1]['value']:.4f}, "
              f"strongest attack R2 {attack:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def markdown(rows: list[dict], leak: float) -> str:
    """One table per dataset: setting, metric, gap to S0, strongest attack, epsilon."""
    parts = [f"# Privacy-utility sweep\n\nStrongest attack: the highest mean "
             f"reconstruction R² over the 3 peers, {leak:.0%} of a peer's rows leaked."]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        own = [r for r in rows if r["dataset"] == dataset]
        reference = own[0]["value"]
        lines = [f"## {dataset}\n", f"| setting | {own[0]['metric']} | gap to S0 | "
                 "strongest attack R² | PCA reference R² | epsilon per peer |",
                 "|---|---:|---:|---:|---:|---:|"]
        for r in own:
            epsilon = f"{r['epsilon_per_peer']:.3g}" if r["epsilon_per_peer"] else "-"
            lines.append(f"| {r['setting']} | {r['value']:.4f} | "
                         f"{r['value'] - reference:+.4f} | {r['strongest_attack_r2']:.3f} | "
                         f"{r['pca_r2']:.3f} | {epsilon} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    """Metric against strongest attack R², one panel per dataset."""
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(6 * len(datasets), 4.5))
    for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets,
                           strict=True):
        own = [r for r in rows if r["dataset"] == dataset]
        ax.axhline(own[0]["value"], color="grey", linestyle="--", label="raw columns (S0)")
        for r in own[1:]:
            ax.scatter(r["strongest_attack_r2"], r["value"], s=30)
            ax.annotate(r["setting"], (r["strongest_attack_r2"], r["value"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("strongest attack: mean reconstruction R² (lower is more private)")
        ax.set_ylabel(f"held-out {own[0]['metric']}")
        ax.set_title(dataset)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Parse the options, run the sweep, write JSON, Markdown and PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    parser.add_argument("--leak", type=float, default=0.10,
                        help="share of a peer's rows the attacker holds (default 0.10)")
    parser.add_argument("--clip-norm", type=float, default=4.0,
                        help="L2 bound of a released latent row (default 4)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for dataset in args.dataset or ["ames", "digits"]
            for row in sweep(dataset, args.leak, args.clip_norm, args.out)]
    (args.out / "privacy_sweep.json").write_text(json.dumps(
        {"leak_fraction": args.leak, "clip_norm": args.clip_norm, "machine": machine(),
         "rows": rows}, indent=2))
    (args.out / "privacy_sweep.md").write_text(markdown(rows, args.leak))
    chart(rows, args.out / "privacy_sweep.png")
    print(f"[sweep] written to {args.out}")


if __name__ == "__main__":
    main()
