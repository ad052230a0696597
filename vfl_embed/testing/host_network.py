"""Separate network hosts on one machine, made with ``ip netns`` (needs root).

The deployment test and the deployment benchmark run Flower's Deployment
Engine on such hosts (see :mod:`vfl_embed.testing.host_deployment`).

:class:`HostNetwork` creates one network namespace per host, each with its
own loopback and one interface (``eth0``, an address in 198.18.0.0/24) on a
bridge that lives in a namespace of its own. The namespaces have no route
out: hosts reach each other and nothing else. On :meth:`HostNetwork.close`
every process started in a namespace is killed and the namespaces are
deleted, which removes the links and the bridge with them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["SUBNET", "HostNetwork", "unavailable_reason"]

SUBNET = "198.18.0"


def unavailable_reason() -> str:
    """Why host networks cannot be made here, or "" if they can."""
    if os.geteuid() != 0:
        return "ip netns needs root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    return ""


class HostNetwork:
    """Hosts, by name, each in its own network namespace on one bridge.

    Parameters
    ----------
    hosts : Mapping[str, int]
        Host name -> last octet of its address in 198.18.0.0/24.
    """

    def __init__(self, hosts: Mapping[str, int]) -> None:
        self.tag = f"vfl{secrets.token_hex(3)}"
        self.addresses = {name: f"{SUBNET}.{octet}" for name, octet in hosts.items()}
        self._processes: list[subprocess.Popen] = []
        self._switch = f"{self.tag}-sw"
        try:
            self._build(hosts)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> HostNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, host: str) -> str:
        """Return the namespace name of ``host``."""
        return f"{self.tag}-{host}"

    def namespaces(self) -> list[str]:
        """Return the names of this network's namespaces that exist now."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                text=True, check=True).stdout
        return [line.split()[0] for line in listed.splitlines()
                if line.split() and line.split()[0].startswith(self.tag)]

    def start(
        self, host: str, argv: Sequence[str], log: Path, cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start ``argv`` on ``host`` in the background, output to ``log``."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(host), *argv],
                stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                env=dict(env) if env is not None else None, start_new_session=True,
            )
        self._processes.append(process)
        return process

    def run(
        self, host: str, argv: Sequence[str], cwd: Path,
        env: Mapping[str, str] | None = None, timeout: float = 120.0,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` on ``host`` and wait; stdout and stderr together."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace(host), *argv],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
            env=dict(env) if env is not None else None, timeout=timeout,
        )

    def pids(self, host: str | None = None) -> list[int]:
        """Return the processes on ``host``, or in any of this network's namespaces."""
        found = []
        for name in [self.namespace(host)] if host else self.namespaces():
            listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                    text=True).stdout
            found += [int(p) for p in listed.split()]
        return found

    def close(self) -> None:
        """Kill every process in the namespaces, then delete the namespaces."""
        for process in self._processes:
            _kill_group(process.pid)
            process.wait()
        for _ in range(3):  # processes a killed parent spawned meanwhile
            for pid in self.pids():
                _kill(pid)
            if not self.pids():
                break
            time.sleep(0.5)
        for name in self.namespaces():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def _build(self, hosts: Mapping[str, int]) -> None:
        _ip("netns", "add", self._switch)
        _ip("-n", self._switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self._switch, "link", "set", "br0", "up")
        for index, (host, octet) in enumerate(hosts.items()):
            namespace = self.namespace(host)
            _ip("netns", "add", namespace)
            _ip("-n", self._switch, "link", "add", f"p{index}", "type", "veth",
                "peer", "name", "eth0", "netns", namespace)
            _ip("-n", self._switch, "link", "set", f"p{index}", "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{SUBNET}.{octet}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
