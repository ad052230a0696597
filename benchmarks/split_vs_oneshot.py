r"""Iterative split learning against vfl_embed's one-shot latents, side by side.

Both are real ``flwr run``s with the same peers, tables, entities and
held-out split (built-in dataset, 3 peers, ``vertical_split`` with the same
seed and coverage; keyed-hash alignment), on a local simulation federation
or, with ``--engine deployment`` (root), on Flower's Deployment Engine: a
SuperLink and a SuperNode per peer, each on a network host of its own
(:mod:`vfl_embed.testing.host_deployment`), peer-0 holding the label column.

- split learning: the Flower App in ``benchmarks/split_learning`` (bottom MLP
  per peer, top MLP on the server, two exchanges per mini-batch);
- one-shot: vfl_embed's app with its defaults (scenario S2: an autoencoder
  per peer, latents sent once, XGBoost on the server), with its privacy
  audit off (``--oneshot-config audit=true`` puts it back).

Bytes are the array data of every message, measured on the messages
themselves: the split-learning server counts what it sends and receives; the
one-shot run's peers log every request and reply (``message-log-dir``).
A round is one ``send_and_receive`` exchange with one message per peer.

Equal metric: split learning scores the held-out entities after every epoch
too (``held-out-curve``; that scoring's time and bytes are left out of every
figure). The first epoch whose held-out metric (r2, or accuracy) comes within
``--tolerance`` of the one-shot's gives split learning's time and bytes at
equal metric: Flower's start-up and shutdown plus the ServerApp's time up to
that epoch. Picking that epoch needs hindsight of the held-out entities, which
a real run does not have, so the figure flatters split learning.

    python benchmarks/split_vs_oneshot.py                        # Ames, 3 peers
    python benchmarks/split_vs_oneshot.py --dataset digits --split-config epochs=20
    python benchmarks/split_vs_oneshot.py --name synthetic \
        --data-paths "data/s/peer-0.parquet;data/s/peer-1.parquet;data/s/peer-2.parquet" \
        --label-source peer --target target     # peer-0's file holds the label
    python benchmarks/split_vs_oneshot.py --engine deployment --split-config epochs=11

writes ``split_vs_oneshot-<name>[-deployment].json`` and ``.md`` under ``--out`` (default
``results/benchmarks``), each run's report under ``<out>/runs``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
from run_settings import MB, config_pairs, machine

from vfl_embed.data.datasets import load_dataset, write_peer_files
from vfl_embed.deploy import commands as deployment
from vfl_embed.deploy.flwr_commands import PROJECT_ROOT, LocalRun
from vfl_embed.errors import RunFailedError
from vfl_embed.peer.message_log import read_message_log
from vfl_embed.run.local_federation import LocalFederation
from vfl_embed.run.scenarios import run_completed
from vfl_embed.testing.host_deployment import HostDeployment
from vfl_embed.testing.host_network import HostNetwork, unavailable_reason

SPLIT_APP = Path(__file__).resolve().parent / "split_learning"
DEMO_SECRET = "vfl-embed-demo-secret"  # both apps' default alignment-secret
# The one-shot runs skip the audit (it is not what is compared), which a
# deployed peer requires by default: the benchmark's peers lift that limit.
ONESHOT_POLICY = {"require-audit": False}


class Runner(Protocol):
    """Runs an app (its folder, a run config) to completion on one Flower engine."""

    engine: str

    def __call__(self, app_dir: Path, config: dict) -> tuple[LocalRun, float]:
        """Return the completed run and the wall time of its ``flwr run``."""


class SimulationRunner:
    """Run a Flower App on a fresh local simulation federation of ``peers`` SuperNodes.

    Parameters
    ----------
    peers : int
        Number of SuperNodes.
    cpus_per_peer : int | None (default: None)
        Cores Flower reserves per SuperNode; None keeps Flower's default.
    """

    engine = "simulation"

    def __init__(self, peers: int, cpus_per_peer: int | None = None) -> None:
        self.peers, self.cpus_per_peer = peers, cpus_per_peer

    def __call__(self, app_dir: Path, config: dict) -> tuple[LocalRun, float]:
        """Run the app to completion; return the run and the wall time of ``flwr run``."""
        started = time.perf_counter()
        with LocalFederation(app_dir=app_dir, cpus_per_peer=self.cpus_per_peer) as federation:
            run = run_completed(federation, config | {"num-peers": self.peers}, self.peers)
        return run, time.perf_counter() - started


def run_split(runner: Runner, config: dict, out: Path) -> dict:
    """Run the split-learning app; return its report with the wall time of ``flwr run``.

    Times leave out the held-out curve's scoring.
    """
    run, seconds = runner(SPLIT_APP, config | {"results-dir": str(out),
                                               "held-out-curve": True})
    report = run.report
    totals, curve_seconds = report["totals"], report["seconds"]["curve"]
    return {
        "approach": "split learning", "metrics": report["held_out_metrics"],
        "task": report["task"], "wall_seconds": seconds - curve_seconds,
        "app_seconds": report["seconds"]["total"] - curve_seconds,
        "rounds": totals["rounds"],
        "messages": totals["messages"], "bytes_up": totals["payload_up"],
        "bytes_down": totals["payload_down"], "wire_bytes_up": totals["wire_up"],
        "wire_bytes_down": totals["wire_down"],
        "entities": report["entities"], "details": {
            "epochs_run": report["epochs_run"], "best_epoch": report["best_epoch"],
            "steps_per_epoch": report["steps_per_epoch"], "curve_seconds": curve_seconds,
            "curve": report["history"], "traffic": report["traffic"],
            "peers": report["peers"]},
        "report": str(run.report_path),
    }


def run_oneshot(runner: Runner, config: dict, out: Path) -> dict:
    """Run vfl_embed's app; return its report with bytes from the peers' message log."""
    with tempfile.TemporaryDirectory(prefix="vfl-message-log-") as log_dir:
        run, seconds = runner(PROJECT_ROOT, config | {"results-dir": str(out),
                                                      "message-log-dir": log_dir})
        received = read_message_log(log_dir, "received")
        sent = read_message_log(log_dir, "sent")
    per_peer = {}
    for message in received:
        per_peer[message["peer"]] = per_peer.get(message["peer"], 0) + 1
    report = run.report
    entities = report["entities"]
    return {
        "approach": "one-shot latents", "metrics": report["held_out_metrics"],
        "task": report["task"], "wall_seconds": seconds,
        "app_seconds": float(sum(report["seconds"].values())),
        "rounds": max(per_peer.values()), "messages": len(received) + len(sent),
        "bytes_up": _array_bytes(sent), "bytes_down": _array_bytes(received),
        "entities": {"aligned": entities.get("aligned"), "train": entities.get("train"),
                     "held_out": entities.get("held_out")},
        "details": {"model": report.get("model"), "by_message_type": {
            kind: {"up": _array_bytes([m for m in sent if m["message_type"] == kind]),
                   "down": _array_bytes([m for m in received if m["message_type"] == kind])}
            for kind in sorted({m["message_type"] for m in received})}},
        "report": str(run.report_path),
    }


def equal_metric(split: dict, oneshot: dict, tolerance: float = 0.01) -> dict:
    """Split learning's time and bytes when it first came within ``tolerance`` of one-shot.

    The metric is r2 (regression) or accuracy (classification), higher is
    better. Returns the epoch (1-based, None if never), split learning's
    seconds and bytes (both ways) by then, their ratios to the one-shot run's,
    and by how much split learning's final metric beats the one-shot's. If it
    never came that close, its whole run's seconds and bytes are lower bounds
    (``time_ratio_at_least``, ``bytes_ratio_at_least``).
    """
    metric = "r2" if split["task"] == "regression" else "accuracy"
    goal = oneshot["metrics"][metric] - tolerance
    startup = split["wall_seconds"] - split["app_seconds"]
    oneshot_bytes = oneshot["bytes_up"] + oneshot["bytes_down"]
    result = {"metric": metric, "tolerance": tolerance, "goal": goal, "epoch": None,
              "split_better_by": split["metrics"][metric] - oneshot["metrics"][metric],
              "oneshot_seconds": oneshot["wall_seconds"], "oneshot_bytes": oneshot_bytes}
    for point in split["details"]["curve"]:
        if point["held_out_metrics"][metric] >= goal:
            seconds = startup + point["elapsed"]
            sent = point["payload_up"] + point["payload_down"]
            return result | {
                "epoch": point["epoch"] + 1, "split_metric": point["held_out_metrics"][metric],
                "split_seconds": seconds, "split_bytes": sent, "split_rounds": point["rounds"],
                "time_ratio": seconds / oneshot["wall_seconds"],
                "bytes_ratio": sent / oneshot_bytes}
    sent = split["bytes_up"] + split["bytes_down"]
    return result | {"split_seconds": split["wall_seconds"], "split_bytes": sent,
                     "split_rounds": split["rounds"],
                     "time_ratio_at_least": split["wall_seconds"] / oneshot["wall_seconds"],
                     "bytes_ratio_at_least": sent / oneshot_bytes}


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
        f"# Split learning vs one-shot latents: {result['name']}, {result['peers']} peers, "
        f"Flower {result['engine']}",
        "",
        "| | split learning | one-shot latents |", "|---|---:|---:|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        _equal_metric_text(result["equal_metric"]),
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


def _equal_metric_text(equal: dict) -> str:
    metric, better = equal["metric"], equal["split_better_by"]
    verdict = (f"At its best epoch split learning's held-out {metric} is "
               f"{'better' if better > 0 else 'worse'} than one-shot's by {abs(better):.4f}.")
    if equal["epoch"] is None:
        return (f"**At equal metric**: split learning never came within "
                f"{equal['tolerance']} of the one-shot's held-out {metric} "
                f"({equal['goal']:.4f} or better) in its {equal['split_rounds']} rounds "
                f"({equal['split_seconds']:.1f} s, {equal['split_bytes'] / MB:.2f} MB both "
                f"ways), so at equal metric it needs more than "
                f"{equal['time_ratio_at_least']:.1f}x the time and "
                f"{equal['bytes_ratio_at_least']:.1f}x the bytes of one-shot. {verdict}")
    return (
        f"**At equal metric**: split learning first came within {equal['tolerance']} of "
        f"the one-shot's held-out {metric} ({equal['split_metric']:.4f} >= "
        f"{equal['goal']:.4f}) after epoch {equal['epoch']}: "
        f"{equal['split_seconds']:.1f} s and {equal['split_bytes'] / MB:.2f} MB both ways "
        f"({equal['split_rounds']} rounds), against one-shot's "
        f"{equal['oneshot_seconds']:.1f} s and {equal['oneshot_bytes'] / MB:.2f} MB, "
        f"so split learning "
        f"needs {equal['time_ratio']:.2f}x the time and {equal['bytes_ratio']:.1f}x the "
        f"bytes of one-shot. {verdict}")


class DeploymentRunner:
    """Run a Flower App on a running :class:`HostDeployment` of ``peers`` SuperNodes.

    A deployed peer keeps a message log only where its node config says
    (``message_log``, the same folder for every peer); a run config's
    ``message-log-dir`` gets a copy of what the run logged there.
    """

    engine = "deployment"

    def __init__(self, federation: HostDeployment, peers: int, message_log: Path) -> None:
        self.federation, self.peers, self.message_log = federation, peers, message_log

    def __call__(self, app_dir: Path, config: dict) -> tuple[LocalRun, float]:
        """Run the app to completion; return the run and the wall time of ``flwr run``."""
        shutil.rmtree(self.message_log, ignore_errors=True)
        self.message_log.mkdir(parents=True)
        status, run = self.federation.run(app_dir, config | {"num-peers": self.peers},
                                          timeout=7200)
        if status != "finished:completed" or run.report_path is None:
            raise RunFailedError(run)
        if config.get("message-log-dir"):
            shutil.copytree(self.message_log, config["message-log-dir"], dirs_exist_ok=True)
        return run, run.seconds


@contextmanager
def deployed(paths: list[Path], label_column: str, root: Path) -> Iterator[DeploymentRunner]:
    """Run a deployment with a SuperNode per peer file, each on a host of its own.

    Hosts in 198.18.0.0/24: the SuperLink (.1), the operator (.2) and
    ``peer-<i>`` (.11, .12, ...), holding ``paths[i]``; peer-0's node config
    names ``label_column``. Needs root (``ip netns``).
    """
    if reason := unavailable_reason():
        raise SystemExit(f"--engine deployment: {reason}")
    # A terminated benchmark still removes its hosts and their processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    peers = [f"peer-{i}" for i in range(len(paths))]
    secret, message_log = root / "secret.txt", root / "message-log"
    secret.write_text(DEMO_SECRET + "\n")
    configs = {peer: deployment.node_config(path, peer, secret,
                                            label_column=label_column if i == 0 else "",
                                            message_log_dir=message_log,
                                            policy=ONESHOT_POLICY)
               for i, (peer, path) in enumerate(zip(peers, paths, strict=True))}
    hosts = {"superlink": 1, "operator": 2} | {peer: 11 + i for i, peer in enumerate(peers)}
    with HostNetwork(hosts) as network:
        federation = HostDeployment(network, root, peers)
        federation.start_federation(configs)
        yield DeploymentRunner(federation, len(peers), message_log)


def compare(runner: Runner, name: str, split_config: dict, oneshot_config: dict,
            out: Path, tolerance: float) -> dict:
    """Run split learning, then one-shot latents; return both and their equal-metric costs."""
    print(f"[bench] split learning on {name} ({runner.engine}) ...", flush=True)
    split = run_split(runner, split_config, out / "runs")
    print(f"[bench] split learning: {split['metrics']} in {split['wall_seconds']:.0f} s, "
          f"{split['rounds']} rounds", flush=True)
    print(f"[bench] one-shot latents on {name} ({runner.engine}) ...", flush=True)
    oneshot = run_oneshot(runner, oneshot_config, out / "runs")
    print(f"[bench] one-shot: {oneshot['metrics']} in {oneshot['wall_seconds']:.0f} s, "
          f"{oneshot['rounds']} rounds", flush=True)
    return {"engine": runner.engine, "split": split, "oneshot": oneshot,
            "equal_metric": equal_metric(split, oneshot, tolerance)}


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
    parser.add_argument("--engine", choices=("simulation", "deployment"),
                        default="simulation",
                        help="'deployment': Flower's Deployment Engine, the SuperLink and "
                             "each peer's SuperNode on a network host of its own (root)")
    parser.add_argument("--cpus-per-peer", type=int, default=1,
                        help="cores Flower's simulation reserves per peer (default 1: "
                             "peers work side by side, as on their own hosts)")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="metric gap that counts as equal (default 0.01)")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    out = Path(args.out).expanduser().resolve()
    name = args.name or ("custom" if args.data_paths else args.dataset)
    # Absolute: the peers and the server do not run in this directory.
    paths = [Path(p.strip()).resolve() for p in args.data_paths.split(";") if p.strip()]
    data = {"seed": args.seed, "label-source": args.label_source}
    if args.engine == "deployment":
        # Peers read their files from their node config; peer-0's holds the label.
        if args.label_path:
            raise SystemExit("--engine deployment: the label must be a column of the "
                             "first peer file (--target), not --label-path")
        name += "-deployment"
        data |= {"label-source": "peer", "target": args.target}
    elif paths:
        data |= {"data-paths": ";".join(map(str, paths)), "target": args.target,
                 "label-path": str(Path(args.label_path).resolve()) if args.label_path else ""}
    else:
        data["dataset"] = args.dataset
    split_config = data | config_pairs(args.split_config)
    oneshot_config = data | {"audit": False} | config_pairs(args.oneshot_config)

    settings = (split_config, oneshot_config, out, args.tolerance)
    if args.engine == "simulation":
        result = compare(SimulationRunner(args.peers, args.cpus_per_peer), name, *settings)
    else:
        with tempfile.TemporaryDirectory(prefix="vfl-deployment-") as root:
            if not paths:
                dataset = load_dataset(args.dataset)
                paths = write_peer_files(args.dataset, [f"peer-{i}" for i in range(
                    args.peers)], Path(root) / "data", seed=args.seed)
                split_config["target"] = oneshot_config["target"] = dataset.target
            with deployed(paths, split_config["target"], Path(root)) as runner:
                result = compare(runner, name, *settings)
    result = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "name": name,
        "peers": args.peers, "cpus_per_peer": args.cpus_per_peer, **result,
        "split_config": split_config, "oneshot_config": oneshot_config,
        "machine": machine(),
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
