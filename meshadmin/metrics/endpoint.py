"""`GET /metrics`: Prometheus text, in front of Django (asgi.py), for loopback or the bearer token.

Who may scrape, judged on the client address of meshadmin/client_address.py (the TCP peer, or
the client a trusted proxy names in X-Forwarded-For):
  - `Authorization: Bearer <SHADOWMESH_METRICS_TOKEN>` from anywhere, when the token is set
    (compared in constant time);
  - without it, a loopback client only. A request that comes through a proxy which is not in
    SHADOWMESH_TRUSTED_PROXIES (it carries X-Forwarded-For or Forwarded, but its TCP peer is not
    a trusted proxy) is not taken for a local one even when that proxy runs on this host: its
    real client is unknown. Such a proxy should be listed, or the scraper given the token.
Anything else: 401 (with `WWW-Authenticate: Bearer`) when a token is set, 403 when none is (so
nothing but loopback can scrape). Only GET and HEAD; other methods 405.

The answer is built in a worker thread (the database and, in multiprocess mode, the files of
prometheus-client): this process's event counters (events.py), or in multiprocess mode those of
every process writing to PROMETHEUS_MULTIPROC_DIR, then the gauges of shared state (state.py),
then, in single-process mode, prometheus-client's own process_* and python_* families.
The endpoint sits outside Django on purpose: no session, CSRF, host-name check or HTTPS redirect
stands between a scraper on the internal network and the text (the token does that job).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.conf import settings
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from meshadmin.client_address import is_trusted_proxy, scope_client_ip

from . import events
from .state import StateCollector

if TYPE_CHECKING:
    from asgiref.typing import HTTPScope

__all__ = ["MetricsEndpoint", "scrape_allowed"]

log = logging.getLogger(__name__)

PATH = "/metrics"
_FORWARDING = (b"x-forwarded-for", b"forwarded", b"x-real-ip")

_registry: CollectorRegistry | None = None


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry() -> CollectorRegistry:
    """The registry a scrape reads (built once per process)."""
    global _registry
    if _registry is None:
        reg = CollectorRegistry(auto_describe=True)
        path = multiprocess_dir()
        if path is not None:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(reg, path=path)
        else:
            for metric in events.ALL:
                reg.register(metric)
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        reg.register(StateCollector())
        _registry = reg
    return _registry


def _header(scope: HTTPScope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _bearer(scope: HTTPScope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _loopback_client(scope: HTTPScope) -> bool:
    client = scope.get("client")
    peer = client[0] if client else None
    trusted = getattr(settings, "SHADOWMESH_TRUSTED_PROXIES", ())
    if not is_trusted_proxy(peer, trusted) and any(_header(scope, h) is not None for h in _FORWARDING):
        return False  # an unlisted proxy (or a client pretending to be one) stands in front
    address = scope_client_ip(scope)
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def scrape_allowed(scope: HTTPScope) -> tuple[bool, int]:
    """(allowed, status when not): the rules of the module docstring."""
    token = getattr(settings, "SHADOWMESH_METRICS_TOKEN", None)
    presented = _bearer(scope)
    if token and presented is not None and hmac.compare_digest(presented.encode(), token.encode()):
        return True, 200
    if _loopback_client(scope):
        return True, 200
    return False, 401 if token else 403


def _render() -> bytes:
    return generate_latest(registry())


async def _respond(send, status: int, body: bytes, content_type: str, head_only: bool = False,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


_DENIED = {
    401: b"metrics need Authorization: Bearer <SHADOWMESH_METRICS_TOKEN> from this address\n",
    403: b"metrics are served to loopback only (set SHADOWMESH_METRICS_TOKEN to scrape from elsewhere)\n",
}


class MetricsEndpoint:
    """ASGI middleware: answers `/metrics` itself and passes everything else to `app`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("path") != PATH:
            return await self.app(scope, receive, send)
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            return await _respond(send, 405, b"GET or HEAD only\n", "text/plain; charset=utf-8",
                                  extra=[(b"allow", b"GET, HEAD")])
        allowed, status = scrape_allowed(scope)
        if not allowed:
            extra = [(b"www-authenticate", b'Bearer realm="metrics"')] if status == 401 else None
            return await _respond(send, status, _DENIED[status], "text/plain; charset=utf-8", extra=extra)
        body = await database_sync_to_async(_render)()
        await _respond(send, 200, body, CONTENT_TYPE_LATEST, head_only=method == "HEAD")
