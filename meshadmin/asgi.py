"""ASGI entry point: `daphne meshadmin.asgi:application`.

HTTP goes to Django (meshadmin/http_handler.py: its middleware and views in one thread), except
`/metrics` (meshadmin/metrics/endpoint.py, answered before Django); WebSocket connections are
routed by meshadmin/routing.py. In front of all of them, X-Forwarded-Proto counts only from
SHADOWMESH_TRUSTED_PROXIES (meshadmin/proxy.py).

Under Daphne a request body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused as it arrives
(meshadmin/body_cap.py), before Daphne keeps it. Once all of it is loaded, the process's
garbage collector is set for thousands of long-lived sockets (meshadmin/gc_tuning.py,
SHADOWMESH_GC_THRESHOLD).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshadmin.settings")
django.setup(set_prefix=False)  # what get_asgi_application does, before anything touches models

from meshadmin.http_handler import SyncChainASGIHandler  # noqa: E402

django_asgi_app = SyncChainASGIHandler()  # Django's, with the middleware chain run in one thread

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from meshadmin import body_cap, gc_tuning  # noqa: E402
from meshadmin.metrics.endpoint import MetricsEndpoint  # noqa: E402
from meshadmin.proxy import ForwardedProtoMiddleware  # noqa: E402
from meshadmin.routing import websocket_urlpatterns  # noqa: E402

application = ForwardedProtoMiddleware(
    ProtocolTypeRouter(
        {
            "http": MetricsEndpoint(django_asgi_app),
            "websocket": URLRouter(websocket_urlpatterns),
        }
    ),
    settings.SHADOWMESH_TRUSTED_PROXIES,
)

if settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None:  # refuse big bodies as they arrive, not once kept
    body_cap.install(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
gc_tuning.configure(settings.SHADOWMESH_GC_THRESHOLD)  # last: what exists now lives as long as the process
