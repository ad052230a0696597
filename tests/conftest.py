"""Shared fixtures: one local Flower federation per test session (per xdist worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, settings

from vfl_embed.peer.runtime import simulated_runtime
from vfl_embed.run.local_federation import LocalFederation

# Property-based tests: a short run by default (CI), a long one with
# VFL_FUZZ=long (see docs/testing.md).
settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("VFL_FUZZ", "ci"))

# Under pytest-xdist two workers share the 2 cores: one thread per library
# per process, as busy-waiting OpenMP and TensorFlow pools that each expect
# every core slow each other down many times over. Set before any test
# imports them; subprocesses (Flower's) inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ |= {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                   "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}

# Small but real settings: few epochs keep an end-to-end run near 30 s. The
# privacy audit (about 2 s per peer) runs where a test asks for it.
FAST = {"epochs": 15, "patience": 5, "batch-size": 128, "audit": False}
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every test that uses the local federation on one xdist worker.

    Flower's managed local SuperLink listens on fixed ports, so two of them
    cannot run at once; tests already in a group (the multi-host deployment
    tests, group "hosts") keep theirs.
    """
    for item in items:
        if "federation" in item.fixturenames and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group("local-superlink"))


@pytest.fixture(scope="session")
def federation(tmp_path_factory):
    """A LocalFederation with its own FLWR_HOME, stopped after the session."""
    with LocalFederation(flwr_home=tmp_path_factory.mktemp("flwr-home")) as fed:
        yield fed


@pytest.fixture(scope="session")
def run_benchmark(federation):
    """Run ``benchmarks/<script>`` with ``args``, writing its results under ``out``.

    A benchmark starts local Flower SuperLinks of its own, which refuse to
    start beside another: the session federation's SuperLink is stopped
    first (its next run starts it again).
    """

    def run(script: str, out: Path, *args: str) -> None:
        federation.close()
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)],
            capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    return run


@pytest.fixture
def run_app(federation, tmp_path):
    """Run the app with ``num_peers`` SuperNodes; results go under tmp_path."""

    def run(num_peers: int = 3, **config):
        config = FAST | {"results-dir": str(tmp_path / "results")} | config
        return federation.run(config, num_peers=num_peers, timeout=600)

    return run


def set_server_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give this process the identity Flower's ServerApp runtime gives its own
    (needed to build instruction messages outside a running federation)."""
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_node_id", SUPERLINK_NODE_ID)


@pytest.fixture
def server_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ServerApp identity for one test; see :func:`set_server_identity`."""
    set_server_identity(monkeypatch)


@pytest.fixture
def simulated():
    """Run the test's ClientApp calls as simulated peers (as Flower's engine does)."""
    with simulated_runtime():
        yield
