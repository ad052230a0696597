"""A Flower deployment across separate network hosts on one machine (needs root).

:class:`HostDeployment` runs the real ``flower-superlink`` and one
``flower-supernode`` per organization, each on its own
:class:`~vfl_embed.testing.host_network.HostNetwork` host, with TLS and SuperNode
authentication and the commands of :mod:`vfl_embed.deploy.commands`; an operator
host runs ``flwr``. The deployment test and the deployment benchmark use it.
Hosts are named ``"superlink"``, ``"operator"`` and after the organizations.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..deploy import commands as deployment
from ..deploy.credentials import make_credentials
from ..deploy.flwr_commands import LocalRun, flower_env, format_run_config
from .host_network import HostNetwork

__all__ = ["HostDeployment", "wait_for"]


class HostDeployment:
    """A SuperLink, the organizations' SuperNodes and an operator on ``network``.

    Parameters
    ----------
    network : HostNetwork
        Hosts named ``"superlink"``, ``"operator"`` and every organization.
    root : Path
        Working folder: credentials, each host's ``FLWR_HOME`` and log.
    organizations : Sequence[str]
        The organizations that get SuperNode key pairs.
    connection : str (default: "vfl-deploy")
        Name of the SuperLink connection in the operator's ``config.toml``.
    """

    def __init__(self, network: HostNetwork, root: Path,
                 organizations: Sequence[str], connection: str = "vfl-deploy") -> None:
        self.network = network
        self.root = root
        self.organizations = list(organizations)
        self.connection = connection
        self.credentials = root / "credentials"
        self.superlink = f"{network.addresses['superlink']}:{deployment.SUPERLINK_PORT}"
        make_credentials(self.credentials, [network.addresses["superlink"]],
                         self.organizations)

    def env(self, host: str) -> dict[str, str]:
        """Return the environment of Flower commands on ``host``."""
        home = self.root / host / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        return flower_env(home)

    def log(self, host: str) -> Path:
        """Return the output file of ``host``'s processes."""
        return self.root / f"{host}.log"

    def start(self, host: str, argv: list[str]) -> subprocess.Popen:
        """Start ``argv`` on ``host`` in the background."""
        (self.root / host).mkdir(parents=True, exist_ok=True)
        return self.network.start(host, argv, self.log(host), self.root / host,
                                  self.env(host))

    def start_superlink(self) -> None:
        """Start the SuperLink; wait until it answers the operator."""
        self.start("superlink", deployment.superlink_command(self.credentials))
        operator = self.env("operator")
        Path(operator["FLWR_HOME"], "config.toml").write_text(deployment.connection_toml(
            self.connection, self.superlink, self.credentials / "ca.crt"))
        wait_for(lambda: self.flwr("supernode", "list").returncode == 0, 30,
                 "the SuperLink did not answer the operator", self.log("superlink"))

    def register(self, organization: str) -> None:
        """Register ``organization``'s public key with the SuperLink."""
        key = self.credentials / "supernodes" / f"{organization}.pub"
        registered = self.flwr("supernode", "register", str(key))
        if registered.returncode != 0:
            raise RuntimeError(f"registering {organization} failed: {registered.stdout}")

    def start_supernode(self, host: str, node_config: str, key: Path | None = None,
                        ca: Path | None = None) -> None:
        """Start a SuperNode on ``host`` (by default with its organization's key)."""
        key = key or self.credentials / "supernodes" / f"{host}.key"
        self.start(host, deployment.supernode_command(
            ca or self.credentials / "ca.crt", key, self.superlink, node_config,
        ) + ["--max-retries", "3"])

    def start_federation(self, node_configs: Mapping[str, str], timeout: float = 60) -> None:
        """Start the SuperLink and a registered SuperNode per organization; wait for all."""
        self.start_superlink()
        for organization in self.organizations:
            self.register(organization)
            self.start_supernode(organization, node_configs[organization])
        wait_for(lambda: self.online() == len(self.organizations), timeout,
                 f"{len(self.organizations)} SuperNodes did not come online",
                 self.log(self.organizations[0]))

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``flwr <args> <connection>`` on the operator host."""
        return self.network.run("operator", ["flwr", *args, self.connection], self.root,
                                self.env("operator"), timeout=timeout)

    def online(self) -> int:
        """Count the SuperNodes the SuperLink lists as online."""
        listed = self.flwr("supernode", "list", "--format", "json")
        nodes = json.loads(listed.stdout).get("nodes", []) if listed.returncode == 0 else []
        return sum(node["status"] == "online" for node in nodes)

    def run(self, app_dir: Path, config: Mapping[str, object],
            on_line: Callable[[str], None] | None = None,
            timeout: float = 600) -> tuple[str, LocalRun]:
        """``flwr run <app_dir> <connection> --stream`` on the operator host.

        Returns the run's final status (``flwr run`` exits 0 also when the
        run failed, e.g. ``"finished:failed"``) and the run.
        """
        argv = ["ip", "netns", "exec", self.network.namespace("operator"), "flwr", "run",
                str(app_dir), self.connection, "--stream",
                "--run-config", format_run_config(config)]
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, cwd=app_dir, env=self.env("operator"))
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line)
        run = LocalRun.from_output(process.wait(timeout=timeout), "".join(lines),
                                   time.monotonic() - started)
        with open(self.root / "runs.log", "a") as log:
            log.write(run.output)
        run_id = re.search(r"Successfully started run (\d+)", run.output)
        if run.returncode != 0 or not run_id:
            raise RuntimeError(f"flwr run did not start: {run.output[-3000:]}")
        listed = self.flwr("list", "--run-id", run_id.group(1), "--format", "json")
        return json.loads(listed.stdout)["runs"][0]["status"], run


def wait_for(condition: Callable[[], bool], seconds: float, message: str,
             log: Path) -> None:
    """Poll ``condition`` every second; after ``seconds`` fail with ``log``'s tail."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            raise TimeoutError(f"{message} within {seconds:.0f} s; {log.name}:\n{tail}")
        time.sleep(1.0)
