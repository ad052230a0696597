"""Alignment cost: plain, keyed-hash and private set intersection, in one process.

Every peer holds a different seeded random share (``--coverage``, default
90 %) of a universe of IDs, in random row order. For each size and mode the
whole alignment runs here: every peer's pseudonyms (for PSI the ring's
rounds too, peers one after the other, each on ``--workers`` threads) and
the server's ``intersect()``. A deployment runs the peers in parallel, on
their own machines; the time here is the sum of their work.

    python benchmarks/alignment.py --peers 3 --ids 100000 1000000

writes ``alignment.json`` and ``alignment.md`` under ``--out`` (default
``results/benchmarks``), with per-operation speeds and the machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from vfl_embed.wire.alignment import KeyedHashAlignment, PlainAlignment, intersect
from vfl_embed.wire.psi import PsiAlignment, PsiKey, blind, hash_to_group, reference_protocol

MODES = ("plain", "keyed-hash", "psi")
TEST_FRACTION, SPLIT_SEED = 0.2, 42
_STARTED = time.perf_counter()


def say(text: str) -> None:
    """Print a progress line with the time since the start."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {text}", flush=True)


def peer_ids(n_peers: int, n_ids: int, coverage: float, seed: int) -> list[list[str]]:
    """Each peer's IDs: a seeded random ``coverage`` share of one universe, shuffled."""
    universe = math.ceil(n_ids / coverage)
    rng = np.random.default_rng(seed)
    return [[f"customer-{k:010d}" for k in rng.choice(universe, size=n_ids, replace=False)]
            for _ in range(n_peers)]


def align(mode: str, id_lists: list[list[str]], workers: int) -> dict:
    """Run one mode's whole alignment; return its timings, counts and plan."""
    names = [f"peer-{i}" for i in range(len(id_lists))]
    total = sum(len(ids) for ids in id_lists)
    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "psi":
        keys = [PsiKey.derive(f"benchmark secret of {name}", b"benchmark") for name in names]
        ring = reference_protocol(id_lists, keys, workers=workers,
                                  progress=lambda line: say(f"  psi {line}"))
        values, pseudonymize, ring_seconds = ring.final, ring.seconds[0], sum(ring.seconds[1:])
        counts = {"hashes": ring.hashes, "blindings": ring.blindings,
                  "bytes_to_server": ring.bytes_to_server,
                  "bytes_to_peers": ring.bytes_to_peers}
    else:
        alignment = (PlainAlignment() if mode == "plain"
                     else KeyedHashAlignment("benchmark secret the peers share"))
        values = [alignment.pseudonymize(ids) for ids in id_lists]
        pseudonymize, ring_seconds = time.perf_counter() - started, 0.0
        counts = {"hashes": total, "blindings": 0, "bytes_to_server": total * 32,
                  "bytes_to_peers": 0}
    say(f"  {mode}: the server intersects")
    before = time.perf_counter()
    plan = intersect(dict(zip(names, values, strict=True)), TEST_FRACTION, SPLIT_SEED)
    done = time.perf_counter()
    return {"mode": mode, "peers": len(id_lists), "ids_per_peer": len(id_lists[0]),
            "load_average_after": round(os.getloadavg()[0], 2),
            "pseudonymize_s": pseudonymize, "ring_s": ring_seconds,
            "intersect_s": done - before, "total_s": done - started,
            "cpu_s": time.process_time() - cpu_started, **counts,
            "rounds": len(id_lists) if mode == "psi" else 1,
            "intersection": len(plan), "plan": plan}


def same_rows(plan, reference) -> bool:
    """Whether two plans align the same rows of every peer (orders differ by mode)."""
    return all(np.array_equal(np.sort(plan.positions[p]), np.sort(reference.positions[p]))
               for p in reference.positions)


def micro(rows: int) -> dict:
    """Per-item speed of each operation, on one thread and on every CPU."""
    ids = [f"customer-{k:010d}" for k in range(rows)]
    key, cpus = PsiKey.derive(b"micro", b"benchmark"), _cpus()
    points = hash_to_group(ids)
    warm_until = time.perf_counter() + 3.0  # this VM gives full speed after a few seconds
    while time.perf_counter() < warm_until:
        blind(points, key)

    def per_item(fn) -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) / rows * 1e6

    def cpu_per_item(fn) -> float:
        started = time.process_time()
        fn()
        return (time.process_time() - started) / rows * 1e6

    result = {"rows": rows, "cpus": cpus,
              "plain_us": per_item(lambda: PlainAlignment().pseudonymize(ids)),
              "keyed_hash_us": per_item(lambda: KeyedHashAlignment("s").pseudonymize(ids))}
    for name, fn in (("hash_to_group", lambda w: hash_to_group(ids, workers=w)),
                     ("blind", lambda w: blind(points, key, workers=w)),
                     ("psi_pseudonymize",
                      lambda w: PsiAlignment(key, workers=w).pseudonymize(ids))):
        one = per_item(lambda fn=fn: fn(1))
        every = per_item(lambda fn=fn: fn(0))
        result[name] = {"one_thread_us": one, "all_threads_us": every,
                        "speedup": one / every,
                        "cpu_us": cpu_per_item(lambda fn=fn: fn(0))}
    return result


def machine() -> dict:
    """Describe the machine and the library versions the figures come from."""
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip()
                     for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    info = {"cpu": model, "cpu_count": os.cpu_count(), "usable_cpus": _cpus(),
            "platform": platform.platform(), "python": sys.version.split()[0],
            "numpy": np.__version__, "rbcl": _version("rbcl")}
    try:  # rbcl keeps libsodium in a private attribute; the version is a nicety
        import ctypes

        import rbcl

        version = rbcl._sodium.sodium_version_string
        version.restype = ctypes.c_char_p
        info["libsodium"] = version().decode()
    except (AttributeError, OSError):
        info["libsodium"] = "unknown"
    return info


def markdown(report: dict) -> str:
    """Render the report as Markdown tables."""
    m, u = report["machine"], report["micro"]
    lines = [
        "# Alignment benchmark", "",
        f"`{report['command']}`", "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs (of {m['cpu_count']}); "
        f"{m['platform']}; Python {m['python']}, numpy {m['numpy']}, rbcl {m['rbcl']} "
        f"(libsodium {m['libsodium']}).", "",
        f"Each peer holds a random {report['coverage']:.0%} of a universe of IDs; the "
        "peers run one after the other in one process (a deployment runs them in "
        "parallel). Bytes count the 32-byte values only; after any mode the server "
        "also sends each peer its plan (9 bytes per aligned row).", "",
    ]
    if u:
        lines += [
            f"## Per operation ({u['rows']:,} items, microseconds per item)", "",
            "| operation | 1 thread | all threads | speed-up | CPU time |",
            "|---|---:|---:|---:|---:|",
            f"| plain: SHA-256 | {u['plain_us']:.2f} | | | |",
            f"| keyed-hash: HMAC-SHA256 | {u['keyed_hash_us']:.2f} | | | |",
        ] + [
            f"| psi: {label} | {u[k]['one_thread_us']:.1f} | {u[k]['all_threads_us']:.1f} "
            f"| {u[k]['speedup']:.2f}x | {u[k]['cpu_us']:.1f} |"
            for k, label in (("hash_to_group", "hash to group (SHA-512, from_hash)"),
                             ("blind", "blind (scalar multiplication)"),
                             ("psi_pseudonymize", "first round (hash and blind)"))
        ] + ["", "Wall time per item; *CPU time* is the process's CPU time per item on "
                 "all threads (unaffected by other load on the machine).", ""]
    lines += [
        "## Whole alignment", "",
        "| mode | peers x IDs | pseudonyms s | ring s | intersect s | total s | CPU s | "
        "hashes | blindings | MB peers->server | MB server->peers | rounds | aligned | "
        "same rows | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['mode']} | {r['peers']} x {r['ids_per_peer']:,} | "
            f"{r['pseudonymize_s']:.1f} | {r['ring_s']:.1f} | {r['intersect_s']:.1f} | "
            f"{r['total_s']:.1f} | {r['cpu_s']:.1f} | {r['hashes']:,} | {r['blindings']:,} | "
            f"{r['bytes_to_server'] / 1e6:.1f} | {r['bytes_to_peers'] / 1e6:.1f} | "
            f"{r['rounds']} | {r['intersection']:,} | "
            f"{ {True: 'yes', False: 'NO', None: 'n/a'}[r['same_rows_as_keyed_hash']]} | "
            f"{r['load_average_after']:.1f} |")
    lines += ["", "*pseudonyms*: every peer's first message (for PSI: hash and blind its "
              "own IDs); *ring*: PSI's later rounds; *same rows*: every peer's aligned "
              "rows equal keyed-hash's; *CPU s*: the process's CPU time, all threads; "
              "*load*: the machine's 1-minute load average "
              f"after the run (about {report['machine']['usable_cpus']} when this "
              "benchmark alone keeps every CPU busy).", ""]
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, run every size and mode, print and save the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--ids", type=int, nargs="+", default=[100_000],
                        help="IDs per peer; one run per value")
    parser.add_argument("--coverage", type=float, default=0.9,
                        help="share of the universe each peer holds")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--workers", type=int, default=0,
                        help="threads per peer for PSI; 0: every CPU")
    parser.add_argument("--micro-rows", type=int, default=20_000,
                        help="items of the per-operation timing; 0 skips it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args()
    if args.peers < 1 or not 0 < args.coverage <= 1:
        parser.error("--peers must be at least 1 and --coverage in (0, 1]")

    report = {"command": " ".join(["python", *sys.argv]), "machine": machine(),
              "coverage": args.coverage, "micro": {}, "runs": []}
    say(f"machine: {json.dumps(report['machine'])}")
    if args.micro_rows:
        say(f"per-operation timing on {args.micro_rows:,} items")
        report["micro"] = micro(args.micro_rows)
    for n_ids in args.ids:
        say(f"{args.peers} peers x {n_ids:,} IDs: drawing the IDs")
        id_lists = peer_ids(args.peers, n_ids, args.coverage, args.seed)
        reference = None
        for mode in sorted(args.modes, key=lambda m: m != "keyed-hash"):
            say(f"{args.peers} x {n_ids:,} IDs, {mode}")
            run = align(mode, id_lists, args.workers)
            plan = run.pop("plan")
            reference = plan if mode == "keyed-hash" else reference
            run["same_rows_as_keyed_hash"] = (None if reference is None
                                              else same_rows(plan, reference))
            report["runs"].append(run)
            say(f"  {mode}: {run['total_s']:.1f} s, {run['intersection']:,} aligned")
    report["runs"].sort(key=lambda r: (r["ids_per_peer"], MODES.index(r["mode"])))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "alignment.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "alignment.md").write_text(text)
    print(text)
    say(f"wrote {args.out / 'alignment.json'} and {args.out / 'alignment.md'}")


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
