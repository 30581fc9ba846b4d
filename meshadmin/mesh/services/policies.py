"""The access policy: tags (and which nodes carry them), groups, rules and the network's default.

Every write: validate -> transaction.atomic(save, bump the serial, audit) -> announce. Changes
that can alter what a node may reach announce ALL_NODES (every node's map is recomputed; each
socket sends only its delta); a tag no rule or group names changes nothing and announces nobody.
Callers (dashboard, API, management commands) pass plain values: names, selector strings, port
text; refusals are InvalidInput / Conflict naming the field.

Selectors (models/policies.py): "*", "tag:NAME", "group:NAME" (rules only), "node:NAME" or
"node:PEER_ID" (stored as the peer id; a name must pick exactly one active node of the network),
and "internet" (a rule's destinations only: addresses outside the mesh, through an exit node).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from django.db import IntegrityError, transaction
from django.db.models import F

from meshadmin.netmap import compute, snapshot
from meshadmin.netmap.policy import INTERNET
from nodeagent.protocol.identity import PEER_ID_RE
from nodeagent.protocol.policy import PORT_PROTOCOLS, canonical_ports, format_ports, parse_ports

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus, PolicyDefault, RuleProtocol
from ..models import AccessRule, Group, Network, Node, Tag
from .common import bump_serial, record_audit
from .errors import Conflict, InvalidInput

__all__ = [
    "EVERY_NODE",
    "MAX_SELECTORS",
    "clean_name",
    "clean_ports",
    "clean_selectors",
    "create_group",
    "create_rule",
    "create_tag",
    "delete_group",
    "delete_rule",
    "delete_tag",
    "ensure_tags",
    "move_rule",
    "reachability",
    "set_node_tags",
    "set_policy_default",
    "update_group",
    "update_rule",
]

EVERY_NODE = "*"
MAX_SELECTORS = 200
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NAME_RULE = "lowercase letters, digits, '-' and '_', 1..63, starting with a letter or digit"
SELECTOR_HELP = "*, tag:NAME, group:NAME or node:NAME"


def clean_name(value: str, field: str) -> str:
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{field}: a name ({NAME_RULE})")
    value = (value or "").strip()
    if not NAME_RE.match(value):
        raise InvalidInput(f"{field}: {value!r} is not a name ({NAME_RULE})")
    return value


Selectors = str | Sequence[str]  # "tag:web, node:db" or ["tag:web", "node:db"]
# "22, 8000-8080" or [[22, 22], [8000, 8080]]; "" or None: every port
Ports = str | Sequence[Sequence[int]] | None


def _selector_items(values: Selectors, field: str) -> list[str]:
    if isinstance(values, str):
        values = values.replace("\n", ",").split(",")
    elif not isinstance(values, list | tuple):
        raise InvalidInput(f"{field}: a list of selectors or comma-separated text ({SELECTOR_HELP})")
    items = []
    for v in values:
        if not isinstance(v, str):
            raise InvalidInput(f"{field}: selectors are strings ({SELECTOR_HELP})")
        if v.strip():
            items.append(v.strip())
    if len(items) > MAX_SELECTORS:
        raise InvalidInput(f"{field}: at most {MAX_SELECTORS} selectors")
    return items


def clean_selectors(network: Network, values: Selectors, field: str, *, groups: bool = True,
                    required: bool = True, internet: bool = False) -> list[str]:
    """Selectors that name what exists in `network`, canonical ("node:" + peer id), unique, in the
    given order; just ["*"] (and "internet" if named) when "*" is among them. "internet" only
    where `internet` allows it (a rule's destinations)."""
    out: list[str] = []
    items = _selector_items(values, field)
    if INTERNET in items and not internet:
        where = "a group's members are nodes and tags" if not groups else "it names no node"
        raise InvalidInput(f"{field}: 'internet' is only a rule's destination (traffic through an exit "
                           f"node); {where}")
    for item in items:
        kind, sep, name = item.partition(":")
        if item == EVERY_NODE:
            return [EVERY_NODE, *([INTERNET] if INTERNET in items else [])]
        if item == INTERNET:
            if INTERNET not in out:
                out.append(INTERNET)
            continue
        if not sep or not name:
            raise InvalidInput(f"{field}: {item!r} is not a selector ({SELECTOR_HELP})")
        if kind == "tag":
            if not Tag.objects.filter(network=network, name=name).exists():
                raise InvalidInput(f"{field}: no tag named {name!r} in network {network.name}")
            canonical = f"tag:{name}"
        elif kind == "group" and groups:
            if not Group.objects.filter(network=network, name=name).exists():
                raise InvalidInput(f"{field}: no group named {name!r} in network {network.name}")
            canonical = f"group:{name}"
        elif kind == "group":
            raise InvalidInput(f"{field}: a group's members are nodes and tags, not groups")
        elif kind == "node":
            canonical = f"node:{_node_peer_id(network, name, field)}"
        else:
            raise InvalidInput(f"{field}: {item!r} is not a selector ({SELECTOR_HELP})")
        if canonical not in out:
            out.append(canonical)
    if required and not out:
        raise InvalidInput(f"{field}: name at least one node ({SELECTOR_HELP})")
    return out


def _node_peer_id(network: Network, name: str, field: str) -> str:
    if PEER_ID_RE.match(name):
        if not Node.objects.filter(network=network, peer_id=name).exists():
            raise InvalidInput(f"{field}: no node with peer id {name} in network {network.name}")
        return name
    ids = list(Node.objects.filter(network=network, name=name, status=NodeStatus.ACTIVE)
               .values_list("peer_id", flat=True)[:2])
    if not ids:
        raise InvalidInput(f"{field}: no active node named {name!r} in network {network.name}")
    if len(ids) > 1:
        raise InvalidInput(f"{field}: several nodes are named {name!r}; name one by its peer id "
                           "(node:PEER_ID)")
    return ids[0]


def clean_ports(protocol: str, ports: Ports) -> list[list[int]]:
    """Port ranges as stored ([[lo, hi], ...]; [] = every port) from text ("22, 8000-8080") or pairs."""
    if protocol not in RuleProtocol.values:
        raise InvalidInput(f"protocol: must be one of {', '.join(RuleProtocol.values)}")
    if ports is not None and not isinstance(ports, str | list | tuple):
        raise InvalidInput("ports: text like '22, 8000-8080' or a list of [lo, hi] ranges")
    try:
        if ports is None or isinstance(ports, str):
            ranges = parse_ports(ports or "")
        else:
            ranges = canonical_ports(list(ports), "ports")
    except ValueError as exc:
        message = str(exc)
        raise InvalidInput(message if message.startswith("ports: ") else f"ports: {message}") from None
    if ranges and protocol not in PORT_PROTOCOLS:
        raise InvalidInput("ports: only tcp and udp rules name ports (leave it empty for this protocol)")
    return [[lo, hi] for lo, hi in ranges]


def _description(value: str | None) -> str:
    if value is not None and not isinstance(value, str):
        raise InvalidInput("description: must be text")
    value = (value or "").strip()
    if len(value) > 200 or any(ord(c) < 0x20 for c in value):
        raise InvalidInput("description: at most 200 characters, no control characters")
    return value


def _position(value: object, field: str = "position") -> int:
    """A 1-based position: an int (not a bool) or its decimal text."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if type(value) is not int or value < 1:
        raise InvalidInput(f"{field}: a whole number from 1")
    return value


def _uses(network_id: int, selector: str) -> list[str]:
    """What names `selector`: "rule N" and "group NAME" labels."""
    users = [f"rule {r.position}" for r in AccessRule.objects.filter(network_id=network_id)
             if selector in r.sources or selector in r.destinations]
    users += [f"group {g.name}" for g in Group.objects.filter(network_id=network_id) if selector in g.members]
    return users


# --------------------------------------------------------------------------- tags


def create_tag(network: Network, name: str, *, description: str = "", actor: str = "system") -> Tag:
    name = clean_name(name, "name")
    description = _description(description)
    try:
        with transaction.atomic():
            locked = bump_serial(network.pk)
            tag = Tag.objects.create(network=locked, name=name, description=description)
            record_audit(AuditAction.TAG_CREATED, actor=actor, network=locked, obj=tag, name=name)
            announce(Change(locked.pk, "tag.created", frozenset(), locked.serial))  # names nothing yet
    except IntegrityError:
        raise Conflict(f"name: a tag named {name!r} already exists in network {network.name}") from None
    return tag


def ensure_tags(network: Network, names: Iterable[str], *, actor: str = "system") -> list[Tag]:
    """The tags of these names, creating those that do not exist yet (each creation audited)."""
    out = []
    for name in dict.fromkeys(clean_name(n, "tag") for n in names):
        tag = Tag.objects.filter(network=network, name=name).first()
        if tag is None:
            try:
                tag = create_tag(network, name, actor=actor)
            except Conflict:  # created meanwhile
                tag = Tag.objects.get(network=network, name=name)
        out.append(tag)
    return out


def delete_tag(tag: Tag, *, actor: str = "system") -> None:
    """Delete a tag no rule or group names (it leaves the nodes and tokens that carried it)."""
    with transaction.atomic():
        locked = bump_serial(tag.network_id)
        users = _uses(tag.network_id, f"tag:{tag.name}")
        if users:
            raise Conflict(f"tag {tag.name} is used by {', '.join(users)}; change those first")
        carriers = tag.nodes.count()
        object_id, name = str(tag.pk), tag.name
        Tag.objects.filter(pk=tag.pk).delete()
        record_audit(AuditAction.TAG_DELETED, actor=actor, network=locked, object_type="tag",
                     object_id=object_id, name=name, nodes=carriers)
        announce(Change(locked.pk, "tag.deleted", frozenset(), locked.serial))  # no rule named it


def set_node_tags(node: Node, names: Iterable[str], *, actor: str = "system") -> Node:
    """The node carries exactly the tags `names` (each must exist in its network)."""
    if isinstance(names, str) or not isinstance(names, list | tuple | set | frozenset):
        raise InvalidInput("tags: a list of tag names")
    wanted = list(dict.fromkeys(clean_name(n, "tags") for n in names))
    with transaction.atomic():
        locked = bump_serial(node.network_id)
        tags = list(Tag.objects.filter(network_id=node.network_id, name__in=wanted))
        missing = sorted(set(wanted) - {t.name for t in tags})
        if missing:
            raise InvalidInput(f"tags: no tag named {missing[0]!r} in network {locked.name}")
        before = sorted(node.tags.values_list("name", flat=True))
        node.tags.set(tags)
        record_audit(AuditAction.NODE_TAGGED, actor=actor, network=locked, obj=node, peer_id=node.peer_id,
                     old=before, new=sorted(wanted))
        announce(Change(locked.pk, "node.tagged", ALL_NODES, locked.serial))
    return node


# --------------------------------------------------------------------------- groups


def create_group(network: Network, name: str, members: Selectors = (), *, description: str = "",
                 actor: str = "system") -> Group:
    name = clean_name(name, "name")
    members = clean_selectors(network, members, "members", groups=False, required=False)
    description = _description(description)
    try:
        with transaction.atomic():
            locked = bump_serial(network.pk)
            group = Group.objects.create(network=locked, name=name, members=members, description=description)
            record_audit(AuditAction.GROUP_CREATED, actor=actor, network=locked, obj=group, name=name,
                         members=members)
            announce(Change(locked.pk, "group.created", frozenset(), locked.serial))  # no rule names it yet
    except IntegrityError:
        raise Conflict(f"name: a group named {name!r} already exists in network {network.name}") from None
    return group


def update_group(group: Group, *, members: Selectors | None = None, description: str | None = None,
                 actor: str = "system") -> Group:
    """Change what is given (None keeps it). A group keeps its name: rules name it."""
    network = group.network
    members = group.members if members is None else clean_selectors(network, members, "members", groups=False,
                                                                    required=False)
    description = group.description if description is None else _description(description)
    with transaction.atomic():
        locked = bump_serial(network.pk)
        old = Group.objects.get(pk=group.pk).members
        Group.objects.filter(pk=group.pk).update(members=members, description=description)
        group.refresh_from_db()
        record_audit(AuditAction.GROUP_UPDATED, actor=actor, network=locked, obj=group, name=group.name,
                     old=old, new=members)
        announce(Change(locked.pk, "group.updated", ALL_NODES, locked.serial))
    return group


def delete_group(group: Group, *, actor: str = "system") -> None:
    with transaction.atomic():
        locked = bump_serial(group.network_id)
        users = [u for u in _uses(group.network_id, f"group:{group.name}") if u.startswith("rule")]
        if users:
            raise Conflict(f"group {group.name} is used by {', '.join(users)}; change those first")
        object_id, name = str(group.pk), group.name
        Group.objects.filter(pk=group.pk).delete()
        record_audit(AuditAction.GROUP_DELETED, actor=actor, network=locked, object_type="group",
                     object_id=object_id, name=name)
        announce(Change(locked.pk, "group.deleted", frozenset(), locked.serial))  # no rule named it


# --------------------------------------------------------------------------- rules


def _rule_fields(network: Network, sources: Selectors, destinations: Selectors, protocol: str, ports: Ports,
                 description: str | None) -> dict:
    if not isinstance(protocol, str):
        raise InvalidInput(f"protocol: must be one of {', '.join(RuleProtocol.values)}")
    protocol = protocol.strip().lower()
    return {
        "sources": clean_selectors(network, sources, "sources"),
        "destinations": clean_selectors(network, destinations, "destinations", internet=True),
        "ports": clean_ports(protocol, ports),
        "protocol": protocol,
        "description": _description(description),
    }


def _summary(rule: AccessRule) -> dict:
    return {"position": rule.position, "sources": rule.sources, "destinations": rule.destinations,
            "protocol": rule.protocol, "ports": format_ports(tuple((lo, hi) for lo, hi in rule.ports))}


def create_rule(network: Network, *, sources: Selectors, destinations: Selectors, protocol: str = "any",
                ports: Ports = None, description: str = "", position: int | str | None = None,
                actor: str = "system") -> AccessRule:
    """Add a rule at `position` (1-based; the end when None or past it)."""
    fields = _rule_fields(network, sources, destinations, protocol, ports, description)
    wanted = None if position is None else _position(position)
    with transaction.atomic():
        locked = bump_serial(network.pk)
        count = AccessRule.objects.filter(network=locked).count()
        at = count + 1 if wanted is None else min(wanted, count + 1)
        AccessRule.objects.filter(network=locked, position__gte=at).update(position=F("position") + 1)
        rule = AccessRule.objects.create(network=locked, position=at, **fields)
        record_audit(AuditAction.RULE_CREATED, actor=actor, network=locked, obj=rule, **_summary(rule))
        announce(Change(locked.pk, "rule.created", ALL_NODES, locked.serial))
    return rule


def update_rule(rule: AccessRule, *, sources: Selectors | None = None, destinations: Selectors | None = None,
                protocol: str | None = None, ports: Ports = None, description: str | None = None,
                actor: str = "system") -> AccessRule:
    """Change what is given; None keeps it (a new protocol without ports: every port, or the
    current ports when the protocol still takes them)."""
    current = AccessRule.objects.get(pk=rule.pk)
    if ports is None and (protocol is None or str(protocol).strip().lower() in PORT_PROTOCOLS):
        ports = current.ports
    fields = _rule_fields(rule.network, current.sources if sources is None else sources,
                          current.destinations if destinations is None else destinations,
                          current.protocol if protocol is None else protocol, ports,
                          current.description if description is None else description)
    with transaction.atomic():
        locked = bump_serial(rule.network_id)
        old = _summary(AccessRule.objects.get(pk=rule.pk))
        AccessRule.objects.filter(pk=rule.pk).update(**fields)
        rule.refresh_from_db()
        record_audit(AuditAction.RULE_UPDATED, actor=actor, network=locked, obj=rule, old=old,
                     new=_summary(rule))
        announce(Change(locked.pk, "rule.updated", ALL_NODES, locked.serial))
    return rule


def move_rule(rule: AccessRule, position: int | str, *, actor: str = "system") -> AccessRule:
    """Move a rule to `position` (1-based, clamped); the others close up. Order is for people:
    rules only allow, so it changes no node's map, but it is audited and bumps the serial."""
    position = _position(position)
    with transaction.atomic():
        locked = bump_serial(rule.network_id)
        current = AccessRule.objects.get(pk=rule.pk)
        count = AccessRule.objects.filter(network_id=rule.network_id).count()
        to = min(position, count)
        was = current.position
        if to < was:
            AccessRule.objects.filter(network_id=rule.network_id, position__gte=to, position__lt=was) \
                .update(position=F("position") + 1)
        elif to > was:
            AccessRule.objects.filter(network_id=rule.network_id, position__gt=was, position__lte=to) \
                .update(position=F("position") - 1)
        AccessRule.objects.filter(pk=rule.pk).update(position=to)
        rule.refresh_from_db()
        record_audit(AuditAction.RULE_MOVED, actor=actor, network=locked, obj=rule, old=was, new=to)
        announce(Change(locked.pk, "rule.moved", frozenset(), locked.serial))  # order allows nothing
    return rule


def delete_rule(rule: AccessRule, *, actor: str = "system") -> None:
    with transaction.atomic():
        locked = bump_serial(rule.network_id)
        current = AccessRule.objects.get(pk=rule.pk)
        summary, object_id = _summary(current), str(current.pk)
        AccessRule.objects.filter(pk=rule.pk).delete()
        AccessRule.objects.filter(network_id=rule.network_id, position__gt=current.position) \
            .update(position=F("position") - 1)
        record_audit(AuditAction.RULE_DELETED, actor=actor, network=locked, object_type="accessrule",
                     object_id=object_id, **summary)
        announce(Change(locked.pk, "rule.deleted", ALL_NODES, locked.serial))


def set_policy_default(network: Network, default: str, *, actor: str = "system") -> Network:
    if not isinstance(default, str) or default not in PolicyDefault.values:
        raise InvalidInput(f"default: must be one of {', '.join(PolicyDefault.values)}")
    with transaction.atomic():
        locked = bump_serial(network.pk)
        old = locked.policy_default
        Network.objects.filter(pk=network.pk).update(policy_default=default)
        locked.refresh_from_db()
        record_audit(AuditAction.POLICY_DEFAULT_CHANGED, actor=actor, network=locked, obj=locked, old=old,
                     new=default)
        announce(Change(locked.pk, "policy.default", ALL_NODES, locked.serial))
    network.refresh_from_db()
    return network


# --------------------------------------------------------------------------- reading


def reachability(node: Node) -> dict:
    """Who can reach `node` and what it can reach, as the netmaps say now: {"node": peer id,
    "isolated": bool (it filters inbound), "reached_by": [...], "reaches": [...], "internet"}, each
    entry {"peer_id", "name", "everything": bool, "allowed": [{"protocol", "ports"}]} (ports as
    text, "" = every port), by name; "internet" is {"everything", "allowed"} for what it may send
    to the internet through an exit node, or None when the network has no other approved exit
    node. Replies to an allowed flow always pass and are not listed. A node without a netmap
    (revoked, or without an overlay address) reaches nothing and nobody reaches it."""
    view = compute.view(snapshot.load(node.network_id))
    me = next((m for m in view.members if m.pk == node.pk), None)
    out: dict = {"node": node.peer_id, "isolated": False, "reached_by": [], "reaches": [], "internet": None}
    if me is None:
        return out
    access = view.access
    out["isolated"] = bool((access.isolated >> access.bit[me.pk]) & 1)

    def allowed(a) -> dict:
        return {"everything": a.everything,
                "allowed": [{"protocol": proto, "ports": format_ports(ports)} for proto, ports in a.allowed]}

    def entry(other, a) -> dict:
        return {"peer_id": other.peer_id, "name": other.name, **allowed(a)}

    if access.exits & ~(1 << access.bit[me.pk]):
        out["internet"] = allowed(access.internet_access(me))

    for other in sorted(view.members, key=lambda m: (m.name, m.peer_id)):
        if other.pk == me.pk:
            continue
        inbound, outbound = access.access(other, me), access.access(me, other)
        if inbound:
            out["reached_by"].append(entry(other, inbound))
        if outbound:
            out["reaches"].append(entry(other, outbound))
    return out
