"""Personas for the dashboard tests.

People: `admin` (staff), `viewer` (member of the read-only group), `outsider` (an account with
neither). Mesh: the `default` network with `uk` (public hub), `belgium` and a node whose name is
an XSS probe, all enrolled through the real enrollment service with real ML-DSA-87 keys.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils.crypto import get_random_string

XSS_NAME = "<script>alert(1)</script>"
PASSWORD = "correct horse battery staple 42"


@pytest.fixture(autouse=True)
def fresh_cache():
    """Login-failure counters live in the cache; each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def admin_user(db):
    return User.objects.create_user("alice", password=PASSWORD, is_staff=True)


@pytest.fixture
def viewer_user(db):
    from meshadmin.mesh.permissions import VIEWER_GROUP

    user = User.objects.create_user("victor", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
    return user


@pytest.fixture
def outsider_user(db):
    return User.objects.create_user("oscar", password=PASSWORD)


def _client_for(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.fixture
def admin(admin_user):
    return _client_for(admin_user)


@pytest.fixture
def viewer(viewer_user):
    return _client_for(viewer_user)


@pytest.fixture
def outsider(outsider_user):
    return _client_for(outsider_user)


@pytest.fixture
def network(db):
    from meshadmin.mesh.services.networks import get_or_create_network

    return get_or_create_network("default")


@pytest.fixture
def enroll_node(network):
    """enroll_node(name, public=False) -> Node, through the enrollment service."""
    from meshadmin.mesh.services.enrollment import enroll
    from meshadmin.mesh.services.tokens import create_token

    def make(name: str, public: bool = False):
        _, token = create_token(network, uses=1, ttl=timedelta(hours=1), is_public=public)
        key = mldsa.MLDSA87PrivateKey.generate()
        result = enroll(token=token, name=name, public_key=key.public_key().public_bytes_raw(),
                        is_public=public)
        return result.node

    return make


@pytest.fixture
def mesh(enroll_node):
    """The three nodes of the default network: uk (public hub), belgium, and the XSS probe."""
    return {"uk": enroll_node("uk", public=True), "belgium": enroll_node("belgium"),
            "xss": enroll_node(XSS_NAME)}


def _csrf_post(client: Client, path: str, data: dict | None = None):
    if "csrftoken" not in client.cookies:
        client.cookies["csrftoken"] = get_random_string(32)
    token = client.cookies["csrftoken"].value
    return client.post(path, {**(data or {}), "csrfmiddlewaretoken": token})


@pytest.fixture
def csrf_post():
    """csrf_post(client, path, data) -> response: POST as a browser does, cookie + matching token."""
    return _csrf_post
