"""Who may read /metrics (meshadmin/metrics/endpoint.py), through the real ASGI application of
meshadmin/asgi.py: loopback without credentials, anywhere else only with the bearer token, and
nothing but loopback while no token is set. "Loopback" is the client address of
meshadmin/client_address.py: a spoofed X-Forwarded-For from an untrusted hop changes nothing, and
behind a trusted proxy it is the client the proxy names, not the proxy."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from meshadmin.client_address import parse_trusted_proxies

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "m3tr1cs-t0ken-for-the-tests-0123456789"
PROXY = parse_trusted_proxies(["127.0.0.1", "198.18.7.1"])


def call(peer: str, headers: dict[str, str] | None = None, method: str = "GET", path: str = "/metrics"):
    from meshadmin.asgi import application

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": (peer, 50000), "server": ("127.0.0.1", 8000)}
    sent: list[dict] = []
    requested = []

    async def receive():
        if not requested:
            requested.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected until the answer is complete

    async def send(message):
        sent.append(message)

    asyncio.run(application(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "127.0.0.53"])
def test_loopback_scrapes_without_credentials_and_gets_prometheus_text(peer):
    status, headers, body = call(peer)
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain; version=")
    names = {m.name for m in text_string_to_metric_families(body.decode())}
    assert {"shadowmesh_agents_online", "shadowmesh_enrollments", "shadowmesh_auth_failures",
            "shadowmesh_netmap_push_seconds", "shadowmesh_metrics_source_up"} <= names


@pytest.mark.parametrize("peer", ["198.18.0.5", "::ffff:198.18.0.5", "2001:db8::5"])
def test_without_a_token_nothing_but_loopback_may_scrape(peer):
    status, _, body = call(peer)
    assert status == 403 and b"loopback only" in body
    assert call(peer, bearer("anything-at-all-0123456789"))[0] == 403  # no token set: none is right


@override_settings(SHADOWMESH_METRICS_TOKEN=TOKEN)
def test_elsewhere_the_bearer_token_is_needed_and_checked():
    status, headers, _ = call("198.18.0.5")
    assert status == 401 and headers[b"www-authenticate"].startswith(b"Bearer")
    assert call("198.18.0.5", bearer(TOKEN + "x"))[0] == 401
    assert call("198.18.0.5", bearer(TOKEN[:-1]))[0] == 401
    assert call("198.18.0.5", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert call("198.18.0.5", bearer())[0] == 200
    assert call("127.0.0.1")[0] == 200  # loopback still needs none


@pytest.mark.parametrize("token", [None, TOKEN])
def test_a_spoofed_forwarded_for_from_an_untrusted_hop_is_not_loopback(token):
    with override_settings(SHADOWMESH_METRICS_TOKEN=token, SHADOWMESH_TRUSTED_PROXIES=PROXY):
        for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
            value = "for=127.0.0.1" if header == "Forwarded" else "127.0.0.1"
            assert call("198.18.0.5", {header: value})[0] == (401 if token else 403), header


def test_a_local_proxy_that_is_not_trusted_does_not_make_its_clients_local():
    # nginx on this host, forgotten in SHADOWMESH_TRUSTED_PROXIES: its TCP peer is loopback, but
    # the request came from whoever it names
    assert call("127.0.0.1", {"X-Forwarded-For": "198.18.0.9"})[0] == 403
    assert call("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"})[0] == 403


@override_settings(SHADOWMESH_TRUSTED_PROXIES=PROXY, SHADOWMESH_METRICS_TOKEN=TOKEN)
def test_behind_a_trusted_proxy_the_client_it_names_is_judged():
    # the proxy itself is on loopback; the client behind it is not
    assert call("127.0.0.1", {"X-Forwarded-For": "198.18.0.9"})[0] == 401
    assert call("127.0.0.1", {"X-Forwarded-For": "198.18.0.9"} | bearer())[0] == 200
    # a client's own entry left of the proxy's is never reached
    assert call("198.18.7.1", {"X-Forwarded-For": "127.0.0.1, 198.18.0.9"})[0] == 401
    # a client on the proxy's own host is local
    assert call("198.18.7.1", {"X-Forwarded-For": "127.0.0.1"})[0] == 200


def test_other_methods_are_refused_and_other_paths_go_to_django():
    assert call("127.0.0.1", method="POST")[0] == 405
    status, _, body = call("127.0.0.1", method="HEAD")
    assert status == 200 and body == b""
    assert call("198.18.0.5", path="/metrics/")[0] != 403  # Django's, not the metrics endpoint's
