"""Fixtures for the namespace lab's own tests: `lab`, a fresh lab.Lab removed after each test."""

import os

import pytest

from lab import Lab


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.fail("privileged test run without root: deselect with -m 'not privileged'")
    with Lab() as lab:
        yield lab
