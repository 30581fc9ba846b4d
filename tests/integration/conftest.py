"""Fixtures for the agent's integration tests: `lab`, a namespace lab with agents (see agentlab.py)."""

import os
import sys
from pathlib import Path

import pytest

# the suite runs with --import-mode=importlib: make this folder's helper modules importable
sys.path.insert(0, str(Path(__file__).parent))
from tests.integration.agentlab import AgentLab


@pytest.fixture
def lab(tmp_path, request):
    if os.geteuid() != 0:
        pytest.fail("privileged test run without root: deselect with -m 'not privileged'")
    with AgentLab(tmp_path) as lab:
        try:
            yield lab
        finally:
            failed = getattr(request.node, "rep_call", None)
            if failed is not None and failed.failed:
                for a in lab.agents:
                    sys.stderr.write(f"\n--- agent log {a.log} ---\n{a.log_text()[-6000:]}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
