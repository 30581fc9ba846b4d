"""The access policy in the operator API: tags (and the tags of a node), groups, rules (with their
order) and a network's default, and who can reach a node (services/policies.py;
docs/api.md#access-policy). Each write is the service the dashboard's policy editor calls: audited
as the key, pushed to the nodes whose maps it changes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db.models import Prefetch
from django.http import HttpRequest
from ninja import Path, Router, Status

from meshadmin.mesh.models import AccessRule, Group, Network, Node, Tag
from meshadmin.mesh.services import policies
from meshadmin.mesh.services.errors import Conflict, InvalidInput
from nodeagent.protocol.policy import format_ports

from .auth import OperatorKeyAuth
from .operator import PeerIdPath, key_actor
from .policy_schemas import (
    GroupIn,
    GroupOut,
    GroupPatchIn,
    NodeTagsIn,
    PolicyDefaultIn,
    ReachOut,
    RuleIn,
    RuleMoveIn,
    RuleOut,
    RulePatchIn,
    TagIn,
    TagOut,
)
from .schemas import ErrorOut
from .scope import find_node, in_reach, key_network_id, network_named, scoped

__all__ = ["router"]

router = Router(auth=OperatorKeyAuth(), tags=["access policy"])

_READ_ERRORS: dict[int, type[ErrorOut]] = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 429: ErrorOut}
_WRITE_ERRORS: dict[int, type[ErrorOut]] = {**_READ_ERRORS, 403: ErrorOut, 409: ErrorOut}
IdPath = Path(..., ge=1, le=2**63 - 1)
Json = dict[str, Any]


_ABSENT = re.compile(r"^\w+: no (tag|group|node|active node) (named|with peer id) ")


@contextmanager
def _absent_is_409() -> Iterator[None]:
    """A well-formed selector or tag name that names nothing in the network is 409, the detail
    naming the field: the request is valid, and conflicts with what the network holds now (not
    404, which would say the rule or group itself is gone)."""
    try:
        yield
    except InvalidInput as exc:
        if _ABSENT.match(exc.detail):
            raise Conflict(exc.detail) from None
        raise


def _network(request: HttpRequest, payload: Any) -> Network:
    """The network a write's body names; when it names none, the key's own network (a key made
    for one network), else "default"."""
    scope = key_network_id(request)
    if "network" not in payload.model_fields_set and scope is not None:
        return Network.objects.get(pk=scope)
    return network_named(request, payload.network)


# --------------------------------------------------------------------------- tags


def _tag_out(tag: Tag) -> Json:
    return {"id": tag.pk, "network": tag.network.name, "name": tag.name, "description": tag.description,
            "nodes": sorted(n.peer_id for n in tag.nodes.all())}


def _tag(request: HttpRequest, tag_id: int) -> Tag:
    tag = Tag.objects.select_related("network").prefetch_related("nodes").filter(pk=tag_id).first()
    return in_reach(request, tag, tag.network_id if tag is not None else None, "no such tag")


@router.get("/tags", response={200: list[TagOut], **_READ_ERRORS})
def list_tags(request: HttpRequest, network: str | None = None) -> list[Json]:
    rows = scoped(request, Tag.objects.select_related("network").prefetch_related(
        Prefetch("nodes", queryset=Node.objects.only("pk", "peer_id"))).order_by("network__name", "name"),
                  network)
    return [_tag_out(t) for t in rows]


@router.post("/tags", response={201: TagOut, **_WRITE_ERRORS})
def post_tag(request: HttpRequest, payload: TagIn) -> Status[Json]:
    tag = policies.create_tag(_network(request, payload), payload.name, description=payload.description,
                              actor=key_actor(request))
    return Status(201, _tag_out(_tag(request, tag.pk)))


@router.delete("/tags/{tag_id}", response={204: None, **_WRITE_ERRORS})
def delete_tag(request: HttpRequest, tag_id: int = IdPath) -> Status[None]:
    """Delete a tag no rule or group names (409 otherwise); the nodes that carried it lose it."""
    policies.delete_tag(_tag(request, tag_id), actor=key_actor(request))
    return Status(204, None)


@router.put("/nodes/{peer_id}/tags", response={200: list[str], **_WRITE_ERRORS}, tags=["nodes"])
def put_node_tags(request: HttpRequest, payload: NodeTagsIn, peer_id: str = PeerIdPath) -> list[str]:
    """Set the tags a node carries (each must exist in its network); the node's tags after the call."""
    with _absent_is_409():
        node = policies.set_node_tags(find_node(request, peer_id), list(payload.tags),
                                      actor=key_actor(request))
    return sorted(node.tags.values_list("name", flat=True))


@router.get("/nodes/{peer_id}/reach", response={200: ReachOut, **_READ_ERRORS}, tags=["nodes"])
def get_reach(request: HttpRequest, peer_id: str = PeerIdPath) -> Json:
    """Who can reach the node and what it can reach, as the netmaps say now."""
    return policies.reachability(find_node(request, peer_id))


# --------------------------------------------------------------------------- groups


def _group_out(group: Group) -> Json:
    return {"id": group.pk, "network": group.network.name, "name": group.name,
            "description": group.description, "members": list(group.members)}


def _group(request: HttpRequest, group_id: int) -> Group:
    group = Group.objects.select_related("network").filter(pk=group_id).first()
    return in_reach(request, group, group.network_id if group is not None else None, "no such group")


@router.get("/groups", response={200: list[GroupOut], **_READ_ERRORS})
def list_groups(request: HttpRequest, network: str | None = None) -> list[Json]:
    rows = scoped(request, Group.objects.select_related("network").order_by("network__name", "name"),
                  network)
    return [_group_out(g) for g in rows]


@router.post("/groups", response={201: GroupOut, **_WRITE_ERRORS})
def post_group(request: HttpRequest, payload: GroupIn) -> Status[Json]:
    with _absent_is_409():
        group = policies.create_group(_network(request, payload), payload.name, list(payload.members),
                                      description=payload.description, actor=key_actor(request))
    return Status(201, _group_out(_group(request, group.pk)))


@router.patch("/groups/{group_id}", response={200: GroupOut, **_WRITE_ERRORS})
def patch_group(request: HttpRequest, payload: GroupPatchIn, group_id: int = IdPath) -> Json:
    """Change a group's members or description (a group keeps its name: rules name it)."""
    with _absent_is_409():
        group = policies.update_group(
            _group(request, group_id), members=None if payload.members is None else list(payload.members),
            description=payload.description, actor=key_actor(request))
    return _group_out(group)


@router.delete("/groups/{group_id}", response={204: None, **_WRITE_ERRORS})
def delete_group(request: HttpRequest, group_id: int = IdPath) -> Status[None]:
    """Delete a group no rule names (409 otherwise)."""
    policies.delete_group(_group(request, group_id), actor=key_actor(request))
    return Status(204, None)


# --------------------------------------------------------------------------- rules and the default


def _rule_out(rule: AccessRule) -> Json:
    return {"id": rule.pk, "network": rule.network.name, "position": rule.position,
            "sources": list(rule.sources), "destinations": list(rule.destinations), "protocol": rule.protocol,
            "ports": format_ports(tuple((lo, hi) for lo, hi in rule.ports)), "description": rule.description}


def _rule(request: HttpRequest, rule_id: int) -> AccessRule:
    rule = AccessRule.objects.select_related("network").filter(pk=rule_id).first()
    return in_reach(request, rule, rule.network_id if rule is not None else None, "no such rule")


@router.get("/rules", response={200: list[RuleOut], **_READ_ERRORS})
def list_rules(request: HttpRequest, network: str | None = None) -> list[Json]:
    """The rules in order (network by network)."""
    rows = scoped(request, AccessRule.objects.select_related("network").order_by("network__name", "position"),
                  network)
    return [_rule_out(r) for r in rows]


@router.post("/rules", response={201: RuleOut, **_WRITE_ERRORS})
def post_rule(request: HttpRequest, payload: RuleIn) -> Status[Json]:
    """Allow traffic from `sources` to `destinations` (protocol, ports); at `position` or the end."""
    with _absent_is_409():
        rule = policies.create_rule(
            _network(request, payload), sources=list(payload.sources),
            destinations=list(payload.destinations),
            protocol=payload.protocol, ports=payload.ports, description=payload.description,
            position=payload.position, actor=key_actor(request))
    return Status(201, _rule_out(_rule(request, rule.pk)))


@router.patch("/rules/{rule_id}", response={200: RuleOut, **_WRITE_ERRORS})
def patch_rule(request: HttpRequest, payload: RulePatchIn, rule_id: int = IdPath) -> Json:
    """Change what is given; the rest stays."""
    with _absent_is_409():
        rule = policies.update_rule(
            _rule(request, rule_id), sources=None if payload.sources is None else list(payload.sources),
            destinations=None if payload.destinations is None else list(payload.destinations),
            protocol=payload.protocol, ports=payload.ports, description=payload.description,
            actor=key_actor(request))
    return _rule_out(rule)


@router.post("/rules/{rule_id}/move", response={200: list[RuleOut], **_WRITE_ERRORS})
def post_rule_move(request: HttpRequest, payload: RuleMoveIn, rule_id: int = IdPath) -> list[Json]:
    """Move a rule (the others close up); the network's rules in their new order."""
    rule = policies.move_rule(_rule(request, rule_id), payload.position, actor=key_actor(request))
    return [_rule_out(r) for r in AccessRule.objects.select_related("network").filter(
        network_id=rule.network_id).order_by("position")]


@router.delete("/rules/{rule_id}", response={204: None, **_WRITE_ERRORS})
def delete_rule(request: HttpRequest, rule_id: int = IdPath) -> Status[None]:
    policies.delete_rule(_rule(request, rule_id), actor=key_actor(request))
    return Status(204, None)


@router.put("/networks/{name}/policy-default", response={200: PolicyDefaultIn, **_WRITE_ERRORS},
            tags=["networks"])
def put_policy_default(request: HttpRequest, payload: PolicyDefaultIn,
                       name: str = Path(..., min_length=1, max_length=63)) -> Json:
    """What the network allows where no rule speaks: allow (every node accepts everything no rule
    restricts) or deny (nodes accept only what the rules allow)."""
    network = policies.set_policy_default(network_named(request, name, "name"), payload.default,
                                          actor=key_actor(request))
    return {"default": network.policy_default}
