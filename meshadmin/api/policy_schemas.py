"""Bodies of the access-policy operations (meshadmin/api/operator_policy.py; docs/policy.md says
what tags, groups, rules and the default mean). Requests forbid unknown fields.

Selectors are "*", "tag:NAME", "group:NAME" (rules only) or "node:NAME"/"node:PEER_ID"; the names
must exist in the network (services/policies.py checks them, naming the field). Ports are text like
"22, 8000-8080" ("" or absent: every port; tcp and udp only)."""

from __future__ import annotations

from typing import Annotated, Literal

from ninja import Schema
from pydantic import BeforeValidator, Field, StrictInt, StrictStr

from .schemas import Request, integral

__all__ = [
    "NAME_PATTERN", "GroupIn", "GroupOut", "GroupPatchIn", "NodeTagsIn", "PolicyDefaultIn", "ReachOut",
    "RuleIn", "RuleMoveIn", "RuleOut", "RulePatchIn", "TagIn", "TagOut",
]

NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$"
SELECTOR_PATTERN = (r"^(\*|tag:[a-z0-9][a-z0-9_-]{0,62}|group:[a-z0-9][a-z0-9_-]{0,62}"
                    r"|node:[^\x00-\x1f,]{1,63})$")
MAX_SELECTORS = 200

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN, description=(
    "lowercase letters, digits, '-' and '_', 1..63, starting with a letter or digit"))]
NetworkName = Annotated[StrictStr, Field(min_length=1, max_length=63, description="an existing network")]
Selector = Annotated[StrictStr, Field(pattern=SELECTOR_PATTERN, description=(
    "*, tag:NAME, group:NAME or node:NAME (or node:PEER_ID); the name must exist in the network"))]
DESTINATION_PATTERN = SELECTOR_PATTERN.replace("^(\\*|", "^(\\*|internet|", 1)
Destination = Annotated[StrictStr, Field(pattern=DESTINATION_PATTERN, description=(
    "a selector (*, tag:NAME, group:NAME, node:NAME or node:PEER_ID) or internet: the addresses "
    "outside the mesh, through an exit node"))]
MEMBER_PATTERN = r"^(\*|tag:[a-z0-9][a-z0-9_-]{0,62}|node:[^\x00-\x1f,]{1,63})$"
Member = Annotated[StrictStr, Field(pattern=MEMBER_PATTERN, description=(
    "*, tag:NAME or node:NAME (or node:PEER_ID): a group holds nodes and tags, not groups"))]
Position = Annotated[StrictInt, Field(ge=1, le=1_000_000), BeforeValidator(integral)]
Description = Annotated[StrictStr, Field(max_length=200, pattern=r"^[^\x00-\x1f]*$", description=(
    "at most 200 characters, no control characters"))]
Protocol = Literal["any", "tcp", "udp", "icmp"]
Ports = Annotated[StrictStr, Field(max_length=1000, json_schema_extra={"format": "shadowmesh-ports"},
                                   description=(
    "tcp and udp only: ports 1..65535 and ranges LO-HI (LO <= HI) separated by commas, like "
    "'22, 8000-8080'; empty: every port"))]


class TagOut(Schema):
    id: int
    network: str
    name: str
    description: str
    nodes: list[str] = Field(description="peer ids of the nodes that carry it")


class TagIn(Request):
    network: NetworkName = "default"
    name: Name
    description: Description = ""


class NodeTagsIn(Request):
    tags: list[Name] = Field(max_length=MAX_SELECTORS, description="the tags the node carries after the call")


class GroupOut(Schema):
    id: int
    network: str
    name: str
    description: str
    members: list[str] = Field(description="selectors: *, tag:NAME or node:PEER_ID")


class GroupIn(Request):
    network: NetworkName = "default"
    name: Name
    members: list[Member] = Field(default_factory=list, max_length=MAX_SELECTORS)
    description: Description = ""


class GroupPatchIn(Request):
    members: list[Member] | None = Field(default=None, max_length=MAX_SELECTORS)
    description: Description | None = None


class RuleOut(Schema):
    id: int
    network: str
    position: int = Field(description="1-based; order is for people: rules only allow")
    sources: list[str]
    destinations: list[str]
    protocol: Protocol
    ports: str = Field(description="'' = every port")
    description: str


class RuleIn(Request):
    network: NetworkName = "default"
    sources: list[Selector] = Field(min_length=1, max_length=MAX_SELECTORS)
    destinations: list[Destination] = Field(min_length=1, max_length=MAX_SELECTORS)
    protocol: Protocol = "any"
    ports: Ports = ""
    description: Description = ""
    position: Position | None = Field(default=None, description="1-based; absent or past the end: the end")


class RulePatchIn(Request):
    sources: list[Selector] | None = Field(default=None, min_length=1, max_length=MAX_SELECTORS)
    destinations: list[Destination] | None = Field(default=None, min_length=1, max_length=MAX_SELECTORS)
    protocol: Protocol | None = None
    ports: Ports | None = None
    description: Description | None = None


class RuleMoveIn(Request):
    position: Position = Field(description="1-based; past the end: the end")


class PolicyDefaultIn(Request):
    default: Literal["allow", "deny"]


class _Allowed(Schema):
    protocol: str
    ports: str


class _Reach(Schema):
    peer_id: str
    name: str
    everything: bool
    allowed: list[_Allowed]


class _InternetReach(Schema):
    everything: bool
    allowed: list[_Allowed]


class ReachOut(Schema):
    node: str
    isolated: bool = Field(description="the node filters what it receives")
    reached_by: list[_Reach]
    reaches: list[_Reach]
    internet: _InternetReach | None = Field(default=None, description=(
        "what the node may send to the internet through an exit node; null when the network has "
        "no other approved exit node"))
