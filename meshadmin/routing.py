"""WebSocket routes, mounted by meshadmin/asgi.py.

This is the hook for the realtime layer: append `path(...)` entries for the agent and dashboard
consumers to `websocket_urlpatterns`. Each consumer does its own authentication (agents: signed
challenge in the first frame; browsers: session + origin check), since agents send no Origin.
"""

from django.urls import path

from meshadmin.dashboard.routing import websocket_urlpatterns as dashboard_websockets
from meshadmin.realtime.consumers import AgentConsumer

websocket_urlpatterns: list = [
    # channels routes ASGI applications with django's path(), whose stubs expect a view
    path("ws/agent/", AgentConsumer.as_asgi()),  # type: ignore[arg-type]  # no origin check/cookies: the agent signs a challenge
    *dashboard_websockets,
]
