"""The app on Flower's Deployment Engine across separate network hosts.

One namespace per host (``network_hosts.HostNetwork``): the SuperLink at
198.18.0.1, an operator running ``flwr`` at 198.18.0.2, three organizations'
SuperNodes at .11-.13, and two unwelcome SuperNodes at .21-.22. Real
``flower-superlink``/``flower-supernode`` processes with TLS and SuperNode
authentication, started with the commands of :mod:`vfl_embed.deployment`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST
from network_hosts import HostNetwork, unavailable_reason

from vfl_embed import deployment
from vfl_embed.credentials import make_credentials
from vfl_embed.datasets import ID_COLUMN, write_peer_files
from vfl_embed.local_federation import (
    PROJECT_ROOT,
    LocalRun,
    flower_env,
    format_run_config,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(unavailable_reason()), reason=unavailable_reason()),
]

ORGS = ("org1", "org2", "org3")
HOSTS = {"superlink": 1, "operator": 2, "org1": 11, "org2": 12, "org3": 13,
         "rogue": 21, "wrongca": 22}
SECRET = "deployment-test-secret"
TARGET = "log_sale_price"
CONNECTION = "vfl-deploy"
TIMEOUT = 40.0  # run-config timeout in the fault tests


class Deployment:
    """A running federation: SuperLink, three SuperNodes and an operator."""

    def __init__(self, network: HostNetwork, root: Path) -> None:
        self.network = network
        self.root = root
        self.credentials = root / "credentials"
        self.superlink = f"{network.addresses['superlink']}:{deployment.SUPERLINK_PORT}"
        make_credentials(self.credentials, [network.addresses["superlink"]], ORGS)
        make_credentials(root / "other-ca", [network.addresses["superlink"]], ["rogue"])
        (root / "secret.txt").write_text(SECRET + "\n")
        self.data = write_peer_files("ames", ORGS, root / "data")
        self.dead: set[str] = set()

    # ------------------------------------------------------------ processes
    def env(self, host: str) -> dict[str, str]:
        home = self.root / host / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        return flower_env(home)

    def start(self, host: str, argv: list[str]) -> subprocess.Popen:
        (self.root / host).mkdir(parents=True, exist_ok=True)
        return self.network.start(host, argv, self.log(host), self.root / host,
                                  self.env(host))

    def log(self, host: str) -> Path:
        return self.root / f"{host}.log"

    def start_superlink(self) -> None:
        self.start("superlink", deployment.superlink_command(self.credentials))
        operator = self.env("operator")
        Path(operator["FLWR_HOME"], "config.toml").write_text(deployment.connection_toml(
            CONNECTION, self.superlink, self.credentials / "ca.crt"))
        _wait_for(lambda: self.flwr("supernode", "list").returncode == 0, 30,
                  "the SuperLink did not answer the operator", self.log("superlink"))

    def start_supernode(self, host: str, key: Path, ca: Path | None = None) -> None:
        index = ORGS.index(host) if host in ORGS else 0
        config = deployment.node_config(
            self.data[index], f"peer-{index}", self.root / "secret.txt",
            id_column=ID_COLUMN, label_column=TARGET if index == 0 else "",
        )
        self.start(host, deployment.supernode_command(
            ca or self.credentials / "ca.crt", key, self.superlink, config,
        ) + ["--max-retries", "3"])

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.network.run("operator", ["flwr", *args, CONNECTION], PROJECT_ROOT,
                                self.env("operator"), timeout=timeout)

    def online(self) -> int:
        listed = self.flwr("supernode", "list", "--format", "json")
        nodes = json.loads(listed.stdout).get("nodes", []) if listed.returncode == 0 else []
        return sum(node["status"] == "online" for node in nodes)

    def kill_host(self, host: str) -> None:
        """Kill every process of ``host``, as if the machine died."""
        for pid in self.network.pids(host):
            os.kill(pid, 9)
        self.dead.add(host)

    def revive(self, org: str) -> None:
        """Restart a killed organization's SuperNode; wait until it is connected.

        The SuperLink refuses a key whose node it still believes online, so
        wait until it has marked the killed node offline (missed heartbeats).
        """
        _wait_for(lambda: self.online() < 3, 150, f"the killed {org} stayed online",
                  self.log("superlink"))
        self.start_supernode(org, self.credentials / "supernodes" / f"{org}.key")
        _wait_for(lambda: self.online() == 3, 90, f"{org} did not reconnect",
                  self.log(org))
        self.dead.discard(org)

    def run(self, config: dict, on_line=None) -> tuple[str, LocalRun]:
        """``flwr run . <connection> --stream`` on the operator host.

        Returns the run's final status (``flwr run`` exits 0 also when the
        run failed) and the run.
        """
        config = FAST | {"label-source": "peer", "num-peers": 3,
                         "results-dir": str(self.root / "results")} | config
        argv = ["ip", "netns", "exec", self.network.namespace("operator"), "flwr", "run",
                str(PROJECT_ROOT), CONNECTION, "--stream",
                "--run-config", format_run_config(config)]
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, cwd=PROJECT_ROOT, env=self.env("operator"))
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line)
        run = LocalRun.from_output(process.wait(timeout=600), "".join(lines),
                                   time.monotonic() - started)
        with open(self.root / "runs.log", "a") as log:
            log.write(run.output)
        run_id = re.search(r"Successfully started run (\d+)", run.output)
        assert run.returncode == 0 and run_id, run.output[-3000:]
        listed = self.flwr("list", "--run-id", run_id.group(1), "--format", "json")
        return json.loads(listed.stdout)["runs"][0]["status"], run


@pytest.fixture(scope="module")
def federation_hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    with HostNetwork(HOSTS) as network:
        fed = Deployment(network, root)
        fed.start_superlink()
        for org in ORGS:
            registered = fed.flwr("supernode", "register",
                                  str(fed.credentials / "supernodes" / f"{org}.pub"))
            assert registered.returncode == 0, registered.stdout
            fed.start_supernode(org, fed.credentials / "supernodes" / f"{org}.key")
        _wait_for(lambda: fed.online() == 3, 60, "3 SuperNodes did not come online",
                  fed.log("org1"))
        yield fed


def test_deployment_run_equals_simulation(federation_hosts, run_app):
    fed = federation_hosts
    status, run = fed.run({})
    print(f"\n[deployment] 3-peer Ames run over TLS on 5 hosts: {run.seconds:.1f} s")
    assert status == "finished:completed", run.output[-3000:]
    deployed = run.report

    simulated = run_app(3, **{
        "dataset": "", "data-paths": ";".join(map(str, fed.data)),
        "label-source": "peer", "target": TARGET, "alignment-secret": SECRET,
    })
    assert simulated.returncode == 0, simulated.output[-3000:]
    print(f"[deployment] the same run in simulation: {simulated.seconds:.1f} s")
    assert deployed["entities"] == simulated.report["entities"]
    assert deployed["held_out_metrics"] == simulated.report["held_out_metrics"]
    assert deployed["held_out_metrics"]["r2"] > 0.7
    print(f"[deployment] held-out R2 {deployed['held_out_metrics']['r2']!r} in both")
    # The server got latents, never rows: no peer file reached its host.
    assert not list((fed.root / "superlink").rglob("*.csv"))


def test_unregistered_supernode_is_refused(federation_hosts):
    fed = federation_hosts
    fed.start_supernode("rogue", fed.root / "other-ca" / "supernodes" / "rogue.key")
    _wait_for(lambda: "Failed to activate SuperNode" in fed.log("rogue").read_text(),
              60, "the rogue SuperNode was not refused", fed.log("rogue"))
    assert fed.online() == 3


def test_supernode_trusting_another_ca_cannot_connect(federation_hosts):
    fed = federation_hosts
    fed.start_supernode("wrongca", fed.credentials / "supernodes" / "org1.key",
                        ca=fed.root / "other-ca" / "ca.crt")
    _wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in fed.log("wrongca").read_text(),
              60, "a SuperNode trusting another CA connected", fed.log("wrongca"))


@pytest.mark.parametrize("min_peers", [0, 2])
def test_supernode_killed_mid_run(federation_hosts, min_peers):
    fed = federation_hosts
    if "org3" in fed.dead:  # killed in the previous case
        fed.revive("org3")
    killed_at = []

    def kill_during_embed(line: str) -> None:
        if "fit their encoders" in line and not killed_at:
            fed.kill_host("org3")
            killed_at.append(time.monotonic())

    status, run = fed.run({"timeout": TIMEOUT, "min-peers": min_peers},
                          kill_during_embed)
    assert killed_at, run.output[-3000:]
    waited = time.monotonic() - killed_at[0]
    print(f"\n[deployment] min-peers={min_peers}: run ended {waited:.0f} s after the "
          "kill")
    assert waited < TIMEOUT + 30, run.output[-3000:]
    if min_peers == 0:
        assert status == "finished:failed", run.output[-3000:]
        assert ("peer-2: did not answer the embed phase within 40 s, or the SuperLink "
                "lost it") in run.output, run.output[-3000:]
        # The stopped run keeps what it finished: the two peers' embeddings.
        report = run.report
        assert (report["status"], report["phase"]) == ("failed", "fit-embed")
        assert sorted(report["peers"]) == ["peer-0", "peer-1"]
    else:
        assert status == "finished:completed", run.output[-3000:]
        report = run.report
        assert sorted(report["peers"]) == ["peer-0", "peer-1"]
        assert list(report["dropped_peers"]) == ["peer-2"]
        markdown = run.report_path.with_name("report.md").read_text()
        assert "Finished without peer-2" in markdown


def test_network_leaves_nothing_behind(tmp_path):
    network = HostNetwork({"a": 31, "b": 32})
    with pytest.raises(RuntimeError), network:
        network.start("a", ["sleep", "600"], tmp_path / "a.log", tmp_path)
        network.start("b", ["sh", "-c", f"sleep 600 & {sys.executable} -m http.server "
                            "8080 --bind 198.18.0.32"], tmp_path / "b.log", tmp_path)
        reach = ("import socket, time\nfor _ in range(50):\n    try:\n"
                 "        socket.create_connection(('198.18.0.32', 8080), 1); break\n"
                 "    except OSError: time.sleep(0.2)\nelse: raise SystemExit(1)")
        reached = network.run("a", [sys.executable, "-c", reach], tmp_path)
        assert reached.returncode == 0, reached.stdout
        assert len(network.pids()) == 4  # sleep; sh, sleep, http.server
        raise RuntimeError("a failing test")
    assert network.namespaces() == []
    assert network.pids() == []


def _wait_for(condition, seconds: float, message: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"{message} within {seconds:.0f} s; {log.name}:\n{tail}")
        time.sleep(1.0)
