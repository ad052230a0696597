"""The app on Flower's Deployment Engine across separate network hosts.

One namespace per host (:class:`vfl_embed.testing.host_network.HostNetwork`): the SuperLink at
198.18.0.1, an operator running ``flwr`` at 198.18.0.2, three organizations'
SuperNodes at .11-.13, and two unwelcome SuperNodes at .21-.22. Real
``flower-superlink``/``flower-supernode`` processes with TLS and SuperNode
authentication, started with the commands of :mod:`vfl_embed.deploy.commands`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST

from vfl_embed.data.datasets import ID_COLUMN, write_peer_files
from vfl_embed.deploy import commands as deployment
from vfl_embed.deploy.credentials import make_credentials
from vfl_embed.deploy.flwr_commands import PROJECT_ROOT, LocalRun
from vfl_embed.testing.host_deployment import HostDeployment, wait_for
from vfl_embed.testing.host_network import HostNetwork, unavailable_reason
from vfl_embed.testing.in_process import run_in_process

pytestmark = [
    pytest.mark.slow,
    # One worker at a time builds hosts in 198.18.0.0/24 (see conftest.py).
    pytest.mark.xdist_group("hosts"),
    pytest.mark.skipif(bool(unavailable_reason()), reason=unavailable_reason()),
]

ORGS = ("org1", "org2", "org3")
HOSTS = {"superlink": 1, "operator": 2, "org1": 11, "org2": 12, "org3": 13,
         "rogue": 21, "wrongca": 22}
SECRET = "deployment-test-secret"
TARGET = "log_sale_price"
CONNECTION = "vfl-deploy"
TIMEOUT = 60.0  # run-config timeout of the fault test (peers share 2 busy cores)
# Run config of every deployed run and of the in-process run it is compared with.
SETTINGS = FAST | {"label-source": "peer", "num-peers": 3}
# FAST skips the audit, which a deployed peer requires by default; these
# organizations lift that limit of their own policy for the test's short runs.
POLICY = {"require-audit": False}


class Deployment(HostDeployment):
    """The three organizations' federation, with Ames peer files and a second CA."""

    def __init__(self, network: HostNetwork, root: Path) -> None:
        super().__init__(network, root, ORGS, CONNECTION)
        make_credentials(root / "other-ca", [network.addresses["superlink"]], ["rogue"])
        (root / "secret.txt").write_text(SECRET + "\n")
        self.data = write_peer_files("ames", ORGS, root / "data")

    def node_config(self, host: str) -> str:
        """An organization's peer file (a stranger gets org1's); org1 holds the label."""
        index = ORGS.index(host) if host in ORGS else 0
        return deployment.node_config(
            self.data[index], f"peer-{index}", self.root / "secret.txt",
            id_column=ID_COLUMN, label_column=TARGET if index == 0 else "",
            policy=POLICY,
        )

    def kill_host(self, host: str) -> None:
        """Kill every process of ``host``, as if the machine died."""
        for pid in self.network.pids(host):
            os.kill(pid, 9)

    def run_app(self, config: dict, on_line=None) -> tuple[str, LocalRun]:
        """Run this project's app with the test settings and ``config``."""
        config = SETTINGS | {"results-dir": str(self.root / "results")} | config
        return self.run(PROJECT_ROOT, config, on_line)


@pytest.fixture(scope="module")
def federation_hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    with HostNetwork(HOSTS) as network:
        fed = Deployment(network, root)
        fed.start_federation({org: fed.node_config(org) for org in ORGS})
        yield fed


@pytest.mark.usefixtures("server_identity")
def test_deployment_run_equals_the_in_process_run(federation_hosts):
    """Five hosts give the numbers of one process: the in-process run is the
    simulation's pipeline without Flower's runtime, bit for bit equal to a
    simulation run (test_benchmarks.py, test_faults.py). It needs no local
    SuperLink, so this module can run beside the simulation tests."""
    fed = federation_hosts
    status, run = fed.run_app({})
    print(f"\n[deployment] 3-peer Ames run over TLS on 5 hosts: {run.seconds:.1f} s")
    assert status == "finished:completed", run.output[-3000:]
    deployed = run.report

    one_process = json.loads(run_in_process(SETTINGS | {
        "dataset": "", "data-paths": ";".join(map(str, fed.data)), "target": TARGET,
        "alignment-secret": SECRET, "results-dir": str(fed.root / "in-process"),
    }, num_peers=3).read_text())
    assert deployed["entities"] == one_process["entities"]
    assert deployed["held_out_metrics"] == one_process["held_out_metrics"]
    assert deployed["held_out_metrics"]["r2"] > 0.7
    print(f"[deployment] held-out R2 {deployed['held_out_metrics']['r2']!r} in both")
    # The server got latents, never rows: no peer file reached its host.
    assert not list((fed.root / "superlink").rglob("*.csv"))


def test_unregistered_supernode_is_refused(federation_hosts):
    fed = federation_hosts
    fed.start_supernode("rogue", fed.node_config("rogue"),
                        key=fed.root / "other-ca" / "supernodes" / "rogue.key")
    wait_for(lambda: "Failed to activate SuperNode" in fed.log("rogue").read_text(),
              60, "the rogue SuperNode was not refused", fed.log("rogue"))
    assert fed.online() == 3


def test_supernode_trusting_another_ca_cannot_connect(federation_hosts):
    fed = federation_hosts
    fed.start_supernode("wrongca", fed.node_config("wrongca"),
                        key=fed.credentials / "supernodes" / "org1.key",
                        ca=fed.root / "other-ca" / "ca.crt")
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in fed.log("wrongca").read_text(),
              60, "a SuperNode trusting another CA connected", fed.log("wrongca"))


def test_supernode_killed_mid_run_is_left_out(federation_hosts):
    """A host dies while the peers fit their encoders: with min-peers=2 the run
    goes on without it. (A run that cannot spare the peer stops naming it; the
    strategy's side of that is tested in-process in test_faults.py.)"""
    fed = federation_hosts
    killed_at = []

    def kill_during_embed(line: str) -> None:
        if "fit their encoders" in line and not killed_at:
            fed.kill_host("org3")
            killed_at.append(time.monotonic())

    status, run = fed.run_app({"timeout": TIMEOUT, "min-peers": 2}, kill_during_embed)
    assert killed_at, run.output[-3000:]
    waited = time.monotonic() - killed_at[0]
    print(f"\n[deployment] run ended {waited:.0f} s after the kill")
    # One timeout for the dead peer, then learning and the report; not a second wait.
    assert waited < 2 * TIMEOUT, run.output[-3000:]
    assert status == "finished:completed", run.output[-3000:]
    report = run.report
    assert sorted(report["peers"]) == ["peer-0", "peer-1"]
    assert report["dropped_peers"] == {
        "peer-2": f"did not answer the embed phase within {TIMEOUT:.0f} s, or the SuperLink "
                  "lost it"}
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
