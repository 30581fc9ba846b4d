"""Dashboard pages of the access policy: the editor (default, rules, tags, groups), a node's tags,
and the reachability view ("who can reach X / what can X reach").

Same pattern as views.py: check the form's shape -> call a service (meshadmin/mesh/services/
policies.py validates, audits and announces the change, so every agent gets its new netmap at
once) -> message -> redirect. A refusal re-renders the page with status 400 and the service's
message next to the field it names.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from meshadmin.mesh.choices import NodeStatus
from meshadmin.mesh.models import AccessRule, Network, Node, Tag
from meshadmin.mesh.models import Group as PolicyGroup
from meshadmin.mesh.services import ServiceError
from meshadmin.mesh.services import policies as svc
from meshadmin.mesh.services.common import user_actor
from meshadmin.telemetry import queries as telemetry
from nodeagent.protocol.policy import format_ports

from . import queries
from .forms import (
    GroupForm,
    MoveRuleForm,
    NodeTagsForm,
    PolicyDefaultForm,
    RuleForm,
    TagForm,
    service_error_to_form,
)
from .permissions import dashboard_view
from .views import render_page

__all__ = [
    "group_create",
    "group_delete",
    "group_edit",
    "node_tags",
    "policy",
    "policy_default",
    "reach",
    "rule_create",
    "rule_delete",
    "rule_edit",
    "rule_move",
    "tag_create",
    "tag_delete",
]

DROPS_WINDOW = timedelta(hours=1)
# the page's live regions (live.js re-fetches each after a change): element id -> template partial
POLICY_REGIONS = {"policy-rules": "rules", "policy-tags": "tags", "policy-groups": "groups",
                  "policy-reach": "reach", "policy-drops": "drops"}


def _network(request: HttpRequest) -> Network:
    name = request.POST.get("network") or request.GET.get("network")
    network = queries.pick_network(name)
    if network is None:
        raise Http404("no network yet: enroll a node first")
    return network


def policy_url(network: Network, anchor: str = "") -> str:
    return f"{reverse('dashboard:policy')}?network={network.name}{anchor}"


def _rule_initial(rule: AccessRule) -> dict:
    return {"sources": ", ".join(_selector_text(s, rule.network_id) for s in rule.sources),
            "destinations": ", ".join(_selector_text(s, rule.network_id) for s in rule.destinations),
            "protocol": rule.protocol, "ports": format_ports(tuple((lo, hi) for lo, hi in rule.ports)),
            "description": rule.description}


def _selector_text(selector: str, network_id: int) -> str:
    """A stored selector as people write it: node:PEER_ID -> node:NAME when the name is unique."""
    kind, _, value = selector.partition(":")
    if kind != "node":
        return selector
    names = list(Node.objects.filter(network_id=network_id, peer_id=value).values_list("name", flat=True))
    if not names or any(c in names[0] for c in ",\n"):  # a name the selector text cannot carry
        return selector
    twins = Node.objects.filter(network_id=network_id, name=names[0], status=NodeStatus.ACTIVE).count()
    return f"node:{names[0]}" if twins == 1 else selector


def _page(request: HttpRequest, network: Network, *, rule_form: RuleForm | None = None,
          tag_form: TagForm | None = None, group_form: GroupForm | None = None,
          default_form: PolicyDefaultForm | None = None, status: int | None = None) -> HttpResponse:
    # Lazy: a live region's refresh renders one partial and reads only what that partial shows
    node_names = SimpleLazyObject(
        lambda: dict(Node.objects.filter(network=network).values_list("peer_id", "name")))

    def label(selector: str) -> str:
        kind, _, value = selector.partition(":")
        return f"node:{node_names.get(value, value[:12])}" if kind == "node" else selector

    def rule_rows() -> list[dict]:
        return [{"rule": r, "sources": [label(s) for s in r.sources],
                 "destinations": [label(s) for s in r.destinations],
                 "ports": format_ports(tuple((lo, hi) for lo, hi in r.ports))}
                for r in AccessRule.objects.filter(network=network).order_by("position", "pk")]

    def group_rows() -> list[dict]:
        return [{"group": g, "members": [label(s) for s in g.members]}
                for g in PolicyGroup.objects.filter(network=network).order_by("name")]

    tags = Tag.objects.filter(network=network).order_by("name")
    nodes = SimpleLazyObject(lambda: list(Node.objects.filter(network=network, status=NodeStatus.ACTIVE)
                                          .order_by("name").prefetch_related("tags")))

    def drop_rows() -> list[dict]:
        now = timezone.now()
        denied = telemetry.denied_frames(network.pk, now - DROPS_WINDOW, now)
        return [{"node": n, "total": sum(denied.get(n.pk, {}).values()),
                 "from": sorted(((node_names.get(p, p[:12]), c) for p, c in denied.get(n.pk, {}).items()),
                                key=lambda x: -x[1])}
                for n in nodes if denied.get(n.pk)]

    return render_page(request, "dashboard/policy.html", {
        "network": network,
        "networks": Network.objects.all(),
        "rules": SimpleLazyObject(rule_rows),
        "groups": SimpleLazyObject(group_rows),
        "tags": tags,
        "nodes": nodes,
        "drops": SimpleLazyObject(drop_rows),
        "rule_form": rule_form or RuleForm(),
        "tag_form": tag_form or TagForm(),
        "group_form": group_form or GroupForm(),
        "default_form": default_form or PolicyDefaultForm(initial={"default": network.policy_default}),
    }, regions=POLICY_REGIONS, status=status, live_url=policy_url(network))


@require_GET
@dashboard_view
def policy(request: HttpRequest) -> HttpResponse:
    if not Network.objects.exists():  # a fresh install: the first token makes the network
        return render_page(request, "dashboard/policy_empty.html", {})
    return _page(request, _network(request))


@require_POST
@dashboard_view
def policy_default(request: HttpRequest) -> HttpResponse:
    network = _network(request)
    form = PolicyDefaultForm(request.POST)
    if form.is_valid():
        try:
            svc.set_policy_default(network, form.cleaned_data["default"], actor=user_actor(request.user))
        except ServiceError as exc:
            service_error_to_form(form, exc)
    if not form.is_valid():
        return _page(request, network, default_form=form, status=400)
    messages.success(request, f"Default for {network.name}: {network.policy_default}.")
    return redirect(policy_url(network))


# --------------------------------------------------------------------------- rules


@require_POST
@dashboard_view
def rule_create(request: HttpRequest) -> HttpResponse:
    network = _network(request)
    form = RuleForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            rule = svc.create_rule(network, sources=d["sources"], destinations=d["destinations"],
                                   protocol=d["protocol"], ports=d["ports"], description=d["description"],
                                   position=d["position"], actor=user_actor(request.user))
        except ServiceError as exc:
            service_error_to_form(form, exc)
    if not form.is_valid():
        return _page(request, network, rule_form=form, status=400)
    messages.success(request, f"Rule {rule.position} added; every node gets it now.")
    return redirect(policy_url(network))


@require_http_methods(["GET", "POST"])
@dashboard_view
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(AccessRule.objects.select_related("network"), pk=pk)
    if request.method == "GET":
        form = RuleForm(initial=_rule_initial(rule))
        return render_page(request, "dashboard/policy_rule.html", {"rule": rule, "form": form})
    form = RuleForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            svc.update_rule(rule, sources=d["sources"], destinations=d["destinations"],
                            protocol=d["protocol"], ports=d["ports"], description=d["description"],
                            actor=user_actor(request.user))
            if d["position"] and d["position"] != rule.position:
                svc.move_rule(rule, d["position"], actor=user_actor(request.user))
        except ServiceError as exc:
            service_error_to_form(form, exc)
    if not form.is_valid():
        return render_page(request, "dashboard/policy_rule.html", {"rule": rule, "form": form}, status=400)
    messages.success(request, f"Rule {rule.position} saved; every node gets it now.")
    return redirect(policy_url(rule.network))


@require_POST
@dashboard_view
def rule_move(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(AccessRule.objects.select_related("network"), pk=pk)
    form = MoveRuleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "position: a whole number from 1")
        return redirect(policy_url(rule.network))
    try:
        svc.move_rule(rule, form.cleaned_data["position"], actor=user_actor(request.user))
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Rule moved to position {rule.position}.")
    return redirect(policy_url(rule.network))


@require_POST
@dashboard_view
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(AccessRule.objects.select_related("network"), pk=pk)
    network, position = rule.network, rule.position
    try:
        svc.delete_rule(rule, actor=user_actor(request.user))
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Rule {position} deleted; every node gets the change now.")
    return redirect(policy_url(network))


# --------------------------------------------------------------------------- tags and groups


@require_POST
@dashboard_view
def tag_create(request: HttpRequest) -> HttpResponse:
    network = _network(request)
    form = TagForm(request.POST)
    if form.is_valid():
        try:
            tag = svc.create_tag(network, form.cleaned_data["name"],
                                 description=form.cleaned_data["description"], actor=user_actor(request.user))
        except ServiceError as exc:
            service_error_to_form(form, exc)
    if not form.is_valid():
        return _page(request, network, tag_form=form, status=400)
    messages.success(request, f"Tag {tag.name} created.")
    return redirect(policy_url(network, "#tags"))


@require_POST
@dashboard_view
def tag_delete(request: HttpRequest, pk: int) -> HttpResponse:
    tag = get_object_or_404(Tag.objects.select_related("network"), pk=pk)
    try:
        svc.delete_tag(tag, actor=user_actor(request.user))
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Tag {tag.name} deleted.")
    return redirect(policy_url(tag.network, "#tags"))


@require_POST
@dashboard_view
def group_create(request: HttpRequest) -> HttpResponse:
    network = _network(request)
    form = GroupForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            group = svc.create_group(network, d["name"], d["members"], description=d["description"],
                                     actor=user_actor(request.user))
        except ServiceError as exc:
            service_error_to_form(form, exc)
    if not form.is_valid():
        return _page(request, network, group_form=form, status=400)
    messages.success(request, f"Group {group.name} created.")
    return redirect(policy_url(network, "#groups"))


@require_http_methods(["GET", "POST"])
@dashboard_view
def group_edit(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(PolicyGroup.objects.select_related("network"), pk=pk)
    if request.method == "GET":
        members = ", ".join(_selector_text(s, group.network_id) for s in group.members)
        form = GroupForm(initial={"name": group.name, "description": group.description, "members": members})
        return render_page(request, "dashboard/policy_group.html", {"group": group, "form": form})
    form = GroupForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        if d["name"].strip() != group.name:
            form.add_error("name", "a group keeps its name (rules name it); create a new group instead")
        else:
            try:
                svc.update_group(group, members=d["members"], description=d["description"],
                                 actor=user_actor(request.user))
            except ServiceError as exc:
                service_error_to_form(form, exc)
    if not form.is_valid():
        return render_page(request, "dashboard/policy_group.html", {"group": group, "form": form}, status=400)
    messages.success(request, f"Group {group.name} saved; every node gets the change now.")
    return redirect(policy_url(group.network, "#groups"))


@require_POST
@dashboard_view
def group_delete(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(PolicyGroup.objects.select_related("network"), pk=pk)
    try:
        svc.delete_group(group, actor=user_actor(request.user))
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Group {group.name} deleted.")
    return redirect(policy_url(group.network, "#groups"))


# --------------------------------------------------------------------------- a node's tags, reachability


def _node(peer_id: str) -> Node:
    if len(peer_id) != 40:
        raise Http404("no such node")
    return get_object_or_404(Node.objects.select_related("network"), peer_id=peer_id)


@require_POST
@dashboard_view
def node_tags(request: HttpRequest, peer_id: str) -> HttpResponse:
    node = _node(peer_id)
    names = list(Tag.objects.filter(network_id=node.network_id).values_list("name", flat=True))
    form = NodeTagsForm(request.POST, choices=names)
    if not form.is_valid():
        messages.error(request, "tags: " + "; ".join(str(e) for e in form.errors.get("tags", ["invalid"])))
        return redirect("dashboard:node", peer_id=node.peer_id)
    try:
        svc.set_node_tags(node, form.cleaned_data["tags"], actor=user_actor(request.user))
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        shown = ", ".join(sorted(form.cleaned_data["tags"])) or "none"
        messages.success(request, f"Tags of {node.name}: {shown}.")
    return redirect("dashboard:node", peer_id=node.peer_id)


@require_GET
@dashboard_view
def reach(request: HttpRequest, peer_id: str) -> HttpResponse:
    node = _node(peer_id)
    return render_page(request, "dashboard/policy_reach.html", {
        "node": node, "reach": svc.reachability(node),
        "nodes": Node.objects.filter(network_id=node.network_id, status=NodeStatus.ACTIVE).order_by("name"),
    })
