"""The privacy frontier: utility gap to S0 against the strongest 10 %-leak attack.

Every point runs the app's own ServerApp and ClientApp in a fresh process
(:func:`vfl_embed.testing.in_process.run_in_process`: Flower's messages,
serialized as between processes, without its runtime) on a built-in dataset
with 3 peers and full coverage, once per seed (the seed moves the held-out
split, the peers' models and the audit's leaked rows). Each release is
audited inside its peer, as in every run: the server is given
``audit-leak-fraction`` of a peer's raw rows and fits the strongest of its
attackers from the released values to the raw columns.

    python simulations/frontier.py --dataset ames --seeds 5

writes ``frontier.json``, ``frontier.md`` and a chart per dataset
(``frontier-<dataset>.png``: gap to S0 against the attack, one line per
mechanism, the label floor dashed) under ``--out`` (default
``results/simulations``), and prints every point as it finishes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

# Each mechanism: its run-config keys over the dataset's defaults.
MECHANISMS = {
    "raw columns (S0)": {"encoder": "none"},
    "autoencoder 32 (today's default)": {"encoder": "autoencoder", "latent-dim": 32},
    "autoencoder 8": {"encoder": "autoencoder", "latent-dim": 8},
    "autoencoder 8, noise 0.3": {"encoder": "autoencoder", "latent-dim": 8,
                                 "dp-noise-multiplier": 0.3},
    "prediction (stacking)": {"encoder": "prediction"},
    "prediction, ridge combiner": {"encoder": "prediction", "model": "ridge"},
    "post-hoc noise 0.5": {"encoder": "autoencoder", "latent-dim": 32,
                           "dp-noise-multiplier": 0.5},
    "post-hoc noise 1": {"encoder": "autoencoder", "latent-dim": 32,
                         "dp-noise-multiplier": 1.0},
    "post-hoc noise 2": {"encoder": "autoencoder", "latent-dim": 32,
                         "dp-noise-multiplier": 2.0},
    "prediction, label epsilon 2": {"encoder": "prediction", "label-dp-epsilon": 2.0},
    "prediction, label epsilon 1": {"encoder": "prediction", "label-dp-epsilon": 1.0},
    "k-same 5": {"encoder": "autoencoder", "release-mode": "k-same", "k-same-k": 5},
    "k-same 20": {"encoder": "autoencoder", "release-mode": "k-same", "k-same-k": 20},
    "cvae": {"encoder": "autoencoder", "release-mode": "cvae"},
}
# Mechanisms drawn as one line in the chart: one knob turned over several points.
FAMILIES = {"post-hoc Gaussian noise": ["autoencoder 32 (today's default)",
                                        "post-hoc noise 0.5", "post-hoc noise 1",
                                        "post-hoc noise 2"]}
# Mechanisms whose server model only fits one task.
REGRESSION_ONLY = frozenset({"prediction, ridge combiner"})
DATASETS = {"ames": ("xgboost", "r2"), "digits": ("logistic", "accuracy"),
            "titanic": ("xgboost", "accuracy"), "breast-cancer": ("xgboost", "accuracy")}


def _child(config: dict, queue: multiprocessing.Queue) -> None:
    from vfl_embed.testing.in_process import run_in_process

    queue.put(str(run_in_process(config, 3)))


def run_point(dataset: str, keys: dict, seed: int, out: Path, leak: float) -> dict:
    """Run one point in a fresh process; return its metric and attack figures."""
    model, metric = DATASETS[dataset]
    config = {"dataset": dataset, "model": model, "peer-coverage": 1.0, "seed": seed,
              "audit-leak-fraction": leak, "results-dir": str(out / "runs")} | keys
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(config, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"{dataset} {keys} seed {seed}: the run failed")
    report = json.loads(Path(queue.get()).read_text())
    privacy = report["privacy"]
    return {
        "value": report["held_out_metrics"][metric],
        "attack": max(f.get("attack_r2", float("nan")) for f in privacy.values()),
        "attack_worst": max(f.get("attack_r2_worst", float("nan"))
                            for f in privacy.values()),
    }


def label_floor(dataset: str, seed: int, leak: float) -> dict[str, float]:
    """Return the strongest peer's attack figures when its release is the label itself.

    In simulation the script holds every column and the labels, so it runs
    the audit's own :func:`~vfl_embed.privacy.audit.label_floor` on each of
    the 3 peers' encoded columns (full coverage) and keeps the strongest.
    """
    from vfl_embed.data.datasets import ID_COLUMN, load_dataset, vertical_split
    from vfl_embed.peer.preprocessing import Preprocessor
    from vfl_embed.privacy.audit import encoding_layout
    from vfl_embed.privacy.audit import label_floor as floor_of

    data = load_dataset(dataset)
    labels = data.labels.set_index(ID_COLUMN)[data.target]
    floors = []
    for peer in range(3):
        frame = vertical_split(data, 3, peer, coverage=1.0, seed=seed)
        features = frame.drop(columns=ID_COLUMN)
        pre = Preprocessor(peer=f"peer-{peer}").fit(features)
        label = labels.loc[frame[ID_COLUMN]].to_numpy()
        floors.append(floor_of(pre.transform(features), label,
                               categorical=data.task == "classification",
                               leak_fraction=leak, seed=seed, **encoding_layout(pre)))
    return max(floors, key=lambda f: f["floor_label_r2"])


def summary(values: list[float]) -> dict:
    """Mean, sample standard deviation and range of the seeds' values."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": spread, "min": min(values),
            "max": max(values)}


def markdown(rows: list[dict], leak: float, seeds: int) -> str:
    """One table per dataset: mechanism, metric, gap to S0, attacks (mean ± std)."""
    parts = [f"# Privacy frontier\n\n3 peers, full coverage, {seeds} seeds per point; "
             f"attack: the strongest peer's reconstruction R² with {leak:.0%} of its "
             "rows leaked (mean over columns, and its worst column)."]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        own = [r for r in rows if r["dataset"] == dataset]
        metric = DATASETS[dataset][1]
        floor = own[0]["floor"]
        parts.append(f"\n## {dataset}\n\nLabel floor (the strongest peer's attack when it "
                     f"releases the label itself): {floor['mean']:.3f} ± {floor['std']:.3f}; "
                     f"worst column {own[0]['floor_worst']['mean']:.3f}.\n\n"
                     f"| mechanism | {metric} | gap to S0 | attack R² | "
                     "worst-column attack R² |\n|---|---:|---:|---:|---:|")
        for row in own:
            cells = [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}"
                     for k in ("value", "gap", "attack", "attack_worst")]
            parts.append(f"| {row['mechanism']} | " + " | ".join(cells) + " |")
        parts.extend(dominance(own))
    return "\n".join(parts) + "\n"


def dominance(rows: list[dict]) -> list[str]:
    """Say, for each post-hoc noise point, which other mechanism beats it.

    A point is beaten by one whose mean attack is no higher and whose mean
    gap to S0 is lower: at that attack level the other frontier lies above.
    """
    noise = [r for r in rows if r["mechanism"] in FAMILIES["post-hoc Gaussian noise"]]
    others = [r for r in rows if r not in noise and r["mechanism"] != "raw columns (S0)"]
    lines = []
    for point in noise:
        better = [r for r in others if r["attack"]["mean"] <= point["attack"]["mean"]
                  and r["gap"]["mean"] < point["gap"]["mean"]]
        best = min(better, key=lambda r: r["gap"]["mean"], default=None)
        verdict = (f"beaten by {best['mechanism']} (gap {best['gap']['mean']:.4f}, attack "
                   f"{best['attack']['mean']:.3f})" if best else "**not beaten**")
        lines.append(f"- {point['mechanism']} (gap {point['gap']['mean']:.4f}, attack "
                     f"{point['attack']['mean']:.3f}): {verdict}.")
    return ["\nDominance over post-hoc noise (mean attack no higher, mean gap lower):\n",
            *lines] if lines else []


def draw(rows: list[dict], out: Path) -> list[Path]:
    """Write ``frontier-<dataset>.png`` for each dataset of ``rows``."""
    from vfl_embed.report.charts import frontier_figure

    paths = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        path = out / f"frontier-{dataset}.png"
        frontier_figure([r for r in rows if r["dataset"] == dataset], FAMILIES).savefig(
            path, dpi=100)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Run the frontier for the datasets asked for; write JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    parser.add_argument("--mechanism", action="append", choices=list(MECHANISMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--leak", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path("results/simulations"))
    args = parser.parse_args(argv)
    mechanisms = args.mechanism or list(MECHANISMS)
    if "raw columns (S0)" not in mechanisms:
        mechanisms.insert(0, "raw columns (S0)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.dataset or ["ames"]:
        points = {}
        for name in mechanisms:
            if name in REGRESSION_ONLY and DATASETS[dataset][1] != "r2":
                continue
            points[name] = []
            for seed in range(args.seeds):
                started = time.perf_counter()
                point = run_point(dataset, MECHANISMS[name], seed, args.out, args.leak)
                points[name].append(point)
                print(f"[frontier] {dataset} {name} seed {seed}: value {point['value']:.4f}"
                      f", attack {point['attack']:.3f}, worst {point['attack_worst']:.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
        floors = [label_floor(dataset, seed, args.leak) for seed in range(args.seeds)]
        print(f"[frontier] {dataset} label floor: "
              f"{statistics.fmean(f['floor_label_r2'] for f in floors):.3f}", flush=True)
        reference = [p["value"] for p in points["raw columns (S0)"]]
        for name, runs in points.items():
            rows.append({"dataset": dataset, "mechanism": name, "config": MECHANISMS[name],
                         "seeds": [p | {"seed": s} for s, p in enumerate(runs)],
                         "value": summary([p["value"] for p in runs]),
                         "gap": summary([r - p["value"] for r, p in zip(reference, runs,
                                                                         strict=True)]),
                         "attack": summary([p["attack"] for p in runs]),
                         "attack_worst": summary([p["attack_worst"] for p in runs]),
                         "floor": summary([f["floor_label_r2"] for f in floors]),
                         "floor_worst": summary([f["floor_label_r2_worst"] for f in floors])})
        (args.out / "frontier.json").write_text(json.dumps(rows, indent=1))
        (args.out / "frontier.md").write_text(markdown(rows, args.leak, args.seeds))
        draw(rows, args.out)
    print(f"frontier: {args.out / 'frontier.md'}")


if __name__ == "__main__":
    sys.exit(main())
