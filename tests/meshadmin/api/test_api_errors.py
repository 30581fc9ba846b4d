"""API quality: every error is JSON {"detail": ...}; bad shapes are 400 naming the field."""

import base64
import secrets

import pytest

from tests.meshadmin.asgi_client import asgi_request, http_scope

pytestmark = pytest.mark.django_db

PUBLIC_POSTS = ["/api/enroll", "/api/auth/challenge", "/api/auth/verify"]


def test_an_unknown_field_is_a_400_naming_it(api, make_token, identity_factory):
    ident = identity_factory()
    body = {
        "token": make_token(),
        "name": "x",
        "public_key": base64.b64encode(ident.public_key).decode(),
        "admin": True,
    }
    response = api.post("/api/enroll", body)
    assert response.status_code == 400
    assert response.json() == {"detail": "admin: unknown field"}


@pytest.mark.parametrize("value", ["%%%", "YWJj\n", "YWJ", "YW=J", "  ", "ä", 12])
def test_malformed_base64_is_a_400_naming_the_field(api, make_token, value):
    response = api.post("/api/enroll", {"token": make_token(), "name": "x", "public_key": value})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("public_key:")


def test_malformed_base64_in_verify_names_the_field(api):
    response = api.post(
        "/api/auth/verify", {"peer_id": "ab" * 20, "challenge": "AAAA", "signature": "not base64!"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("signature:")


def test_a_missing_field_is_a_400_naming_it(api):
    response = api.post("/api/enroll", {"name": "x", "public_key": "AAAA"})
    assert response.status_code == 400
    assert response.json() == {"detail": "token: field required"}


@pytest.mark.parametrize("body", ["{", "[]", "null", '"text"', "", b"\xff\xfe"])
@pytest.mark.parametrize("path", PUBLIC_POSTS)
def test_a_body_that_is_not_a_json_object_is_a_400(api, path, body):
    response = api.post(path, body)
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


def test_a_wrongly_typed_value_is_a_400_naming_it(api):
    response = api.post("/api/auth/challenge", {"peer_id": 5})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("peer_id:")


@pytest.mark.parametrize("path", PUBLIC_POSTS)
def test_a_body_over_64_kib_is_a_413(api, path):
    response = api.post(path, {"token": "x" * (64 * 1024)})
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_body_of_exactly_the_limit_is_not_refused_for_its_size(api):
    padding = 64 * 1024 - len('{"peer_id": ""}')
    response = api.post("/api/auth/challenge", '{"peer_id": "' + " " * padding + '"}')
    assert response.status_code != 413


async def _asgi_post(path: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """POST through the real ASGI application with a chunked body (no Content-Length)."""
    from meshadmin.asgi import application

    scope = http_scope("POST", path, {"content-type": "application/json"})
    status, _, body = await asgi_request(application, scope, chunks)
    return status, body


async def test_a_10_mb_chunked_body_without_content_length_is_a_413():
    status, body = await _asgi_post("/api/enroll", [b"x" * (1024 * 1024)] * 10)
    assert status == 413
    assert b"larger than" in body


def test_the_openapi_schema_is_served_at_api_schema(api):
    response = api.get("/api/schema")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in [
        "/api/enroll",
        "/api/auth/challenge",
        "/api/auth/verify",
        "/api/peers/register",
        "/api/peers/{peer_id}",
    ]:
        assert path in paths, path
    assert "EnrollIn" in schema["components"]["schemas"]


def test_an_unknown_api_path_is_a_json_404(api):
    response = api.get("/api/nothing-here")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("scope", "path", "body"),
    [
        ("enroll", "/api/enroll", {"token": "t", "name": "n", "public_key": "AAAA"}),
        ("auth", "/api/auth/challenge", {"peer_id": "ab" * 20}),
        ("auth", "/api/auth/verify", {"peer_id": "ab" * 20, "challenge": "AAAA", "signature": "AAAA"}),
    ],
)
def test_too_many_requests_from_one_address_get_429(settings, api_factory, scope, path, body):
    settings.SHADOWMESH_RATE_LIMITS = {"enroll": 3, "auth": 3, "auth_peer": 0}
    # fresh addresses: the counters live in the shared cache (Redis in the PostgreSQL pass)
    octets = secrets.token_bytes(2)
    noisy = api_factory(f"198.19.{octets[0]}.{octets[1]}")
    codes = [noisy.post(path, body).status_code for _ in range(5)]
    assert codes[:3] != [429] * 3 and 429 not in codes[:3]
    assert codes[3:] == [429, 429]
    limited = noisy.post(path, body)
    assert limited.json()["detail"].startswith("too many")
    assert limited["Retry-After"] == "60"
    # another address has its own budget; a forged X-Forwarded-For does not buy one
    assert api_factory(f"198.18.{octets[0]}.{octets[1]}").post(path, body).status_code != 429
    assert noisy.post(path, body, HTTP_X_FORWARDED_FOR="198.18.0.99").status_code == 429


async def test_a_small_chunked_body_reaches_the_api_intact():
    status, body = await _asgi_post("/api/auth/challenge", [b'{"peer_id": "ab",', b' "extra": 1}'])
    assert status == 400
    assert b"extra: unknown field" in body
