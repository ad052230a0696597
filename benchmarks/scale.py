r"""Scale: the whole app on synthetic vertical tables of growing size.

For every shape ``PEERSxENTITIESxCOLUMNS`` (columns per peer) this writes a
seeded synthetic table (:class:`vfl_embed.data.synthetic.SyntheticVerticalTable`;
peer 0's file holds the target, which needs the columns of several peers)
and runs it through the real Flower simulation (``vfl_embed.simulate``,
label from peer 0, privacy audit off). It reports the wall time of the
``flwr run`` and of each phase the server times (align, fit-embed, learn),
the array bytes of every message each way (from the peers' message log),
the peak resident memory of the largest process (polled from ``/proc``, so
Linux only) and the held-out metric.

    python benchmarks/scale.py                                # 3x100000x20
    python benchmarks/scale.py --shape 3x100000x20 --shape 8x100000x20

writes ``scale.json`` and ``scale.md`` under ``--out`` (default
``results/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from run_settings import MB, config_pairs, machine
from split_vs_oneshot import SimulationRunner, run_oneshot

from vfl_embed.data.synthetic import SyntheticVerticalTable

_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
GIB = 2**30


class PeakMemory:
    """Poll ``/proc`` for the largest peak resident set (VmHWM) of any process.

    Every process of a local simulation (SuperLink, ServerApp, Ray workers)
    is a child of this one or of a daemon it started, so the benchmark
    watches all processes but itself and keeps the largest peak seen.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self.peak_process = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        own = str(os.getpid())
        while not self._stop.wait(self.interval):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                if pid != own:
                    self._read(pid)

    def _read(self, pid: str) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # the process ended between listing and reading
            return
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match and int(match[1]) * 1024 > self.peak_bytes:
            self.peak_bytes = int(match[1]) * 1024
            self.peak_process = command.replace(b"\0", b" ").decode(errors="replace")[:80]


def parse_shape(text: str) -> tuple[int, int, int]:
    """Parse ``PEERSxENTITIESxCOLUMNS`` (e.g. ``3x100000x20``)."""
    match = _SHAPE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"shape {text!r} is not PEERSxENTITIESxCOLUMNS, e.g. 3x100000x20")
    return int(match[1]), int(match[2]), int(match[3])


def synthetic_run_config(paths: list[Path]) -> dict:
    """Return the run config of a synthetic table's peer files: label at peer 0, no audit."""
    return {"dataset": "", "data-paths": ";".join(map(str, paths)),
            "label-source": "peer", "target": "target", "audit": False}


def run_shape(shape: tuple[int, int, int], config: dict, out: Path,
              cpus_per_peer: int | None = 1) -> dict:
    """Write the synthetic table of ``shape`` and run the app on it; return one row."""
    peers, entities, columns = shape
    table = SyntheticVerticalTable(peers, entities, columns_per_peer=columns)
    with tempfile.TemporaryDirectory(prefix="vfl-scale-") as data_dir:
        started = time.perf_counter()
        paths = table.write(data_dir)
        generate = time.perf_counter() - started
        print(f"[scale] {peers}x{entities}x{columns}: tables written in {generate:.1f} s",
              flush=True)
        with PeakMemory() as memory:
            result = run_oneshot(SimulationRunner(peers, cpus_per_peer),
                                 synthetic_run_config(paths) | config, out / "runs")
    report = json.loads(Path(result["report"]).read_text())
    row = {
        "shape": f"{peers}x{entities}x{columns}", "peers": peers, "entities": entities,
        "columns_per_peer": columns, "generate_seconds": generate,
        "wall_seconds": result["wall_seconds"], "phase_seconds": report["seconds"],
        "bytes_up": result["bytes_up"], "bytes_down": result["bytes_down"],
        "messages": result["messages"], "peak_rss_bytes": memory.peak_bytes,
        "peak_rss_process": memory.peak_process, "metrics": result["metrics"],
        "entities_aligned": result["entities"]["aligned"], "report": result["report"],
    }
    print(f"[scale] {row['shape']}: {row['wall_seconds']:.0f} s, "
          f"{row['bytes_up'] / MB:.1f} MB up, peak {memory.peak_bytes / GIB:.2f} GiB, "
          f"{result['metrics']}", flush=True)
    return row


def markdown(rows: list[dict], machine: dict) -> str:
    """Return one table row per shape."""
    lines = ["# Scale: synthetic vertical tables through the Flower simulation\n",
             f"Machine: {machine['cpus']} CPUs, Python {machine['python']}. Times in "
             "seconds; MB of array data; peak resident memory of the largest process.\n",
             "| peers x entities x columns | flwr run | align | fit-embed | learn | "
             "MB up | MB down | peak GiB | aligned | held-out r2 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        phases = r["phase_seconds"]
        lines.append(
            f"| {r['shape']} | {r['wall_seconds']:.0f} | {phases.get('align', 0):.0f} | "
            f"{phases.get('fit-embed', 0):.0f} | {phases.get('learn', 0):.0f} | "
            f"{r['bytes_up'] / MB:.1f} | {r['bytes_down'] / MB:.1f} | "
            f"{r['peak_rss_bytes'] / GIB:.2f} | {r['entities_aligned']:,} | "
            f"{r['metrics'].get('r2', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the options, run every shape, write JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", type=parse_shape,
                        help="PEERSxENTITIESxCOLUMNS (repeatable; default 3x100000x20)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config override for every run (repeatable)")
    parser.add_argument("--cpus-per-peer", type=int, default=1,
                        help="cores Flower's simulation reserves per peer (default 1: "
                             "peers work side by side, as on their own hosts)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = config_pairs(args.config)
    rows = [run_shape(shape, config, args.out, args.cpus_per_peer)
            for shape in args.shape or [(3, 100_000, 20)]]
    this_machine = machine()
    (args.out / "scale.json").write_text(json.dumps(
        {"machine": this_machine, "config": config, "cpus_per_peer": args.cpus_per_peer,
         "rows": rows}, indent=2))
    (args.out / "scale.md").write_text(markdown(rows, this_machine))
    print(f"[scale] written to {args.out}")


if __name__ == "__main__":
    main()
