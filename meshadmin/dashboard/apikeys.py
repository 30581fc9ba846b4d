"""Dashboard pages for operator API keys (services/apikeys.py): the list with each key's last use,
a form that makes one and shows it once, and revocation. Staff only may create and revoke (the
`dashboard_view` guard); viewers see the list, which never holds a key."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from meshadmin.mesh.models import ApiKey
from meshadmin.mesh.services import ServiceError
from meshadmin.mesh.services.apikeys import create_api_key, revoke_api_key
from meshadmin.mesh.services.common import user_actor

from .forms import ApiKeyCreateForm, service_error_to_form
from .permissions import dashboard_view
from .views import public_url, render_page

__all__ = ["apikey_create", "apikey_revoke", "apikeys"]


@require_GET
@dashboard_view
def apikeys(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = [(key, key.state(now)) for key in ApiKey.objects.select_related("network")
            .order_by("-created_at", "-id")[:500]]
    return render_page(request, "dashboard/apikeys.html", {"rows": rows})


@require_http_methods(["GET", "POST"])
@dashboard_view
@never_cache
def apikey_create(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render_page(request, "dashboard/apikey_create.html", {"form": ApiKeyCreateForm()})
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return render_page(request, "dashboard/apikey_create.html", {"form": form}, status=400)
    try:
        key, plaintext = create_api_key(form.cleaned_data["name"], read_only=form.cleaned_data["read_only"],
                                        ttl=form.ttl(), actor=user_actor(request.user),
                                        allowed_from=form.cleaned_data["allowed_from"],
                                        network=form.cleaned_data["network"])
    except ServiceError as exc:
        service_error_to_form(form, exc)
        return render_page(request, "dashboard/apikey_create.html", {"form": form}, status=400)
    response = render_page(request, "dashboard/apikey_created.html", {
        "key": key, "plaintext": plaintext, "api_url": f"{public_url(request)}/api/nodes",
    })
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
@dashboard_view
def apikey_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """GET shows the confirmation page; POST revokes."""
    key = get_object_or_404(ApiKey, pk=pk)
    if request.method == "GET":
        return render_page(request, "dashboard/confirm.html", {
            "title": f"Revoke API key {key.prefix}?",
            "object_name": f"{key.prefix} ({key.name})",
            "explain": "Scripts using this key get 401 from their next request on. A revoked key cannot be "
                       "brought back: make a new one instead.",
            "action_label": "Revoke key",
            "cancel_url": reverse("dashboard:apikeys"),
        })
    try:
        revoke_api_key(key, actor=user_actor(request.user))
    except ServiceError as exc:
        messages.info(request, exc.detail)
    else:
        messages.success(request, f"Revoked API key {key.prefix}.")
    return redirect("dashboard:apikeys")
