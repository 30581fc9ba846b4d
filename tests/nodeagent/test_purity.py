"""nodeagent.protocol, nodeagent.routing, nodeagent.paths, nodeagent.policy and the pure modules
elsewhere (link election, the control port's admission limits, the status document, the DNS name
table and the resolv.conf format, the DHT's logic in
nodeagent.discovery) stay pure: no sockets, event loops, netlink, Django, clock or select,
directly or through another nodeagent module (docs/architecture.md#design-notes, "Pure code is
separate from I/O").

A module whose docstring claims it ("Pure", "No I/O") is checked wherever it lives, so no module
can claim purity without this test holding it to it: in nodeagent with the rules above, in
meshadmin by its imports (no database, clock, sockets or event loop). Imports under
`if TYPE_CHECKING:` are for annotations only and never run, so they do not count. Every pure
module is also type-checked with mypy's strict flags (pyproject.toml), checked here too."""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURE_PACKAGES = ("nodeagent/protocol", "nodeagent/routing", "nodeagent/paths", "nodeagent/policy")
# nodeagent/discovery mixes pure modules with its asyncio edge: every file is listed in one of the two
DISCOVERY = ROOT / "nodeagent/discovery"
DISCOVERY_PURE = (
    "__init__.py", "ids.py", "table.py", "lookup.py", "records.py", "revocations.py",
    "store.py", "messages.py", "budget.py", "identities.py", "peering.py", "config.py",
)
DISCOVERY_IO = ("node.py", "server.py", "transport.py", "service.py")
PURE_MODULES = (
    "nodeagent/control/election.py",
    "nodeagent/control/admission.py",
    "nodeagent/status.py",
    "nodeagent/dns/names.py",
    "nodeagent/dns/resolv.py",
    "nodeagent/metrics/__init__.py",
    "nodeagent/metrics/families.py",
    *(f"nodeagent/discovery/{name}" for name in DISCOVERY_PURE),
)
CLAIM = re.compile(r"\bPure\b|\bNo I/O\b")


def claims_purity(path: pathlib.Path) -> bool:
    """The module's docstring says it is pure ("Pure: bytes in, bytes out", "No I/O", ...)."""
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
    return bool(CLAIM.search(doc))


def claimed_pure(package: str) -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / package).glob("**/*.py")
                  if "migrations" not in p.parts and claims_purity(p))
FORBIDDEN = {"socket", "asyncio", "pyroute2", "django", "time", "select", "selectors", "uvloop", "websockets"}
# the heavy ones must not even be loaded transitively (stdlib modules may use `time` themselves)
FORBIDDEN_LOADED = FORBIDDEN - {"time"}


def pure_files():
    seen = set()
    listed = [p for pkg in PURE_PACKAGES for p in sorted((ROOT / pkg).glob("**/*.py"))]
    listed += [ROOT / module for module in PURE_MODULES]
    for path in listed + claimed_pure("nodeagent"):
        if path not in seen:
            seen.add(path)
            yield path


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _runtime_nodes(tree: ast.AST):
    """Every node that runs on import or call: the bodies of `if TYPE_CHECKING:` are skipped."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _type_checking_only(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def imported_modules(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
    """Absolute module names imported by a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in _runtime_nodes(tree):
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


def module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


FILES = list(pure_files())
PURE_NAMES = tuple(module_name(p) for p in FILES)
# what a pure module may import: anything in a pure package; a pure module and its names; a
# package whose __init__ is pure, but not its other modules (nodeagent.discovery has I/O ones)
_PURE_PACKAGE_PREFIXES = tuple(p.replace("/", ".") for p in PURE_PACKAGES)
_PURE_INITS = frozenset(module_name(p) for p in FILES if p.name == "__init__.py")
_PURE_PLAIN = tuple(module_name(p) + "." for p in FILES if p.name != "__init__.py")


# modules that must stay pure wherever the protocol is split next: the glob above checks every
# file, this list makes sure none of these leaves the checked packages unnoticed
REQUIRED_PURE = {
    "nodeagent/protocol/auth.py",
    "nodeagent/protocol/chunk.py",
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
    "nodeagent/protocol/disco.py",
    "nodeagent/paths/candidates.py",
    "nodeagent/paths/choice.py",
    "nodeagent/paths/natclass.py",
    "nodeagent/paths/punch.py",
    "nodeagent/paths/quality.py",
    "nodeagent/metrics/families.py",
    "nodeagent/protocol/policy.py",
    "nodeagent/policy/filter.py",
    "nodeagent/policy/index.py",
    "nodeagent/policy/packet.py",
}


def allowed_nodeagent_import(name: str) -> bool:
    return (name.startswith(_PURE_PACKAGE_PREFIXES) or name in _PURE_INITS
            or (name + ".").startswith(_PURE_PLAIN))


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


def test_a_module_that_claims_purity_is_checked():
    checked = {str(p.relative_to(ROOT)) for p in FILES}
    # outside the pure packages, found by their docstrings alone
    assert {"nodeagent/tunnel/tso.py", "nodeagent/control/election.py", "nodeagent/status.py"} <= checked
    assert {str(p.relative_to(ROOT)) for p in claimed_pure("nodeagent")} <= checked


def test_the_claim_is_read_from_the_docstring(tmp_path):
    pure = tmp_path / "pure.py"
    pure.write_text('"""Path scoring. Pure: `now` is an argument."""\nimport time\n')
    io = tmp_path / "io.py"
    io.write_text('"""The asyncio edge around the pure modules."""\n# Pure\n')
    assert claims_purity(pure)
    assert not claims_purity(io)


def test_type_checking_imports_do_not_count(tmp_path):
    fake = tmp_path / "nodeagent" / "paths" / "probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from ..tunnel.datapath import Peer\nelse:\n    import socket\n")
    names = imported_modules(fake, root=tmp_path)
    assert "nodeagent.tunnel.datapath" not in names
    assert "socket" in names  # the else branch runs


# meshadmin: a pure-claiming module touches no database, clock, socket or event loop. Its package
# __init__ loads Celery, so the check is on the imports themselves: each meshadmin module it
# imports must claim purity too (and is checked the same way).
MESHADMIN_PURE = claimed_pure("meshadmin")
MESHADMIN_PURE_NAMES = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in MESHADMIN_PURE}
MESHADMIN_FORBIDDEN = FORBIDDEN | {"channels", "celery", "redis", "psycopg", "asgiref", "daphne", "ninja"}


def _bare_package(name: str) -> bool:
    """`from . import policy` also names the package: fine while its __init__ imports nothing."""
    init = ROOT.joinpath(*name.split("."), "__init__.py")
    return init.is_file() and not imported_modules(init)


def test_meshadmin_has_pure_modules():
    assert {"meshadmin.netmap.compute", "meshadmin.netmap.policy", "meshadmin.mesh.addressing",
            "meshadmin.dashboard.topology"} <= MESHADMIN_PURE_NAMES


@pytest.mark.parametrize("path", MESHADMIN_PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_meshadmin_module_imports_nothing_impure(path):
    bad = []
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top in MESHADMIN_FORBIDDEN or name in ("<dynamic __import__>", "importlib"):
            bad.append(name)
        elif top == "nodeagent" and not allowed_nodeagent_import(name):
            bad.append(name)
        elif top == "meshadmin" and not any(name == m or name.startswith(m + ".")
                                            for m in MESHADMIN_PURE_NAMES) and not _bare_package(name):
            bad.append(name)
    assert bad == [], f"{path.name} imports {sorted(bad)}"


# ----------------------------------------------------------------------------- strict typing

def _strict_overrides() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    # the strict block sets every flag of --strict; a block that only asks for annotations (the
    # API's: disallow_untyped_defs alone) is not it
    return [o for o in config.get("overrides", [])
            if o.get("disallow_untyped_defs") and o.get("warn_return_any")]


def _covered(module: str, patterns: list[str]) -> bool:
    return any(module == p or fnmatch.fnmatchcase(module, p) or (p.endswith(".*") and module == p[:-2])
               for p in patterns)


def test_every_pure_module_is_type_checked_strictly():
    (strict,) = _strict_overrides()
    patterns = strict["module"]
    missing = [m for m in sorted(set(PURE_NAMES) | MESHADMIN_PURE_NAMES) if not _covered(m, patterns)]
    assert missing == [], f"add to the strict [[tool.mypy.overrides]] in pyproject.toml: {missing}"


def test_the_strict_override_sets_every_flag_of_mypy_strict():
    mypy_main = pytest.importorskip("mypy.main")
    from mypy.options import PER_MODULE_OPTIONS

    def flags(*args):
        _, options = mypy_main.process_options([*args, "--config-file", "/dev/null", "-c", "pass"])
        return options

    strict, plain = flags("--strict"), flags()
    wanted = {k: getattr(strict, k) for k in PER_MODULE_OPTIONS
              if getattr(strict, k, None) != getattr(plain, k, None)}
    assert wanted  # mypy still has a strict mode to compare with
    (override,) = _strict_overrides()
    # pyproject spells `implicit_reexport = false` for mypy's no_implicit_reexport
    have = {k: override.get(k) for k in wanted}
    assert have == wanted
