"""Short deadlines for the agent websocket tests, and a private namespace for push de-duplication keys."""

from __future__ import annotations

import uuid

import pytest

from meshadmin.realtime import tasks


@pytest.fixture(autouse=True)
def quick_realtime(settings, monkeypatch):
    settings.SHADOWMESH_AGENT_AUTH_TIMEOUT_S = 0.2
    settings.SHADOWMESH_NETMAP_DEBOUNCE_S = 0.2
    settings.SHADOWMESH_TELEMETRY_FLUSH_S = 0.05
    # no Celery worker runs here: pushes go through the consumers' event loop (see realtime/tasks.py);
    # the worker path is covered by the scale-out test
    settings.CELERY_TASK_ALWAYS_EAGER = True
    # the shared cache (Redis in the PostgreSQL pass) may hold keys of earlier tests
    monkeypatch.setattr(tasks, "KEY_PREFIX", f"test-{uuid.uuid4().hex}")
