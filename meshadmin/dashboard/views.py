"""Dashboard pages. Each write: check the form -> call a service -> message -> redirect.

Views never write mesh rows themselves (meshadmin/mesh/services/ do). Reads go through
queries.py. Every view is wrapped in `dashboard_view`: login required, viewers read, only staff
may POST (403 otherwise). Pages that update live mark a region with `data-live-region`; live.js
re-fetches the page with `HX-Target: <tag>#<id>` and gets just that template partial back.
"""

from __future__ import annotations

import hashlib
import shlex
import time

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from meshadmin.client_address import request_client_ip
from meshadmin.mesh.models import EnrollmentToken, Network, Node, Route, Tag
from meshadmin.mesh.permissions import can_edit
from meshadmin.mesh.services import ServiceError
from meshadmin.mesh.services.common import user_actor
from meshadmin.mesh.services.exits import (
    EXIT_PREFIXES,
    advertise_exit_node,
    approve_exit_node,
    exit_state,
    remove_exit_node,
    select_exit_node,
)
from meshadmin.mesh.services.networks import get_or_create_network, set_dns_suffix
from meshadmin.mesh.services.nodes import delete_node, rename_node, revoke_node
from meshadmin.mesh.services.routes import approve_route, create_route, delete_route
from meshadmin.mesh.services.tokens import create_token, revoke_token
from nodeagent.protocol.dnsname import is_label

from . import queries
from .forms import (
    NODE_SORTS,
    AuditFilterForm,
    DnsSuffixForm,
    NodeFilterForm,
    RenameNodeForm,
    RouteCreateForm,
    TokenCreateForm,
    service_error_to_form,
)
from .permissions import dashboard_view

AGENT_STATE_DIR = "/var/lib/shadowmesh"


def render_page(request: HttpRequest, template: str, context: dict, regions: dict[str, str] | None = None,
                status: int | None = None, live_url: str | None = None) -> HttpResponse:
    """Render the page, or only the partial named for the region htmx asked for (HX-Target).

    `live_url`: where live.js re-fetches the page's live regions from. A GET page is asked at
    its own address as it stands (a filter typed on the page is in it). A page rendered by a POST
    (a form sent back with its errors) stands at the form's action, which answers only POST:
    base.html then gives `data-live-url`, the page's GET address its view names, or "" (the
    regions stay as rendered)."""
    context = {"can_edit": can_edit(request.user), **context}
    if request.method != "GET":
        context["live_url"] = live_url or ""
    target = request.headers.get("HX-Target", "")
    region = target.split("#", 1)[1] if "#" in target else ""
    if request.headers.get("HX-Request") and regions and region in regions:
        return render(request, f"{template}#{regions[region]}", context, status=status)
    return render(request, template, context, status=status)


def _actor(request: HttpRequest) -> str:
    return user_actor(request.user)


def _service_failed(request: HttpRequest, exc: ServiceError) -> None:
    messages.error(request, exc.detail)


# --------------------------------------------------------------------------- auth


LOGIN_FAILURE_WINDOW_S = 15 * 60
clock = time.time  # which window "now" is in (tests hold it still: a window may end mid-test)


def _login_failure_keys(request: HttpRequest) -> list[str]:
    """Failures count per client address and per username (so neither spraying nor guessing pays)."""
    window = int(clock()) // LOGIN_FAILURE_WINDOW_S
    username = (request.POST.get("username") or "").strip().lower()[:150]
    keys = [f"dashboard:login-failures:ip:{request_client_ip(request)}:{window}"]
    if username:
        keys.append(f"dashboard:login-failures:user:{hashlib.sha256(username.encode()).hexdigest()}:{window}")
    return keys


def _login_refused(request: HttpRequest) -> bool:
    limit = getattr(settings, "SHADOWMESH_LOGIN_FAILURE_LIMIT", 10)
    return limit > 0 and any((cache.get(key) or 0) >= limit for key in _login_failure_keys(request))


def _count_login_failure(request: HttpRequest) -> None:
    for key in _login_failure_keys(request):
        cache.add(key, 0, timeout=LOGIN_FAILURE_WINDOW_S * 2)
        try:
            cache.incr(key)
        except ValueError:  # evicted between add and incr
            cache.add(key, 1, timeout=LOGIN_FAILURE_WINDOW_S * 2)


LOGIN_REFUSED = "Too many failed sign-ins. Wait a few minutes and try again."


class LoginView(auth_views.LoginView):
    """Django's login, refused with 429 after too many failures from one address or for one name."""

    template_name = "dashboard/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if _login_refused(request):
            form = self.get_form_class()(request)  # unbound: the password is not even checked
            context = self.get_context_data(form=form, refused=LOGIN_REFUSED)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        _count_login_failure(self.request)
        return super().form_invalid(form)


@never_cache
def admin_login(request: HttpRequest) -> HttpResponse:
    """/admin/login/ is Django admin's own sign-in page with the dashboard's failure limits (the
    same counters): without them it was a second, unlimited door for guessing passwords."""
    from django.contrib import admin
    from django.http import HttpResponse

    if request.method == "POST" and _login_refused(request):
        return HttpResponse(LOGIN_REFUSED, status=429, content_type="text/plain; charset=utf-8")
    response = admin.site.login(request)
    if request.method == "POST" and response.status_code == 200:  # the form came back: refused
        _count_login_failure(request)
    return response


class LogoutView(auth_views.LogoutView):
    next_page = "dashboard:login"


# --------------------------------------------------------------------------- overview and map


@require_GET
@dashboard_view
def overview(request: HttpRequest) -> HttpResponse:
    network = queries.pick_network(request.GET.get("network"))
    data = queries.overview(network)
    dns_form = DnsSuffixForm(initial={"suffix": network.dns_suffix}) if network is not None else None
    return render_page(
        request,
        "dashboard/overview.html",
        {"network": network, "dns_form": dns_form, **data},
        regions={"overview-live": "live"},
    )


@require_POST
@dashboard_view
def network_dns(request: HttpRequest, pk: int) -> HttpResponse:
    """The network's DNS suffix (nodes answer to <name>.<suffix>); empty restores <network>.mesh."""
    network = get_object_or_404(Network, pk=pk)
    form = DnsSuffixForm(request.POST)
    if not form.is_valid():
        errors = form.errors.get("suffix", ["invalid"])
        messages.error(request, "DNS suffix: " + "; ".join(str(e) for e in errors))
    else:
        try:
            set_dns_suffix(network, form.cleaned_data["suffix"], actor=_actor(request))
        except ServiceError as exc:
            _service_failed(request, exc)
        else:
            messages.success(request, f"Nodes of {network.name} answer to NAME.{network.effective_dns_suffix}"
                             if network.effective_dns_suffix else f"{network.name} has no DNS names.")
    return redirect(reverse("dashboard:overview") + f"?network={network.name}")


@require_GET
@dashboard_view
def map_page(request: HttpRequest) -> HttpResponse:
    network = queries.pick_network(request.GET.get("network"))
    return render_page(
        request,
        "dashboard/map.html",
        {"network": network, "networks": Network.objects.all(), "graph": queries.graph_for(network)},
    )


@require_GET
@dashboard_view
def graph_json(request: HttpRequest) -> HttpResponse:
    network = queries.pick_network(request.GET.get("network"))
    return JsonResponse(queries.graph_for(network))


# --------------------------------------------------------------------------- nodes


@require_GET
@dashboard_view
def nodes(request: HttpRequest) -> HttpResponse:
    form = NodeFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    network = queries.pick_network(request.GET.get("network"))
    sort = filters.get("sort") or "name"
    descending = filters.get("dir") == "desc"
    rows = queries.node_rows(
        network,
        q=filters.get("q", ""),
        status=filters.get("status", ""),
        sort=sort,
        descending=descending,
    )
    return render_page(
        request,
        "dashboard/nodes.html",
        {
            "form": form,
            "rows": rows,
            "network": network,
            "networks": Network.objects.all(),
            "sort": sort,
            "dir": "desc" if descending else "asc",
            "sorts": NODE_SORTS,
            "query": filters.get("q", ""),
        },
        regions={"nodes-table": "table"},
    )


def _node(peer_id: str) -> Node:
    if len(peer_id) != 40:
        raise Http404("no such node")
    return get_object_or_404(Node.objects.select_related("network", "use_exit"), peer_id=peer_id)


@require_GET
@dashboard_view
def node_detail(request: HttpRequest, peer_id: str) -> HttpResponse:
    node = _node(peer_id)
    now = timezone.now()
    rows = queries.node_rows(node.network, q=node.peer_id, now=now)
    row = next((r for r in rows if r.node.pk == node.pk), None)
    suffix = node.network.effective_dns_suffix
    exits = (Route.objects.filter(network_id=node.network_id, prefix__in=EXIT_PREFIXES)
             .exclude(via=node).select_related("via").order_by("via__name"))
    choices: dict[int, tuple[Node, bool]] = {}
    for r in exits:
        approved = choices.get(r.via_id, (r.via, True))[1] and r.approved
        choices[r.via_id] = (r.via, approved)
    return render_page(
        request,
        "dashboard/node.html",
        {
            "node": node,
            "row": row,
            "links": queries.node_links(node, now),
            "path_changes": queries.node_path_changes(node, now),
            "dht": queries.node_dht(node, now),
            "routes": Route.objects.filter(via=node).exclude(prefix__in=EXIT_PREFIXES).order_by("prefix"),
            "rename_form": RenameNodeForm(initial={"name": node.name}),
            "tags": sorted(node.tags.values_list("name", flat=True)),
            "network_tags": sorted(Tag.objects.filter(network_id=node.network_id)
                                   .values_list("name", flat=True)),
            "denied": queries.node_denied(node, now),
            "series_url": f"{request.path}series.json",
            "dns_name": f"{node.name.lower()}.{suffix}" if suffix and is_label(node.name) else None,
            "dns_suffix": suffix,
            "exit_state": exit_state(node),
            "exit_choices": [{"node": n, "approved": ok} for n, ok in choices.values()],
        },
        regions={"node-live": "live"},
    )


@require_POST
@dashboard_view
def node_exit(request: HttpRequest, peer_id: str) -> HttpResponse:
    """This node as an exit node: offer (advertise), approve, or remove."""
    node = _node(peer_id)
    action = request.POST.get("action", "")
    services = {"advertise": advertise_exit_node, "approve": approve_exit_node, "remove": remove_exit_node}
    service = services.get(action)
    if service is None:
        messages.error(request, "action: must be advertise, approve or remove")
        return redirect("dashboard:node", peer_id=node.peer_id)
    try:
        service(node, actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        state = exit_state(node)
        messages.success(request, {"approved": f"{node.name} is an approved exit node.",
                                   "pending": f"{node.name} offers itself as an exit node; approve it "
                                              "to use it.",
                                   "": f"{node.name} is no exit node."}[state])
    return redirect("dashboard:node", peer_id=node.peer_id)


@require_POST
@dashboard_view
def node_use_exit(request: HttpRequest, peer_id: str) -> HttpResponse:
    """The exit node this node sends its internet traffic through ("" for none)."""
    node = _node(peer_id)
    chosen = request.POST.get("exit_node", "")
    exit_node = None
    if chosen:
        exit_node = Node.objects.filter(peer_id=chosen, network_id=node.network_id).first()
        if exit_node is None:
            messages.error(request, "exit_node: no such node in this network")
            return redirect("dashboard:node", peer_id=node.peer_id)
    try:
        select_exit_node(node, exit_node, actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        messages.success(request, f"{node.name} uses {exit_node.name} as its exit node." if exit_node
                         else f"{node.name} uses no exit node.")
    return redirect("dashboard:node", peer_id=node.peer_id)


@require_GET
@dashboard_view
def node_series(request: HttpRequest, peer_id: str) -> HttpResponse:
    node = _node(peer_id)
    return JsonResponse(queries.series(node, timezone.now()))


@require_POST
@dashboard_view
def node_rename(request: HttpRequest, peer_id: str) -> HttpResponse:
    node = _node(peer_id)
    form = RenameNodeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Name: " + "; ".join(str(e) for e in form.errors.get("name", ["invalid"])))
        return redirect("dashboard:node", peer_id=node.peer_id)
    try:
        rename_node(node, form.cleaned_data["name"], actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        messages.success(request, f"Renamed to {node.name}.")
    return redirect("dashboard:node", peer_id=node.peer_id)


@require_http_methods(["GET", "POST"])
@dashboard_view
def node_revoke(request: HttpRequest, peer_id: str) -> HttpResponse:
    """GET shows the confirmation page; POST revokes."""
    node = _node(peer_id)
    if request.method == "GET":
        return render_page(request, "dashboard/confirm.html", {
            "title": f"Revoke {node.name}?",
            "object_name": node.name,
            "explain": "The node's key is blocked for good, its overlay IP is freed and every peer drops it "
                       "with the next netmap push. To bring the machine back it must enroll with a new key.",
            "action_label": "Revoke node",
            "cancel_url": node_url(node),
        })
    try:
        revoke_node(node, actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        messages.success(request, f"Revoked {node.name}.")
    return redirect("dashboard:node", peer_id=node.peer_id)


@require_http_methods(["GET", "POST"])
@dashboard_view
def node_delete(request: HttpRequest, peer_id: str) -> HttpResponse:
    node = _node(peer_id)
    if request.method == "GET":
        return render_page(request, "dashboard/confirm.html", {
            "title": f"Delete {node.name}?",
            "object_name": node.name,
            "explain": "The node's record is removed and its overlay IP freed. Unlike revoking, the same "
                       "key could enroll again with a new token. If the machine is lost, revoke it instead: "
                       "a revoked node stays on record so that no peer accepts it again.",
            "action_label": "Delete node",
            "cancel_url": node_url(node),
        })
    name = node.name
    try:
        delete_node(node, actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
        return redirect("dashboard:node", peer_id=node.peer_id)
    messages.success(request, f"Deleted {name}.")
    return redirect("dashboard:nodes")


def node_url(node: Node) -> str:
    return reverse("dashboard:node", kwargs={"peer_id": node.peer_id})


# --------------------------------------------------------------------------- tokens


def public_url(request: HttpRequest) -> str:
    """The URL nodes reach this server at: SHADOWMESH_PUBLIC_URL, else the one the browser used
    (which names loopback when the dashboard is opened on the server itself)."""
    configured = getattr(settings, "SHADOWMESH_PUBLIC_URL", None)
    return configured.rstrip("/") if configured else request.build_absolute_uri("/").rstrip("/")


def enroll_command(server: str, token: str, name: str, public: bool = False) -> str:
    """The command line an operator pastes into a shell; every value is shell-quoted."""
    return (
        f"shadowmesh-agent enroll --server {shlex.quote(server)} --token {shlex.quote(token)} "
        f"--name {shlex.quote(name) if name else 'NAME'} --state-dir {AGENT_STATE_DIR}"
        + (" --public" if public else "")
    )


def qr_svg(text: str) -> str:
    """Inline SVG of a QR code (segno output: only rect/path markup, no script, no user HTML)."""
    return segno.make(text, error="m").svg_inline(scale=4, dark="#000", light="#fff", border=2)


@require_GET
@dashboard_view
def tokens(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = EnrollmentToken.objects.select_related("network", "created_by").order_by("-created_at")[:200]
    return render_page(request, "dashboard/tokens.html", {"tokens": rows, "now": now,
                                                          "form": TokenCreateForm()},
                       regions={"tokens-table": "table"})


@require_http_methods(["GET", "POST"])
@dashboard_view
@never_cache
def token_create(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render_page(request, "dashboard/token_create.html", {"form": TokenCreateForm()})
    form = TokenCreateForm(request.POST)
    if not form.is_valid():
        return render_page(request, "dashboard/token_create.html", {"form": form}, status=400)
    try:
        # No network chosen (a fresh install has none): the default one, made by its service.
        network = form.cleaned_data["network"] or get_or_create_network(actor=_actor(request))
        token, plaintext = create_token(
            network,
            uses=form.cleaned_data["uses"],
            ttl=form.ttl(),
            is_public=form.cleaned_data["is_public"],
            ephemeral=form.cleaned_data["ephemeral"],
            tags=form.tag_names(),
            created_by=request.user,
            actor=_actor(request),
        )
    except ServiceError as exc:
        service_error_to_form(form, exc)
        return render_page(request, "dashboard/token_create.html", {"form": form}, status=400)
    server = public_url(request)
    command = enroll_command(server, plaintext, form.cleaned_data["node_name"].strip(), token.is_public)
    response = render_page(request, "dashboard/token_created.html", {
        "token": token, "plaintext": plaintext, "command": command, "qr": qr_svg(command),
        "named": bool(form.cleaned_data["node_name"].strip()),
    })
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@dashboard_view
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(EnrollmentToken, pk=pk)
    if token.revoked_at is not None:
        messages.info(request, f"Token {token.prefix}… was already revoked.")
        return redirect("dashboard:tokens")
    try:
        revoke_token(token, actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        messages.success(request, f"Revoked token {token.prefix}….")
    return redirect("dashboard:tokens")


# --------------------------------------------------------------------------- routes


@require_GET
@dashboard_view
def routes(request: HttpRequest) -> HttpResponse:
    return _routes_page(request, RouteCreateForm())


def _routes_page(request: HttpRequest, form: RouteCreateForm, status: int | None = None) -> HttpResponse:
    rows = Route.objects.select_related("network", "via").order_by("approved", "network__name", "prefix")
    return render_page(request, "dashboard/routes.html", {"routes": rows, "form": form},
                       regions={"routes-table": "table"}, status=status, live_url=reverse("dashboard:routes"))


@require_POST
@dashboard_view
def route_create(request: HttpRequest) -> HttpResponse:
    form = RouteCreateForm(request.POST)
    if not form.is_valid():
        return _routes_page(request, form, status=400)
    try:
        route = create_route(form.cleaned_data["via"], form.cleaned_data["prefix"],
                             approved=form.cleaned_data["approve"], actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        messages.success(request, f"Route {route.prefix} via {route.via.name} added"
                         + (" and approved." if route.approved else "; it waits for approval."))
    return redirect("dashboard:routes")


@require_POST
@dashboard_view
def route_approve(request: HttpRequest, pk: int) -> HttpResponse:
    route = get_object_or_404(Route.objects.select_related("via"), pk=pk)
    try:
        approve_route(route, actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        messages.success(request, f"Approved {route.prefix} via {route.via.name}.")
    return redirect("dashboard:routes")


@require_POST
@dashboard_view
def route_reject(request: HttpRequest, pk: int) -> HttpResponse:
    route = get_object_or_404(Route.objects.select_related("via"), pk=pk)
    label = f"{route.prefix} via {route.via.name}"
    try:
        delete_route(route, actor=_actor(request))
    except ServiceError as exc:
        _service_failed(request, exc)
    else:
        messages.success(request, f"Removed {label}.")
    return redirect("dashboard:routes")


# --------------------------------------------------------------------------- audit


@require_GET
@dashboard_view
def audit(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    events = queries.audit_events(
        node=filters.get("node", "").strip(),
        actor=filters.get("actor", "").strip(),
        action=filters.get("action", ""),
        since=filters.get("since"),
        until=filters.get("until"),
    )
    return render_page(request, "dashboard/audit.html", {"form": form, "events": events},
                       regions={"audit-table": "table"})


__all__ = [
    "LoginView",
    "LogoutView",
    "audit",
    "graph_json",
    "map_page",
    "network_dns",
    "node_delete",
    "node_detail",
    "node_exit",
    "node_rename",
    "node_revoke",
    "node_series",
    "node_use_exit",
    "nodes",
    "overview",
    "route_approve",
    "route_create",
    "route_reject",
    "routes",
    "token_create",
    "token_revoke",
    "tokens",
]
