"""The ASGI handler (meshadmin/http_handler.py): Django's answers unchanged, with the middleware
chain and the view run in one trip to the request's thread instead of the 19 crossings between it
and the event loop that Django's own handler makes for an API request (each return to the loop
waits for it, and the loop also serves the agent sockets)."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref import sync as asgiref_sync
from django.core.handlers.asgi import ASGIHandler

from meshadmin.http_handler import SyncChainASGIHandler
from tests.meshadmin.asgi_client import asgi_request, http_scope

pytestmark = pytest.mark.django_db(transaction=True)  # the views run in threads of their own


async def _request(app, method: str, path: str, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes]:
    return await asgi_request(app, http_scope(method, path, headers), [body])


ENROLL = json.dumps({"token": "no-such-token", "name": "uk", "public_key": "AAAA"}).encode()
REQUESTS = [
    ("GET", "/api/schema", b"", {}),
    ("POST", "/api/enroll", ENROLL, {"content-type": "application/json"}),
    ("POST", "/api/enroll", b"{not json", {"content-type": "application/json"}),
    ("GET", "/login/", b"", {}),
    ("GET", "/no/such/page", b"", {}),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), REQUESTS)
def test_the_answers_are_djangos(method, path, body, headers):
    stock = asyncio.run(_request(ASGIHandler(), method, path, body, headers))
    ours = asyncio.run(_request(SyncChainASGIHandler(), method, path, body, headers))
    assert ours[0] == stock[0]
    assert ours[1].get("content-type") == stock[1].get("content-type")
    cookies = [sorted(c.split("=", 1)[0] for c in r[1].get("set-cookie", [])) for r in (stock, ours)]
    assert cookies[0] == cookies[1]
    if path != "/login/":  # the login form carries a fresh CSRF token each time
        assert ours[2] == stock[2]


def _count_crossings(monkeypatch) -> dict[str, int]:
    count = {"to_thread": 0, "to_loop": 0}
    to_thread, to_loop = asgiref_sync.SyncToAsync.__call__, asgiref_sync.AsyncToSync.__call__

    async def counted_to_thread(self, *args, **kwargs):
        count["to_thread"] += 1
        return await to_thread(self, *args, **kwargs)

    def counted_to_loop(self, *args, **kwargs):
        count["to_loop"] += 1
        return to_loop(self, *args, **kwargs)

    monkeypatch.setattr(asgiref_sync.SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(asgiref_sync.AsyncToSync, "__call__", counted_to_loop)
    return count


@pytest.mark.parametrize(("method", "path", "body", "headers"), REQUESTS[:2])
def test_a_request_crosses_to_its_thread_a_few_times_not_a_dozen(monkeypatch, method, path, body, headers):
    stock, ours = ASGIHandler(), SyncChainASGIHandler()
    count = _count_crossings(monkeypatch)
    asyncio.run(_request(stock, method, path, body, headers))
    stock_count = dict(count)
    count.update(to_thread=0, to_loop=0)
    asyncio.run(_request(ours, method, path, body, headers))
    # ours: the request_started signal, the chain, closing the response (and logging a 4xx)
    assert count["to_thread"] <= 4 and count["to_loop"] == 0, count
    assert stock_count["to_thread"] + stock_count["to_loop"] >= 2 * (count["to_thread"] + count["to_loop"]), (
        stock_count, count)
