"""nodeagent.protocol, nodeagent.routing, nodeagent.paths and the pure modules elsewhere (link
election, the control port's admission limits, the status document, the DHT's logic in
nodeagent.discovery) stay pure: no sockets, event loops, netlink, Django, clock or select,
directly or through another nodeagent module (docs/architecture.md#design-notes, "Pure code is
separate from I/O")."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURE_PACKAGES = ("nodeagent/protocol", "nodeagent/routing", "nodeagent/paths")
# nodeagent/discovery mixes pure modules with its asyncio edge: every file is listed in one of the two
DISCOVERY = ROOT / "nodeagent/discovery"
DISCOVERY_PURE = (
    "__init__.py", "ids.py", "table.py", "lookup.py", "records.py", "revocations.py",
    "store.py", "messages.py", "budget.py", "identities.py",
)
DISCOVERY_IO = ("node.py", "transport.py")
PURE_MODULES = (
    "nodeagent/control/election.py",
    "nodeagent/control/admission.py",
    "nodeagent/status.py",
    *(f"nodeagent/discovery/{name}" for name in DISCOVERY_PURE),
)
PURE_NAMES = tuple(p.replace("/", ".").removesuffix(".py") for p in PURE_PACKAGES + PURE_MODULES)
FORBIDDEN = {"socket", "asyncio", "pyroute2", "django", "time", "select", "selectors", "uvloop", "websockets"}
# the heavy ones must not even be loaded transitively (stdlib modules may use `time` themselves)
FORBIDDEN_LOADED = FORBIDDEN - {"time"}


def pure_files():
    for pkg in PURE_PACKAGES:
        yield from sorted((ROOT / pkg).glob("**/*.py"))
    for module in PURE_MODULES:
        yield ROOT / module


def imported_modules(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
    """Absolute module names imported by a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("<dynamic __import__>")
    return names


FILES = list(pure_files())


# modules that must stay pure wherever the protocol is split next: the glob above checks every
# file, this list makes sure none of these leaves the checked packages unnoticed
REQUIRED_PURE = {
    "nodeagent/protocol/auth.py",
    "nodeagent/protocol/counters.py",
    "nodeagent/protocol/endpoints.py",
    "nodeagent/protocol/enroll_token.py",
    "nodeagent/protocol/frames.py",
    "nodeagent/protocol/handshake.py",
    "nodeagent/protocol/handshake_errors.py",
    "nodeagent/protocol/hello_guard.py",
    "nodeagent/protocol/opcount.py",
    "nodeagent/control/admission.py",
    "nodeagent/protocol/messages.py",
    "nodeagent/protocol/netmap.py",
    "nodeagent/protocol/netmap_sign.py",
    "nodeagent/protocol/renewal.py",
    "nodeagent/protocol/strict.py",
    "nodeagent/protocol/trust.py",
    "nodeagent/paths/select.py",
}


def allowed_nodeagent_import(name: str) -> bool:
    return name.startswith(PURE_NAMES)


def test_every_discovery_module_is_classified_pure_or_io():
    present = {p.name for p in DISCOVERY.glob("*.py")}
    assert present == set(DISCOVERY_PURE) | set(DISCOVERY_IO)
    assert not set(DISCOVERY_PURE) & set(DISCOVERY_IO)


def test_the_pure_packages_have_files():
    assert REQUIRED_PURE <= {str(p.relative_to(ROOT)) for p in FILES}
    assert any("routing" in p.parts for p in FILES)
    assert all(p.is_file() for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_nothing_impure(path):
    bad = []
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top in FORBIDDEN or name == "<dynamic __import__>" or name == "importlib":
            bad.append(name)
        elif top == "nodeagent" and not allowed_nodeagent_import(name):
            bad.append(name)  # another nodeagent module may do I/O
    assert bad == [], f"{path.name} imports {sorted(bad)}"


def test_importing_every_pure_module_loads_no_io_module():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in FILES]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(k for k in sys.modules if k.split('.')[0] in {sorted(FORBIDDEN_LOADED)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_checker_catches_a_forbidden_import(tmp_path):
    fake = tmp_path / "nodeagent" / "routing" / "probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("import socket\nfrom ..tunnel import udp\nfrom time import monotonic\n")
    names = imported_modules(fake, root=tmp_path)
    assert {"socket", "nodeagent.tunnel", "time"} <= names


def test_a_pure_discovery_module_may_not_import_the_io_edge():
    assert allowed_nodeagent_import("nodeagent.discovery.ids.distance")
    assert allowed_nodeagent_import("nodeagent.protocol.cert")
    assert not allowed_nodeagent_import("nodeagent.discovery.node")
    assert not allowed_nodeagent_import("nodeagent.discovery.node.DhtNode")
    assert not allowed_nodeagent_import("nodeagent.discovery.transport")
    assert not allowed_nodeagent_import("nodeagent.agent")
