"""Reproduce the paper's scenarios S0-S4 on the built-in tables through Flower.

Every scenario is a real ``flwr run`` on a local simulation federation:

- S0 raw columns: every peer sends its preprocessed columns (``encoder=none``)
- S1 one shared autoencoder: one SuperNode holds all columns
- S2 individual autoencoders: one per peer, latents joined by ID
- S3 like S1 with a supervised (multitask) autoencoder
- S4 like S2 with supervised autoencoders

All scenarios use ``peer-coverage=1.0`` so that they share the same entities
and the same held-out split. Usage::

    python simulations/paper_scenarios.py [ames digits titanic] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vfl_embed.local_federation import PROJECT_ROOT, LocalFederation

DATASETS = {
    "ames": {"model": "xgboost", "peers": 3, "metric": "r2"},
    "digits": {"model": "logistic", "peers": 3, "metric": "accuracy"},
    "titanic": {"model": "xgboost", "peers": 3, "metric": "accuracy"},
}
SCENARIOS = {
    "S0": ("raw columns", {"encoder": "none"}, False),
    "S1": ("one shared autoencoder", {}, True),
    "S2": ("individual autoencoders", {}, False),
    "S3": ("shared supervised autoencoder", {"supervised": True}, True),
    "S4": ("individual supervised autoencoders", {"supervised": True}, False),
}


def run_dataset(fed: LocalFederation, name: str, out: Path) -> list[dict]:
    spec = DATASETS[name]
    rows = []
    for scenario, (title, extra, shared) in SCENARIOS.items():
        config = {"dataset": name, "model": spec["model"], "peer-coverage": 1.0,
                  "results-dir": str(out / "runs" / f"{name}-{scenario}")} | extra
        peers = 1 if shared else spec["peers"]
        print(f"== {name} {scenario} ({title}, {peers} peers)", flush=True)
        run = fed.run(config, num_peers=peers)
        if run.returncode != 0 or run.report_path is None:
            raise SystemExit(f"{name} {scenario} failed:\n{run.output[-4000:]}")
        report = run.report
        peer_metrics = report["peers"].values()
        rows.append({
            "dataset": name, "scenario": scenario, "title": title, "peers": peers,
            "metric": spec["metric"],
            "value": report["held_out_metrics"][spec["metric"]],
            "held_out": report["held_out_metrics"],
            "reconstruction_mae": _mean(p["reconstruction-mae"] for p in peer_metrics),
            "within_5pct": _mean(p["within-5pct"] for p in peer_metrics),
            "seconds": run.seconds,
        })
        print(f"   {spec['metric']} = {rows[-1]['value']:.4f} "
              f"({run.seconds:.0f} s)", flush=True)
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def markdown(rows: list[dict]) -> str:
    lines = ["| dataset | scenario | peers | held-out metric | vs S0 | "
             "reconstruction MAE | within 5 % | flwr run (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    base = {r["dataset"]: r["value"] for r in rows if r["scenario"] == "S0"}
    for r in rows:
        delta = r["value"] - base[r["dataset"]]
        mae = "-" if r["scenario"] == "S0" else f"{r['reconstruction_mae']:.3f}"
        within = "-" if r["scenario"] == "S0" else f"{100 * r['within_5pct']:.1f} %"
        lines.append(
            f"| {r['dataset']} | {r['scenario']} {r['title']} | {r['peers']} | "
            f"{r['metric']} {r['value']:.4f} | {delta:+.4f} | {mae} | {within} | "
            f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4),
                             squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        subset = [r for r in rows if r["dataset"] == name]
        ax.bar([r["scenario"] for r in subset], [r["value"] for r in subset],
               color=["#999999"] + ["#4c72b0"] * (len(subset) - 1))
        low = min(r["value"] for r in subset)
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.set_title(f"{name}: held-out {subset[0]['metric']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS),
                        help=f"any of {', '.join(DATASETS)} (default: all)")
    parser.add_argument("--out", type=Path,
                        default=PROJECT_ROOT / "results" / "scenarios")
    args = parser.parse_args()
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {list(DATASETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with LocalFederation() as fed:
        for name in args.datasets:
            rows += run_dataset(fed, name, args.out)
    (args.out / "scenarios.json").write_text(json.dumps(rows, indent=2))
    (args.out / "scenarios.md").write_text(markdown(rows))
    chart(rows, args.out / "scenarios.png")
    print(markdown(rows))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
