"""X-Forwarded-Proto counts only from the reverse proxy (meshadmin/proxy.py): from it, the scheme
follows the header; from anyone else the header is removed before Django sees it. (Who the client
is, from X-Forwarded-For, is tests/meshadmin/project/test_client_address.py's subject.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshadmin.client_address import parse_trusted_proxies
from meshadmin.http_handler import SyncChainASGIHandler
from meshadmin.proxy import ForwardedProtoMiddleware
from tests.meshadmin.asgi_client import asgi_request

PROXY = "10.250.0.2"
TRUSTED = parse_trusted_proxies([PROXY, "fd00:250::/64"])
ROOT = Path(__file__).resolve().parents[3]


def _scope(peer: str, headers: dict[str, str], kind: str = "http", path: str = "/api/enroll") -> dict:
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http" if kind == "http" else "ws", "path": path, "raw_path": path.encode(),
            "query_string": b"", "client": (peer, 40000), "server": ("10.250.0.3", 8000),
            "headers": [(b"host", b"localhost")]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


async def _seen(peer: str, headers: dict[str, str], kind: str = "http") -> dict:
    got = {}

    async def app(scope, receive, send):
        got.update(scope)

    await ForwardedProtoMiddleware(app, TRUSTED)(_scope(peer, headers, kind), None, None)
    return got


@pytest.mark.parametrize(("peer", "proto", "scheme", "kept"), [
    (PROXY, "https", "https", True),
    ("fd00:250::7", "https", "https", True),
    (PROXY, "http", "http", True),
    (PROXY, "gopher", "http", True),     # not a scheme we know: left as it came
    ("198.51.100.7", "https", "http", False),  # not the proxy: the header is gone
    ("10.250.0.3", "https", "http", False),
])
async def test_the_scheme_follows_x_forwarded_proto_only_from_the_proxy(peer, proto, scheme, kept):
    scope = await _seen(peer, {"X-Forwarded-Proto": proto, "X-Forwarded-For": "203.0.113.9"})
    assert scope["scheme"] == scheme
    names = {name for name, _ in scope["headers"]}
    assert (b"x-forwarded-proto" in names) == kept
    assert b"x-forwarded-for" in names and scope["client"][0] == peer  # client_address.py's business


async def test_a_websocket_through_the_proxy_is_wss():
    assert (await _seen(PROXY, {"X-Forwarded-Proto": "https"}, "websocket"))["scheme"] == "wss"
    assert (await _seen("198.51.100.7", {"X-Forwarded-Proto": "https"}, "websocket"))["scheme"] == "ws"


async def _status(app, peer: str, headers: dict[str, str]) -> tuple[int, dict]:
    status, named, _ = await asgi_request(app, _scope(peer, headers, path="/api/schema"))
    return status, {k: v[-1] for k, v in named.items()}


@pytest.mark.django_db
def test_django_redirects_a_forged_https_claim_and_serves_the_proxys(settings):
    """With SHADOWMESH_TRUST_PROXY_HTTPS and the SSL redirect of production, a client that is not
    the proxy cannot claim https to dodge the redirect (or earn secure cookies)."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    app = ForwardedProtoMiddleware(SyncChainASGIHandler(), TRUSTED)  # the handler meshadmin.asgi serves
    status, headers = asyncio.run(_status(app, "198.51.100.7", {"X-Forwarded-Proto": "https"}))
    assert status == 301 and headers["location"].startswith("https://")
    status, _ = asyncio.run(_status(app, PROXY, {"X-Forwarded-Proto": "https"}))
    assert status == 200


def test_trust_proxy_https_without_trusted_proxies_is_refused(tmp_path):
    env = {**os.environ, "SHADOWMESH_DATA_DIR": str(tmp_path), "SHADOWMESH_TRUST_PROXY_HTTPS": "1",
           "SHADOWMESH_TRUSTED_PROXIES": ""}
    out = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "SHADOWMESH_TRUSTED_PROXIES" in out.stderr
