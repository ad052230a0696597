r"""Federation overhead: the same run through Flower's simulation and in one process.

For a synthetic vertical table of shape ``PEERSxENTITIESxCOLUMNS`` (see
``scale.py``) this runs the app twice with the same run config, data and
seed, and reports the ratio of their wall times:

- Flower: ``flwr run`` on a local simulation federation (SuperLink,
  simulation engine, Ray actors, gRPC), with Flower's default of 2 cores
  per SuperNode, so on this 2-core machine one peer works at a time;
- in process: :func:`vfl_embed.testing.in_process.run_in_process` in a fresh Python
  process (the ServerApp's ``main`` and the peers' ClientApp, messages
  serialized as on the wire, peers one after another).

Each wall time runs from starting the command or process to its end, so it
includes Python's and TensorFlow's start-up on both sides. The two runs must
reach the same held-out metrics; the benchmark says if they do not.

    python benchmarks/federation_overhead.py                 # 3x100000x20
    python benchmarks/federation_overhead.py --shape 3x10000x20 --repeat 3

writes ``federation_overhead.json`` and ``.md`` under ``--out`` (default
``results/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from run_settings import config_pairs, machine
from scale import parse_shape, synthetic_run_config

from vfl_embed.data.synthetic import SyntheticVerticalTable
from vfl_embed.run.local_federation import LocalFederation
from vfl_embed.run.scenarios import run_completed


def _in_process_child(config: dict, peers: int, queue: multiprocessing.Queue) -> None:
    from vfl_embed.testing.in_process import run_in_process

    queue.put(str(run_in_process(config, peers)))


def run_in_fresh_process(config: dict, peers: int) -> tuple[float, dict]:
    """Run the app in one new process; return its wall time and report."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    started = time.perf_counter()
    child = context.Process(target=_in_process_child, args=(config, peers, queue))
    child.start()
    report_path = queue.get()
    child.join()
    seconds = time.perf_counter() - started
    if child.exitcode != 0:
        raise RuntimeError(f"the in-process run ended with exit code {child.exitcode}")
    return seconds, json.loads(Path(report_path).read_text())


def run_with_flower(config: dict, peers: int) -> tuple[float, dict]:
    """Run the app through ``flwr run``; return its wall time and report."""
    with LocalFederation() as federation:
        run = run_completed(federation, config, peers)
    return run.seconds, run.report


def measure(shape: tuple[int, int, int], config: dict, out: Path, repeat: int) -> dict:
    """Write the table of ``shape``, run both ways ``repeat`` times; return the figures."""
    peers, entities, columns = shape
    table = SyntheticVerticalTable(peers, entities, columns_per_peer=columns)
    runs: dict[str, list] = {"flower": [], "in_process": []}
    with tempfile.TemporaryDirectory(prefix="vfl-overhead-") as data_dir:
        paths = table.write(data_dir)
        config = synthetic_run_config(paths) | {
            "num-peers": peers, "results-dir": str(out / "runs")} | config
        for attempt in range(repeat):
            for name, runner in (("in_process", run_in_fresh_process),
                                 ("flower", run_with_flower)):
                seconds, report = runner(config, peers)
                runs[name].append({"wall_seconds": seconds, "phase_seconds": report["seconds"],
                                   "metrics": report["held_out_metrics"]})
                print(f"[overhead] {name} run {attempt + 1}: {seconds:.1f} s, "
                      f"{report['held_out_metrics']}", flush=True)
    flower = statistics.median(r["wall_seconds"] for r in runs["flower"])
    in_process = statistics.median(r["wall_seconds"] for r in runs["in_process"])
    return {
        "shape": f"{peers}x{entities}x{columns}", "repeat": repeat,
        "flower_seconds": flower, "in_process_seconds": in_process,
        "ratio": flower / in_process,
        "same_metrics": all(r["metrics"] == runs["flower"][0]["metrics"]
                            for r in runs["flower"] + runs["in_process"]),
        "runs": runs, "config": {k: v for k, v in config.items() if k != "data-paths"},
    }


def markdown(result: dict, machine: dict) -> str:
    """Return the figures as a Markdown table."""
    flower, in_process = result["runs"]["flower"][0], result["runs"]["in_process"][0]
    phases = sorted(set(flower["phase_seconds"]) | set(in_process["phase_seconds"]))
    lines = [f"# Federation overhead, {result['shape']} (median of {result['repeat']})\n",
             f"Machine: {machine['cpus']} CPUs, Python {machine['python']}. Seconds.\n",
             "| | Flower simulation | in one process |", "|---|---:|---:|",
             f"| wall time | {result['flower_seconds']:.1f} | "
             f"{result['in_process_seconds']:.1f} |"]
    lines += [f"| {phase} (first run) | {flower['phase_seconds'].get(phase, 0):.1f} | "
              f"{in_process['phase_seconds'].get(phase, 0):.1f} |" for phase in phases]
    lines += ["", f"Ratio (Flower / in process): **{result['ratio']:.2f}**. "
              f"Same held-out metrics: {'yes' if result['same_metrics'] else 'NO'} "
              f"({flower['metrics']})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the options, run both ways, write JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shape, default=(3, 100_000, 20),
                        help="PEERSxENTITIESxCOLUMNS (default 3x100000x20)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config override (repeatable)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each kind; the median wall time counts")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args()
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = measure(args.shape, config_pairs(args.config), out, args.repeat)
    this_machine = machine()
    (out / "federation_overhead.json").write_text(
        json.dumps({"machine": this_machine} | result, indent=2))
    text = markdown(result, this_machine)
    (out / "federation_overhead.md").write_text(text)
    print(text)
    print(f"[overhead] written to {out}")


if __name__ == "__main__":
    main()
