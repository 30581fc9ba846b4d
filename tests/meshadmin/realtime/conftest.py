"""Short deadlines for the agent websocket tests, and a clean cache (push de-duplication keys)."""

from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def quick_realtime(settings):
    settings.SHADOWMESH_AGENT_AUTH_TIMEOUT_S = 0.2
    settings.SHADOWMESH_NETMAP_DEBOUNCE_S = 0.2
    cache.clear()
    yield
    cache.clear()
