"""bench/compiled_agent.py: the modules it compiles exist, a moved one is named, its executable runs
the agent from the copy, and it refuses to build inside the repository (no compiler needed).

.venv/bin/pytest bench/test_compiled_agent.py
"""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compiled_agent


def test_every_module_it_compiles_is_in_the_tree():
    paths = compiled_agent.hot_modules(compiled_agent.ROOT)
    assert len(paths) == len(compiled_agent.HOT) == len(set(paths))
    assert all(p.suffix == ".py" and "nodeagent" in p.parts for p in paths)


def test_a_module_that_moved_is_named(tmp_path):
    (tmp_path / "nodeagent" / "tunnel").mkdir(parents=True)
    (tmp_path / compiled_agent.HOT[0]).write_text("")
    with pytest.raises(SystemExit, match=compiled_agent.HOT[1]):
        compiled_agent.hot_modules(tmp_path)


def test_its_executable_runs_the_agent_from_the_given_tree(tmp_path):
    agent = tmp_path / "shadowmesh-agent"
    agent.write_text(compiled_agent.wrapper(compiled_agent.ROOT, sys.executable))
    agent.chmod(0o755)
    done = subprocess.run([str(agent), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: shadowmesh-agent" in done.stdout


def test_it_refuses_to_build_inside_the_repository(monkeypatch):
    out = compiled_agent.ROOT / "build-compiled"
    monkeypatch.setattr(sys, "argv", ["compiled_agent", "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        compiled_agent.main()
    assert exc.value.code == 2
    assert not out.exists()
