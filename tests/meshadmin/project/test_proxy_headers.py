"""X-Forwarded-For and X-Forwarded-Proto count only from the reverse proxy (meshadmin/proxy.py):
from it, the client address (rate limits, audit, an agent's observed endpoint) and the scheme
follow the headers; from anyone else the headers are stripped before Django sees them."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from django.core.asgi import get_asgi_application

from meshadmin.proxy import ProxyHeadersMiddleware, parse_networks

PROXY = "10.250.0.2"
TRUSTED = parse_networks([PROXY, "fd00:250::/64"])


def _scope(peer: str, headers: dict[str, str], kind: str = "http") -> dict:
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme":
            "http" if kind == "http" else "ws", "path": "/api/enroll", "raw_path": b"/api/enroll",
            "query_string": b"", "client": (peer, 40000), "server": ("10.250.0.3", 8000),
            "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


async def _seen(peer: str, headers: dict[str, str], kind: str = "http") -> dict:
    got = {}

    async def app(scope, receive, send):
        got.update(scope)

    await ProxyHeadersMiddleware(app, TRUSTED)(_scope(peer, headers, kind), None, None)
    return got


@pytest.mark.parametrize(("peer", "headers", "client", "scheme"), [
    (PROXY, {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}, "198.51.100.7", "https"),
    # the left entries are the client's own claims: the nearest address outside the proxies wins
    (PROXY, {"X-Forwarded-For": "203.0.113.1, 198.51.100.7"}, "198.51.100.7", "http"),
    (PROXY, {"X-Forwarded-For": "198.51.100.7, fd00:250::9"}, "198.51.100.7", "http"),
    (PROXY, {"X-Forwarded-For": "not-an-address"}, PROXY, "http"),
    (PROXY, {"X-Forwarded-Proto": "gopher"}, PROXY, "http"),
    # not the proxy: nothing it says about itself counts
    ("198.51.100.7", {"X-Forwarded-For": "10.250.0.9", "X-Forwarded-Proto": "https"}, "198.51.100.7", "http"),
])
async def test_the_client_and_scheme_follow_the_headers_only_from_the_proxy(peer, headers, client, scheme):
    scope = await _seen(peer, headers)
    assert scope["client"][0] == client and scope["scheme"] == scheme
    names = {name for name, _ in scope["headers"]}
    assert (b"x-forwarded-for" in names or b"x-forwarded-proto" in names) == (peer == PROXY)


async def test_a_websocket_through_the_proxy_is_wss():
    scope = await _seen(PROXY, {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}, "websocket")
    assert scope["scheme"] == "wss" and scope["client"][0] == "198.51.100.7"


async def _post(app, peer: str, headers: dict[str, str]) -> int:
    scope = _scope(peer, headers)
    body = json.dumps({"token": "t" * 43, "name": "n", "public_key": "AAAA"}).encode()
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.django_db(transaction=True)
async def test_rate_limits_key_on_the_forwarded_client_only_behind_the_proxy(settings):
    settings.SHADOWMESH_RATE_LIMITS = {"enroll": 1, "auth": 0, "auth_peer": 0}
    app = ProxyHeadersMiddleware(get_asgi_application(), TRUSTED)
    a, b = (f"198.51.{secrets.randbelow(256)}.{i}" for i in (1, 2))  # fresh buckets in the shared cache
    via_proxy = [await _post(app, PROXY, {"X-Forwarded-For": ip}) for ip in (a, b, a)]
    assert via_proxy[:2] != [429, 429] and 429 not in via_proxy[:2] and via_proxy[2] == 429
    direct = f"198.51.{secrets.randbelow(256)}.3"
    forged = [await _post(app, direct, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in (1, 2)]
    assert forged[1] == 429  # a client that is not the proxy cannot pick a fresh bucket


def test_trust_proxy_https_without_trusted_proxies_is_refused(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "SHADOWMESH_DATA_DIR": str(tmp_path), "SHADOWMESH_TRUST_PROXY_HTTPS": "1",
           "SHADOWMESH_TRUSTED_PROXIES": ""}
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "manage.py", "check"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "SHADOWMESH_TRUSTED_PROXIES" in out.stderr
    env["SHADOWMESH_TRUSTED_PROXIES"] = "10.250.0.2,not-an-ip"
    out = subprocess.run([sys.executable, "manage.py", "check"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "not-an-ip" in out.stderr
