"""The deployment guide and the compose file run the network test's commands."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from flwr.cli.flower_config import parse_superlink_connection

from vfl_embed.deploy import commands as deployment
from vfl_embed.deploy.flwr_commands import PROJECT_ROOT, flower_env

GUIDE = PROJECT_ROOT / "docker" / "README.md"
COMPOSE = PROJECT_ROOT / "docker" / "compose.yaml"
ORGS = ("org1", "org2", "org3")
LABEL = "log_sale_price"


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)


def _guide_command(program: str, pwd: str = "/repo") -> list[list[str]]:
    """Every guide line running ``program``, split, without env assignments."""
    commands = []
    for block in _bash_blocks():
        for line in block.splitlines():
            words = shlex.split(line.replace("$PWD", pwd))
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words.pop(0)
            if words and words[0] == program:
                commands.append(words)
    return commands


def _expected_supernode(index: int, ca: str, key: str, superlink: str, data: str,
                        secret: str, port: int, state_dir: str = "") -> list[str]:
    config = deployment.node_config(data, f"peer-{index}", secret, "id",
                                    LABEL if index == 0 else "", state_dir)
    return deployment.supernode_command(ca, key, superlink, config, port)


def test_guide_superlink_command_is_the_tested_one():
    assert _guide_command("flower-superlink") == [
        deployment.superlink_command("certificates",
                                     database="superlink-state/superlink.db")]


def test_guide_creates_the_superlink_state_folder_before_starting_it():
    block = next(b for b in _bash_blocks() if "flower-superlink" in b)
    assert block.index("mkdir -p -m 700 superlink-state") < block.index("flower-superlink")


def test_guide_supernode_commands_are_the_tested_ones():
    expected = [
        _expected_supernode(i, "certificates/ca.crt",
                            f"certificates/supernodes/{org}.key", "127.0.0.1:8000",
                            f"/repo/data/{org}/peer-{i}.csv", "/repo/secrets/alignment.txt",
                            deployment.SUPERNODE_PORT + i)
        for i, org in enumerate(ORGS)
    ]
    assert _guide_command("flower-supernode") == expected


def test_compose_runs_the_tested_commands():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["superlink"]["command"] == deployment.superlink_command(
        "/certificates", database="/app/state/superlink.db",
    )[1:]  # the image's entrypoint is the program
    for i, org in enumerate(ORGS):
        service = services[f"supernode-{org}"]
        assert service["command"] == _expected_supernode(
            i, "/certificates/ca.crt", "/certificates/supernode.key", "superlink:8000",
            f"/data/peer-{i}.csv", "/secrets/alignment.txt", deployment.SUPERNODE_PORT,
            "/app/state",
        )[1:]


def test_each_supernode_mounts_only_its_own_files():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for org in ORGS:
        volumes = services[f"supernode-{org}"]["volumes"]
        read_only = sorted(v.split(":")[0] for v in volumes if v.endswith(":ro"))
        assert read_only == sorted([
            "../certificates/ca.crt", f"../certificates/supernodes/{org}.key",
            f"../data/{org}", "../secrets/alignment.txt",
        ])
        # The one writable mount: the peer's own named state volume.
        assert [v for v in volumes if not v.endswith(":ro")] == [f"{org}-state:/app/state"]
    assert sorted(compose["volumes"]) == [f"{org}-state" for org in ORGS] + [
        "superlink-state"]
    superlink = " ".join(services["superlink"]["volumes"])
    assert "data" not in superlink and "secrets" not in superlink
    assert "ca.key" not in superlink


def test_superlink_keeps_its_database_on_its_volume_and_listens_on_loopback():
    superlink = yaml.safe_load(COMPOSE.read_text())["services"]["superlink"]
    assert "superlink-state:/app/state" in superlink["volumes"]
    command = superlink["command"]
    assert command[command.index("--database") + 1].startswith("/app/state/")
    assert superlink["ports"] == ["127.0.0.1:8000:8000"]


def test_compose_file_is_valid_for_docker_compose():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True) if (
        shutil.which("docker")) else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no `docker compose` client here; the structure is checked above")
    checked = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_guide_preparation_steps_run_as_written(tmp_path):
    """Steps 1 and 2 (credentials, data, secret) run verbatim in a fresh folder."""
    steps = [b for b in _bash_blocks()
             if "vfl_embed.deploy.credentials" in b or "vfl_embed.data.datasets" in b][:2]
    env = flower_env(tmp_path / "flwr-home")
    for step in steps:
        done = subprocess.run(["bash", "-euc", step], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    for org in ORGS:
        assert (tmp_path / "certificates" / "supernodes" / f"{org}.key").exists()
    first = pd.read_csv(tmp_path / "data" / "org1" / "peer-0.csv")
    assert {"id", LABEL} <= set(first.columns)
    assert LABEL not in pd.read_csv(tmp_path / "data" / "org2" / "peer-1.csv").columns
    assert len((tmp_path / "secrets" / "alignment.txt").read_text().strip()) == 64


def test_node_config_refuses_quotes():
    with pytest.raises(ValueError, match="data-path"):
        deployment.node_config("it's.csv", "peer-0", "secret.txt")


def test_connection_toml_is_read_by_flwr():
    text = deployment.connection_toml("vfl-deploy", "198.18.0.1:8000", "ca.crt")
    table = tomllib.loads(text)["superlink"]
    assert table["default"] == "vfl-deploy"
    connection = parse_superlink_connection(table["vfl-deploy"], "vfl-deploy")
    assert connection.address == "198.18.0.1:8000"
    assert Path(connection.root_certificates).is_absolute()
    assert not connection.insecure
