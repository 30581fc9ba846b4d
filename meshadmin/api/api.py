"""The NinjaAPI instance mounted at /api/: error shapes, OpenAPI at /api/schema, routers.

Every error body is {"detail": "..."}: service refusals carry their own status, request-shape
problems are 400 naming the field (ninja's default would be 422 with a list), a missing or bad
bearer token is 401.

Two kinds of caller: nodes (enrollment, auth, discovery: endpoints.py, a node's session token) and
operators (networks, nodes, tokens, routes: operator.py, an operator API key; docs/api.md).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from meshadmin.mesh.services.errors import ServiceError
from meshadmin.telemetry.api import router as telemetry_router

from .auth import BearerRefused
from .endpoints import router
from .operator import router as operator_router
from .operator_exits import router as exits_router
from .operator_policy import router as policy_router

__all__ = ["api"]

api = NinjaAPI(
    title="ShadowMesh control plane",
    version="1",
    description="Enrollment, ML-DSA-87 node authentication and peer discovery (docs/protocol.md#http-api).",
    openapi_url="/schema",
    docs_url="/docs",
    urls_namespace="api",
)


def _field_of(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    # ninja prefixes ("body", "<param name>"); the field is what follows
    if len(loc) >= 2 and loc[0] in ("body", "query", "path"):
        loc = loc[2:] if loc[0] == "body" else loc[1:]
    return ".".join(loc) or "body"


def _message_of(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = exc.errors or [{}]
    parts = [f"{_field_of(e)}: {_message_of(e)}" for e in errors[:5]]
    return api.create_response(request, {"detail": "; ".join(parts)}, status=400)


@api.exception_handler(ServiceError)
def _service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    response = api.create_response(request, {"detail": exc.detail}, status=exc.status)
    if isinstance(exc, BearerRefused):
        response["WWW-Authenticate"] = "Bearer"
    elif exc.status == 429:
        response["Retry-After"] = str(getattr(exc, "retry_after", 60))
    return response


@api.exception_handler(AuthenticationError)
def _authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = api.create_response(request, {"detail": "missing or invalid session token"}, status=401)
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": "not found"}, status=404)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


api.add_router("/", router)
api.add_router("/", operator_router)
api.add_router("/", exits_router)
api.add_router("/", policy_router)
api.add_router("/telemetry/", telemetry_router)
