"""Run the app on a local Flower simulation federation through ``flwr run``.

Used by the Python API and the command line (:mod:`vfl_embed.run.api`,
``vfl-embed``) and the end-to-end tests, so all of them drive the real
Flower stack the way a user does. Each
:class:`LocalFederation` has its own ``FLWR_HOME`` and stops, by process id,
the managed local SuperLink that its runs started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from flwr.cli.constant import LOCAL_SUPERLINK_HTTP_API_PORT

from ..deploy.flwr_commands import PROJECT_ROOT, LocalRun, flower_env, format_run_config

__all__ = ["LocalFederation"]

class LocalFederation:
    """A private ``FLWR_HOME`` whose managed local SuperLink is stopped on exit.

    Parameters
    ----------
    flwr_home : str | Path | None (default: None)
        Directory for Flower's state; a new temporary one if None.
    app_dir : str | Path (default: the project root)
        The Flower App to run.
    echo : bool (default: False)
        Also copy the run's output to this process's stdout as it arrives.
    cpus_per_peer : int | None (default: None)
        CPU cores the simulation reserves for each SuperNode (Flower's
        ``client-resources-num-cpus``). None keeps Flower's default of 2,
        under which a 2-core machine runs one peer at a time; 1 lets peers
        fit side by side, as they do on their own hosts in a deployment.
    """

    def __init__(
        self,
        flwr_home: str | Path | None = None,
        app_dir: str | Path = PROJECT_ROOT,
        echo: bool = False,
        cpus_per_peer: int | None = None,
    ) -> None:
        if cpus_per_peer is not None and cpus_per_peer < 1:
            raise ValueError(f"cpus_per_peer must be at least 1, got {cpus_per_peer}")
        self._own_home = flwr_home is None
        self.flwr_home = Path(flwr_home or tempfile.mkdtemp(prefix="vfl-flwr-home-"))
        self.app_dir = Path(app_dir)
        self.echo = echo
        self.cpus_per_peer = cpus_per_peer

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        run_config: Mapping[str, object] | None = None,
        num_peers: int = 3,
        timeout: float = 1800.0,
        app_dir: str | Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> LocalRun:
        """Run the app with ``num_peers`` simulated SuperNodes and wait for it.

        ``app_dir`` runs another Flower App than the federation's own.
        ``on_line`` is called with every line of the run's output as it
        arrives, without its line break (progress displays follow the
        ``[align]``, ``[embed]``, ``[learn]`` and ``[report]`` lines).
        """
        app_dir = Path(app_dir or self.app_dir)
        if not self.superlink_pids() and _local_superlink_answers():
            raise RuntimeError(
                "another local Flower SuperLink already listens on 127.0.0.1:"
                f"{LOCAL_SUPERLINK_HTTP_API_PORT}; stop it (e.g. `pkill -f "
                "flower-superlink`) so that this run does not use a stale one"
            )
        federation_config = f"num-supernodes={num_peers}"
        if self.cpus_per_peer is not None:
            federation_config += f" client-resources-num-cpus={self.cpus_per_peer}"
        command = [_flwr(), "run", str(app_dir), "--stream",
                   "--federation-config", federation_config]
        if run_config:
            command += ["--run-config", format_run_config(run_config)]
        env = flower_env(self.flwr_home) | {
            # The app's dependencies are installed already; without this the
            # SuperLink would `uv sync` them into a fresh environment per run.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        }
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, cwd=app_dir,
        )
        lines = []
        deadline = time.monotonic() + timeout
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if self.echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            if on_line is not None:
                on_line(line.rstrip("\n"))
            if time.monotonic() > deadline:
                process.kill()
                lines.append(f"vfl_embed: flwr run killed after {timeout:.0f} s\n")
                break
        returncode = process.wait()
        return LocalRun.from_output(returncode, "".join(lines),
                                    time.perf_counter() - started)

    def superlink_pids(self) -> list[int]:
        """Process ids of SuperLinks started with this ``FLWR_HOME``."""
        marker = str(self.flwr_home)
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "flower-superlink" in cmdline and marker in cmdline:
                pids.append(int(proc.name))
        return pids

    def close(self) -> None:
        """Stop this federation's SuperLink (and its children), then clean up."""
        for pid in self.superlink_pids():
            _terminate_group(pid)
        if self._own_home:
            shutil.rmtree(self.flwr_home, ignore_errors=True)


def _terminate_group(pid: int) -> None:
    # The managed SuperLink is started detached, in its own process group,
    # together with the simulation and Ray processes it spawns.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(os.getpgid(pid), sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)


def _local_superlink_answers() -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", int(LOCAL_SUPERLINK_HTTP_API_PORT))) == 0


def _flwr() -> str:
    candidate = Path(sys.executable).with_name("flwr")
    return str(candidate) if candidate.exists() else "flwr"
