"""Which networks an operator API key reaches: every network, or the one it was made for.

A key made for one network (`createapikey --network NAME`, the dashboard's *Network* field) sees
and changes that network only. Everything of another network is answered as if it did not
exist: the same 404 as an unknown name or id, lists without it. So a key cannot even learn that
other networks exist. Every operator operation resolves what it touches through these helpers
(tests/meshadmin/api/test_key_scope.py calls every operation of the schema with a key of another
network)."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet
from django.http import HttpRequest

from meshadmin.mesh.models import Network, Node
from meshadmin.mesh.services.errors import NotFound
from meshadmin.mesh.services.networks import get_or_create_network

from .auth import request_key

__all__ = ["default_network", "find_network", "find_node", "in_reach", "key_network_id", "network_named",
           "scoped"]

M = TypeVar("M", bound=Model)


def key_network_id(request: HttpRequest) -> int | None:
    """The id of the one network the request's key may see; None: every network."""
    return request_key(request).network_id


def find_network(request: HttpRequest, name: str | None, field: str = "network") -> Network | None:
    """The network `name` names, if the key reaches it; None when no name was given. NotFound
    naming `field` otherwise."""
    return None if name is None else network_named(request, name, field)


def network_named(request: HttpRequest, name: str, field: str = "network") -> Network:
    """The network `name` names, if the key reaches it; NotFound naming `field` otherwise."""
    rows = Network.objects.filter(name=name)
    scope = key_network_id(request)
    if scope is not None:
        rows = rows.filter(pk=scope)
    network = rows.first()
    if network is None:
        raise NotFound(f"{field}: no such network")
    return network


def default_network(request: HttpRequest, actor: str) -> Network:
    """The network a write that names none goes to: the key's own, else the default one."""
    scope = key_network_id(request)
    if scope is not None:
        return Network.objects.get(pk=scope)
    return get_or_create_network(actor=actor)


def scoped(request: HttpRequest, rows: QuerySet[M], name: str | None,
           field: str = "network__id") -> QuerySet[M]:
    """`rows` of the network `name` names (NotFound when the key cannot see it), else of the
    key's network, else all of them. `field` is the lookup of a row's network id."""
    network = find_network(request, name)
    if network is not None:
        return rows.filter(**{field: network.pk})
    scope = key_network_id(request)
    return rows if scope is None else rows.filter(**{field: scope})


def in_reach(request: HttpRequest, row: M | None, network_id: int | None, missing: str) -> M:
    """`row` when it exists and belongs to a network the key reaches; NotFound(`missing`) else."""
    scope = key_network_id(request)
    if row is None or (scope is not None and network_id != scope):
        raise NotFound(missing)
    return row


def find_node(request: HttpRequest, peer_id: str, missing: str = "no such node") -> Node:
    node = Node.objects.select_related("network").filter(peer_id=peer_id).first()
    return in_reach(request, node, node.network_id if node is not None else None, missing)
