"""Build a copy of the agent whose per-packet modules are compiled to C with Cython, to A/B it
against the interpreted agent (issue 11: ping RTT).

    .venv/bin/pip install cython setuptools   # bench tools only, not dependencies of the product
    .venv/bin/python bench/compiled_agent.py --out /tmp/sm-compiled
    LEGS="wireguard-go main=.venv/bin/shadowmesh-agent compiled=/tmp/sm-compiled/shadowmesh-agent" \\
    ROUNDS=6 PINGS=400 .venv/bin/python bench/ping_ab.py    # as root, under the benchmark lock

It copies `nodeagent/` into OUT/src and compiles the modules in HOT there, unchanged: Cython
compiles plain Python (with annotation_typing off it ignores the type annotations). OUT/shadowmesh-agent
runs that copy with this interpreter. Python imports a compiled module before its `.py`, so
everything else stays interpreted. It needs gcc and the interpreter's headers; it touches nothing outside OUT.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# What a packet runs through on its way across (nodeagent/tunnel/datapath.py's two pipelines).
# Not chunk mode (tunnel/chunks.py, protocol/chunk.py: bulk traffic only, never a ping): Cython
# refuses a slice assignment in one and types a bytearray argument strictly in the other
HOT = (
    "nodeagent/tunnel/datapath.py",
    "nodeagent/tunnel/udp.py",
    "nodeagent/tunnel/tun.py",
    "nodeagent/tunnel/gro.py",
    "nodeagent/tunnel/tso.py",
    "nodeagent/tunnel/relay.py",
    "nodeagent/protocol/frames.py",
    "nodeagent/protocol/counters.py",
    "nodeagent/protocol/session.py",
    "nodeagent/protocol/keys.py",
    "nodeagent/routing/table.py",
    "nodeagent/policy/filter.py",
    "nodeagent/policy/packet.py",
    "nodeagent/stats.py",
    "nodeagent/ratelimit.py",
)

_SETUP = """\
import sys
from Cython.Build import cythonize
from setuptools import setup

setup(
    ext_modules=cythonize(sys.argv[1:], quiet=True,
                          compiler_directives={"language_level": 3, "annotation_typing": False}),
    script_args=["build_ext", "--inplace"],
)
"""


def hot_modules(root: Path) -> list[Path]:
    """The modules of HOT under `root`; SystemExit naming the first one that is missing."""
    missing = [name for name in HOT if not (root / name).is_file()]
    if missing:
        raise SystemExit(f"compiled_agent: {missing[0]} is not in {root} (HOT names a module that moved?)")
    return [root / name for name in HOT]


def wrapper(src: Path, python: str) -> str:
    """The text of the executable that runs the agent from `src` with `python`."""
    return f'#!/bin/sh\nPYTHONPATH={src} exec {python} -m nodeagent "$@"\n'


def build(out: Path) -> Path:
    try:
        import Cython  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"compiled_agent: {exc.name} is not installed "
                         "(.venv/bin/pip install cython setuptools)") from None
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "nodeagent", src / "nodeagent",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    modules = [str(p.relative_to(src)) for p in hot_modules(src)]
    (src / "_build_compiled.py").write_text(_SETUP)
    subprocess.run([sys.executable, "_build_compiled.py", *modules], cwd=src, check=True,
                   stdout=subprocess.DEVNULL)
    built = sorted((src / "nodeagent").rglob("*.so"))
    if len(built) != len(modules):
        raise SystemExit(f"compiled_agent: {len(built)} of {len(modules)} modules were built")
    agent = out / "shadowmesh-agent"
    agent.write_text(wrapper(src, sys.executable))
    agent.chmod(0o755)
    return agent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the copy and the executable")
    args = parser.parse_args()
    out = args.out.resolve()
    if out == ROOT or ROOT in out.parents:
        parser.error("--out must be outside the repository (the copy would be packaged with it)")
    out.mkdir(parents=True, exist_ok=True)
    agent = build(out)
    print(f"compiled {len(HOT)} modules; agent: {agent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
