"""Bodies of the operator operations (meshadmin/api/operator.py). Requests forbid unknown fields.

Values JSON Schema cannot fully describe carry a `format` naming the rule, stated in their
description: shadowmesh-label (a node's name: 1..63 bytes of UTF-8 once surrounding spaces are
stripped, no control characters) and shadowmesh-prefix (an IPv4 or IPv6 network prefix with no
host bits set, like 192.168.1.0/24)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import Field, StrictBool, StrictStr

from meshadmin.mesh.services.tokens import MAX_TOKEN_TTL, MAX_TOKEN_USES

from .schemas import JsonInt, Request

__all__ = [
    "PEER_ID_PATTERN", "EndpointOut", "ExitNodeOut", "ExitOfferIn", "NetworkOut",
    "NodeOut", "NodePatchIn", "NodeRouteOut", "RouteCreateIn",
    "RouteOut", "RoutesSetIn", "TokenCreateIn", "TokenCreatedOut", "TokenOut",
]

PEER_ID_PATTERN = "^[0-9a-f]{40}$"
MAX_ROUTES_PER_REQUEST = 256


def _format(name: str, description: str) -> dict[str, Any]:
    return {"json_schema_extra": {"format": name, "description": description}}


Label = Annotated[StrictStr, Field(min_length=1, max_length=63, **_format(
    "shadowmesh-label", "1..63 bytes of UTF-8 after stripping surrounding spaces, no control characters"))]
Prefix = Annotated[StrictStr, Field(min_length=1, max_length=43, **_format(
    "shadowmesh-prefix", "an IPv4 or IPv6 network prefix without host bits, like 192.168.1.0/24 "
    "(not a default route: those make exit nodes)"))]
PeerId = Annotated[StrictStr, Field(pattern=PEER_ID_PATTERN, description="a node's peer id")]


class NetworkOut(Schema):
    name: str
    overlay_cidr: str
    serial: int = Field(description="goes up with every change that reaches the nodes' netmaps")
    nodes: int = Field(description="active nodes")
    created_at: datetime


class EndpointOut(Schema):
    ip: str
    port: int | None
    udp_port: int | None
    is_public: bool


class NodeRouteOut(Schema):
    id: int
    prefix: str
    approved: bool


class NodeOut(Schema):
    peer_id: str
    name: str
    network: str
    status: Literal["active", "revoked"]
    overlay_ip: str | None = Field(description="none once revoked")
    online: bool = Field(description="connected to the server now")
    last_seen: datetime | None
    is_public: bool
    is_relay: bool
    ephemeral: bool = Field(description="deleted once silent for SHADOWMESH_EPHEMERAL_AFTER_S")
    agent_version: str
    enrolled_at: datetime
    revoked_at: datetime | None
    certificate_expires_at: datetime | None
    endpoint: EndpointOut | None = Field(description="the discovery record, while it is live")
    routes: list[NodeRouteOut] = Field(description="subnets reachable through this node")
    exit_node: Literal["none", "pending", "approved"] = Field(
        description="whether the node offers itself as an exit node, and whether that is approved")
    use_exit: str | None = Field(description="the peer id of the exit node an operator chose for this node")


class NodePatchIn(Request):
    name: Label | None = Field(
        default=None, description="a new name; the certificate keeps the old one until renewed")
    exit_node: PeerId | None = Field(default=None, description=(
        "the peer id of an exit node of the network for this node's internet traffic; null: none "
        "(absent: unchanged)"))


class ExitNodeOut(Schema):
    peer_id: str
    name: str
    network: str
    state: Literal["none", "pending", "approved"] = Field(
        description="pending: offered, waiting for approval; approved: nodes may use it")
    used_by: list[str] = Field(description="peer ids of the nodes an operator pointed at it")


class ExitOfferIn(Request):
    approved: StrictBool = Field(default=False, description="approve the offer at once")


class RoutesSetIn(Request):
    prefixes: list[Prefix] = Field(max_length=MAX_ROUTES_PER_REQUEST, description=(
        "every subnet route through the node after the call: missing ones are added, others removed "
        "(default routes, which make an exit node, are left alone)"))
    approved: StrictBool = Field(
        default=False, description="approve the listed routes (new and pending ones)")


class RouteOut(Schema):
    id: int
    network: str
    prefix: str
    via: str = Field(description="the peer id of the node the subnet is reached through")
    via_name: str
    approved: bool
    created_at: datetime


class RouteCreateIn(Request):
    via: PeerId
    prefix: Prefix
    approved: StrictBool = False


class TokenOut(Schema):
    id: int
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    network: str
    uses: int
    uses_left: int
    is_public: bool
    ephemeral: bool
    state: Literal["active", "used", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the token itself, shown this once: only its hash is stored")


class TokenCreateIn(Request):
    network: Label | None = Field(
        default=None, description="an existing network; absent: the default one (created if there is none)")
    uses: JsonInt = Field(default=1, ge=1, le=MAX_TOKEN_USES)
    expires_in: JsonInt = Field(default=86400, ge=1, le=int(MAX_TOKEN_TTL.total_seconds()),
                                description="seconds until the token expires")
    is_public: StrictBool = Field(default=False, description="nodes enrolled with it may be public hubs")
    ephemeral: StrictBool = Field(default=False, description=(
        "nodes enrolled with it are deleted once silent for SHADOWMESH_EPHEMERAL_AFTER_S (CI runners, "
        "containers)"))
