"""WebSocket routes, mounted by meshadmin/asgi.py.

This is the hook for the realtime layer: append `path(...)` entries for the agent and dashboard
consumers to `websocket_urlpatterns`. Each consumer does its own authentication (agents: signed
challenge in the first frame; browsers: session + origin check), since agents send no Origin.
"""

from meshadmin.dashboard.routing import websocket_urlpatterns as dashboard_websockets

websocket_urlpatterns: list = [*dashboard_websockets]
