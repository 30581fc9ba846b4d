"""Personas and helpers for the meshadmin tests.

Personas: the `default` network; `uk` (a public hub, enrolled with a public token), `belgium`
and `mac` (ordinary nodes). Each identity is a real ML-DSA-87 key pair made for the test.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from django.test import Client

from nodeagent.protocol.auth import sign_agent_login
from nodeagent.protocol.constants import CONTEXT_AUTH
from nodeagent.protocol.identity import peer_id


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Identity:
    key: mldsa.MLDSA87PrivateKey
    ca_public_key: bytes | None = None  # the network's CA, once enrolled (the websocket login binds it)

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes_raw()

    @property
    def peer_id(self) -> str:
        return peer_id(self.public_key)

    def sign_auth(self, challenge: bytes) -> bytes:
        """The HTTP login (/api/auth/verify)."""
        return self.key.sign(challenge, CONTEXT_AUTH)

    def sign_login(self, nonce: bytes) -> bytes:
        """The websocket login (docs/protocol.md#connection-and-authentication)."""
        assert self.ca_public_key is not None, "enroll first: the login names the network's CA"
        return sign_agent_login(self.key, self.ca_public_key, nonce)


class ApiClient:
    """A Django test client that speaks JSON and remembers a bearer token."""

    def __init__(self, remote_addr: str = "127.0.0.1") -> None:
        self.client = Client(REMOTE_ADDR=remote_addr)
        self.bearer: str | None = None

    def _headers(self):
        return {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}

    def post(self, path: str, body, **extra):
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.client.post(path, data, content_type="application/json", headers=self._headers(), **extra)

    def get(self, path: str, **extra):
        return self.client.get(path, headers=self._headers(), **extra)

    # --- the HTTP API flows (docs/protocol.md#http-api)
    def enroll(self, token: str, ident: Identity, name: str, **fields):
        return self.post(
            "/api/enroll", {"token": token, "name": name, "public_key": b64(ident.public_key), **fields}
        )

    def login(self, ident: Identity) -> str:
        challenge = base64.b64decode(
            self.post("/api/auth/challenge", {"peer_id": ident.peer_id}).json()["challenge"]
        )
        response = self.post(
            "/api/auth/verify",
            {
                "peer_id": ident.peer_id,
                "challenge": b64(challenge),
                "signature": b64(ident.sign_auth(challenge)),
            },
        )
        assert response.status_code == 200, response.content
        self.bearer = response.json()["session_token"]
        return self.bearer


@pytest.fixture(scope="session", autouse=True)
def pooled_connections_closed_at_the_end(django_db_setup):
    """With PostgreSQL the settings give each process a connection pool, which keeps connections
    open when Django closes its own, and async tests reach the database from asgiref's thread,
    whose connection nothing closes: at the end of the session pytest-django could not drop the
    test database ("being accessed by other users"). Both are closed first (this fixture's
    teardown runs before django_db_setup's)."""
    yield
    import asyncio

    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(connections.close_all)())  # the thread async tests' queries ran in
    connections.close_all()
    for conn in connections.all():
        if hasattr(conn, "close_pool"):  # the PostgreSQL backend
            conn.close_pool()


@pytest.fixture(autouse=True)
def channel_layer_of_its_own(monkeypatch):
    """Each test gets a channel layer object of its own, as each server process has one.

    A layer object keeps state bound to the event loop that used it: the Redis layer's per-channel
    receive locks (asyncio locks, bound to a loop once a receive has had to wait, and kept while a
    receive's backup cleaner is in flight), the in-memory layer's groups. Every async test runs on
    a loop of its own, so a layer shared by the whole test process carried one test's leftovers
    into the next: in the PostgreSQL pass a receive failed with "Lock ... is bound to a different
    event loop", depending on which tests ran before it."""
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    monkeypatch.setitem(channel_layers.backends, DEFAULT_CHANNEL_LAYER,
                        channel_layers.make_backend(DEFAULT_CHANNEL_LAYER))


@pytest.fixture(autouse=True)
def generous_rate_limits(settings, monkeypatch):
    """Most tests send many requests from 127.0.0.1; the rate-limit tests set their own limits.
    Each test counts in a namespace of its own (the counters live in the shared cache, Redis in
    the PostgreSQL pass, where earlier tests left theirs), and inside one window: a test that
    happened to straddle the end of a minute would see its counts start again."""
    settings.SHADOWMESH_RATE_LIMITS = {"enroll": 0, "auth": 0, "auth_peer": 0}
    from meshadmin.mesh.services import ratelimit

    monkeypatch.setattr(ratelimit, "KEY_PREFIX", f"ratelimit-test-{uuid.uuid4().hex}")
    held = time.time()
    monkeypatch.setattr(ratelimit, "clock", lambda: held)


@pytest.fixture
def identity_factory():
    return lambda: Identity(mldsa.MLDSA87PrivateKey.generate())


@pytest.fixture
def network(db):
    from meshadmin.mesh.services.networks import get_or_create_network

    return get_or_create_network("default")


@pytest.fixture
def make_token(network):
    """make_token(uses=1, ttl=1h, is_public=False, network=default) -> plaintext."""
    from meshadmin.mesh.services.tokens import create_token

    def make(uses: int = 1, ttl: timedelta = timedelta(hours=1), is_public: bool = False, net=None) -> str:
        return create_token(net or network, uses=uses, ttl=ttl, is_public=is_public)[1]

    return make


@pytest.fixture
def api():
    return ApiClient()


@pytest.fixture
def enrolled(api, make_token, identity_factory):
    """enrolled(name, public=False) -> (Identity, enroll response JSON)."""

    def enroll(name: str, public: bool = False):
        ident = identity_factory()
        response = api.enroll(
            make_token(is_public=public), ident, name, **({"is_public": True} if public else {})
        )
        assert response.status_code == 201, response.content
        ident.ca_public_key = base64.b64decode(response.json()["ca_public_key"])
        return ident, response.json()

    return enroll


@pytest.fixture
def uk(enrolled):
    return enrolled("uk", public=True)


@pytest.fixture
def belgium(enrolled):
    return enrolled("belgium")


@pytest.fixture
def mac(enrolled):
    return enrolled("mac")


@pytest.fixture
def api_factory():
    """api_factory(remote_addr="127.0.0.1") -> a fresh ApiClient (one per node)."""
    return ApiClient
