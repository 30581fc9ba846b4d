"""Walk the URLconf: every route that is not public refuses anonymous callers and leaks no data."""

import re

import pytest
from django.conf import settings
from django.shortcuts import resolve_url
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

# Routes meant for anonymous callers: the node enrollment/auth endpoints, the API description,
# the admin's login (and what it needs), static assets.
PUBLIC = [
    r"^api/enroll$",
    r"^api/auth/(challenge|verify)$",
    r"^api/schema$",
    r"^api/docs",
    r"^admin/login/",
    r"^admin/logout/",
    r"^admin/password_reset",
    r"^admin/r/",
    r"^admin/jsi18n/",
    r"^static/",
    r"^login/",  # the dashboard's login page
    r"^logout/",
]


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def _concrete(route: str, object_id: str, peer_id: str) -> str:
    route = route.lstrip("^").rstrip("$")
    route = re.sub(r"<(?:\w+:)?peer_id>", peer_id, route)
    route = re.sub(r"<(?:\w+:)?\w+>", object_id, route)
    route = re.sub(r"\(\?P<[^>]+>[^)]*\)", object_id, route)  # regex groups (admin app_label)
    return "/" + route.replace("\\", "")


def test_every_non_public_route_refuses_anonymous_callers(api, uk):
    from meshadmin.mesh.models import Node

    ident, _ = uk
    node = Node.objects.get(peer_id=ident.peer_id)
    secrets_in_body = [node.peer_id, node.name + "</", node.overlay_ip]
    checked = 0
    for route in sorted(set(_walk(get_resolver().url_patterns))):
        if any(re.match(p, route.lstrip("^")) for p in PUBLIC):
            continue
        url = _concrete(route, str(node.pk), node.peer_id)
        for method in ("get", "post"):
            response = getattr(api.client, method)(url)
            assert response.status_code in (301, 302, 401, 403, 404, 405), (method, url, response.status_code)
            if response.status_code in (301, 302):
                location = response["Location"]
                assert location.startswith(("/admin/login/", resolve_url(settings.LOGIN_URL))), (
                    url,
                    location,
                )
            body = response.content.decode("utf-8", "replace")
            for secret in secrets_in_body:
                assert secret not in body, (method, url)
        checked += 1
    assert checked >= 10  # the admin and the peer API were really walked
