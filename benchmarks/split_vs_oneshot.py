r"""Iterative split learning against vfl_embed's one-shot latents, side by side.

Both are real ``flwr run``s on a local simulation federation with the same
peers, tables, entities and held-out split (built-in dataset, 3 peers,
``vertical_split`` with the same seed and coverage; keyed-hash alignment):

- split learning: the Flower App in ``benchmarks/split_learning`` (bottom MLP
  per peer, top MLP on the server, two exchanges per mini-batch);
- one-shot: ``vfl_embed.simulate`` (scenario S2: an autoencoder per peer,
  latents sent once, XGBoost on the server), with its privacy audit off
  (``--oneshot-config audit=true`` puts it back).

Bytes are the array data of every message, measured on the messages
themselves: the split-learning server counts what it sends and receives; the
one-shot run's peers log every request and reply (``message-log-dir``).
A round is one ``send_and_receive`` exchange with one message per peer.

    python benchmarks/split_vs_oneshot.py                        # Ames, 3 peers
    python benchmarks/split_vs_oneshot.py --dataset digits --split-config epochs=20
    python benchmarks/split_vs_oneshot.py --name synthetic \
        --data-paths "data/s/peer-0.parquet;data/s/peer-1.parquet;data/s/peer-2.parquet" \
        --label-source peer --target target     # peer-0's file holds the label

writes ``split_vs_oneshot-<name>.json`` and ``.md`` under ``--out`` (default
``results/benchmarks``), each run's report under ``<out>/runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from vfl_embed import simulate
from vfl_embed.local_federation import LocalFederation
from vfl_embed.message_log import read_message_log
from vfl_embed.scenarios import RunFailedError

SPLIT_APP = Path(__file__).resolve().parent / "split_learning"
MB = 1e6


def run_split(peers: int, config: dict, out: Path, cpus_per_peer: int | None = None) -> dict:
    """Run the split-learning app; return its report with the wall time of ``flwr run``."""
    started = time.perf_counter()
    with LocalFederation(app_dir=SPLIT_APP, cpus_per_peer=cpus_per_peer) as federation:
        run = federation.run(config | {"num-peers": peers, "results-dir": str(out)},
                             num_peers=peers, timeout=7200)
    seconds = time.perf_counter() - started
    if run.report_path is None or run.report.get("status") != "completed":
        raise RunFailedError(run)
    report = run.report
    totals = report["totals"]
    return {
        "approach": "split learning", "metrics": report["held_out_metrics"],
        "task": report["task"], "wall_seconds": seconds,
        "app_seconds": report["seconds"]["total"], "rounds": totals["rounds"],
        "messages": totals["messages"], "bytes_up": totals["payload_up"],
        "bytes_down": totals["payload_down"], "wire_bytes_up": totals["wire_up"],
        "wire_bytes_down": totals["wire_down"],
        "entities": report["entities"], "details": {
            "epochs_run": report["epochs_run"], "best_epoch": report["best_epoch"],
            "steps_per_epoch": report["steps_per_epoch"],
            "traffic": report["traffic"], "peers": report["peers"]},
        "report": str(run.report_path),
    }


def run_oneshot(dataset: str, peers: int, config: dict, out: Path,
                cpus_per_peer: int | None = None) -> dict:
    """Run ``vfl_embed.simulate``; return its report with bytes from the peers' message log."""
    with tempfile.TemporaryDirectory(prefix="vfl-message-log-") as log_dir:
        started = time.perf_counter()
        report = simulate(dataset, peers, results_dir=out, cpus_per_peer=cpus_per_peer,
                          config=config | {"num-peers": peers, "message-log-dir": log_dir})
        seconds = time.perf_counter() - started
        received = read_message_log(log_dir, "received")
        sent = read_message_log(log_dir, "sent")
    per_peer = {}
    for message in received:
        per_peer[message["peer"]] = per_peer.get(message["peer"], 0) + 1
    entities = report.entities
    return {
        "approach": "one-shot latents", "metrics": report.metrics, "task": report.task,
        "wall_seconds": seconds, "app_seconds": float(sum(report.seconds.values())),
        "rounds": max(per_peer.values()), "messages": len(received) + len(sent),
        "bytes_up": _array_bytes(sent), "bytes_down": _array_bytes(received),
        "entities": {"aligned": entities.get("aligned"), "train": entities.get("train"),
                     "held_out": entities.get("held_out")},
        "details": {"model": report.raw.get("model"), "by_message_type": {
            kind: {"up": _array_bytes([m for m in sent if m["message_type"] == kind]),
                   "down": _array_bytes([m for m in received if m["message_type"] == kind])}
            for kind in sorted({m["message_type"] for m in received})}},
        "report": str(report.path / "report.json"),
    }


def _array_bytes(messages: list) -> int:
    return sum(int(np.asarray(a).nbytes) for m in messages for a in m["arrays"].values())


def markdown(result: dict) -> str:
    """Return the side-by-side table and the settings as Markdown."""
    split, oneshot = result["split"], result["oneshot"]
    rows = [(f"held-out {k}", f"{split['metrics'][k]:.4f}",
             f"{oneshot['metrics'].get(k, float('nan')):.4f}") for k in split["metrics"]]
    rows += [
        ("wall time, whole `flwr run` (s)", f"{split['wall_seconds']:.1f}",
         f"{oneshot['wall_seconds']:.1f}"),
        ("time inside the ServerApp (s)", f"{split['app_seconds']:.1f}",
         f"{oneshot['app_seconds']:.1f}"),
        ("rounds (message exchanges)", str(split["rounds"]), str(oneshot["rounds"])),
        ("messages (requests + replies)", str(split["messages"]), str(oneshot["messages"])),
        ("MB up (peers -> server, array data)", f"{split['bytes_up'] / MB:.3f}",
         f"{oneshot['bytes_up'] / MB:.3f}"),
        ("MB down (server -> peers, array data)", f"{split['bytes_down'] / MB:.3f}",
         f"{oneshot['bytes_down'] / MB:.3f}"),
        ("aligned / held-out entities",
         f"{split['entities']['aligned']} / {split['entities']['held_out']}",
         f"{oneshot['entities']['aligned']} / {oneshot['entities']['held_out']}"),
    ]
    details = split["details"]
    lines = [
        f"# Split learning vs one-shot latents: {result['name']}, {result['peers']} peers",
        "",
        "| | split learning | one-shot latents |", "|---|---:|---:|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        f"Split learning: {details['epochs_run']} epochs of {details['steps_per_epoch']} "
        f"mini-batches (best epoch {details['best_epoch'] + 1}); Flower's serialized "
        f"messages: {split['wire_bytes_up'] / MB:.3f} MB up, "
        f"{split['wire_bytes_down'] / MB:.3f} MB down. One-shot: "
        f"{oneshot['details']['model']} on the joined latents.",
        "",
        f"Split-learning config: `{json.dumps(result['split_config'])}`  ",
        f"One-shot config: `{json.dumps(result['oneshot_config'])}`  ",
        f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}.",
    ]
    return "\n".join(lines) + "\n"


def config_pairs(pairs: list[str]) -> dict:
    """Parse ``KEY=VALUE`` pairs: TOML values (``epochs=20``), else text (``model=mlp``)."""
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got '{pair}'")
        try:
            config[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            config[key.strip()] = value
    return config


def main() -> None:
    """Command line: ``python benchmarks/split_vs_oneshot.py --help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ames")
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--name", default="", help="result file suffix (default: dataset)")
    parser.add_argument("--data-paths", default="", help="';'-separated peer files")
    parser.add_argument("--label-path", default="")
    parser.add_argument("--target", default="")
    parser.add_argument("--label-source", choices=("server", "peer"), default="server",
                        help="'peer': the peer file holding --target sends the labels")
    parser.add_argument("--split-config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--oneshot-config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cpus-per-peer", type=int, default=1,
                        help="cores Flower's simulation reserves per peer (default 1: "
                             "peers work side by side, as on their own hosts)")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    out = Path(args.out).expanduser().resolve()
    name = args.name or ("custom" if args.data_paths else args.dataset)
    data = {"seed": args.seed, "label-source": args.label_source}
    if args.data_paths:
        # Absolute: the peers and the server do not run in this directory.
        paths = [str(Path(p.strip()).resolve()) for p in args.data_paths.split(";")]
        data |= {"data-paths": ";".join(paths), "target": args.target,
                 "label-path": str(Path(args.label_path).resolve()) if args.label_path else ""}
    else:
        data["dataset"] = args.dataset
    split_config = data | config_pairs(args.split_config)
    oneshot_config = data | {"audit": False} | config_pairs(args.oneshot_config)
    oneshot_config.pop("dataset", None)  # simulate's own argument

    print(f"[bench] split learning on {name}, {args.peers} peers ...", flush=True)
    split = run_split(args.peers, split_config, out / "runs", args.cpus_per_peer)
    print(f"[bench] split learning: {split['metrics']} in {split['wall_seconds']:.0f} s, "
          f"{split['rounds']} rounds", flush=True)
    print(f"[bench] one-shot latents on {name}, {args.peers} peers ...", flush=True)
    oneshot = run_oneshot(args.dataset, args.peers, oneshot_config, out / "runs",
                          args.cpus_per_peer)
    print(f"[bench] one-shot: {oneshot['metrics']} in {oneshot['wall_seconds']:.0f} s, "
          f"{oneshot['rounds']} rounds", flush=True)

    result = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "name": name,
        "peers": args.peers, "cpus_per_peer": args.cpus_per_peer,
        "split": split, "oneshot": oneshot,
        "split_config": split_config, "oneshot_config": oneshot_config,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"split_vs_oneshot-{name}.json"
    json_path.write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (out / f"split_vs_oneshot-{name}.md").write_text(text)
    print(text)
    print(f"[bench] wrote {json_path} and {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
