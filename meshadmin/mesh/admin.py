"""Django admin for the mesh models.

Writes go through the services (enrollment, nodes, tokens, routes), never straight to the rows.
Key material is shown only as sizes and fingerprints; the sealed CA private key is never shown.
Tokens are created with `manage.py createtoken` (the plaintext is printed once there; the admin
would have to carry it through the message store, which persists it).
"""

from __future__ import annotations

import hashlib

from django.contrib import admin, messages

from nodeagent.protocol.cert import ca_id

from .models import AuditEvent, AuthChallenge, EnrollmentToken, Network, Node, Route, SessionToken
from .services import ServiceError
from .services.common import user_actor
from .services.networks import create_network
from .services.nodes import delete_node, rename_node, revoke_node
from .services.routes import approve_route, create_route, delete_route
from .services.tokens import revoke_token


def _fingerprint(data) -> str:
    data = bytes(data or b"")
    return f"{len(data)} bytes, SHA-256 {hashlib.sha256(data).hexdigest()[:32]}…" if data else "—"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ("name", "overlay_cidr", "serial", "created_at")
    fields = ("name", "overlay_cidr", "serial", "ca_identity", "created_at")
    readonly_fields = ("serial", "ca_identity", "created_at")

    @admin.display(description="CA public key")
    def ca_identity(self, obj):
        if not obj.ca_public_key:
            return "—"
        return f"ML-DSA-87, CA id {ca_id(bytes(obj.ca_public_key)).hex()}"

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "name", "overlay_cidr") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            created = create_network(obj.name, obj.overlay_cidr, actor=user_actor(request.user))
        except ServiceError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return
        obj.pk = created.pk
        obj.refresh_from_db()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("name", "peer_id", "network", "overlay_ip", "status", "is_public", "last_seen")
    list_filter = ("network", "status", "is_public")
    search_fields = ("name", "peer_id", "overlay_ip")
    actions = ("revoke_selected",)
    fields = (
        "name",
        "peer_id",
        "network",
        "overlay_ip",
        "status",
        "is_public",
        "is_relay",
        "public_key_info",
        "certificate_info",
        "certificate_expires_at",
        "enrolled_at",
        "revoked_at",
        "endpoint_ip",
        "control_port",
        "udp_port",
        "advertised_public",
        "observed_ip",
        "observed_port",
        "last_seen",
        "record_expires_at",
    )
    readonly_fields = tuple(f for f in fields if f != "name")

    @admin.display(description="public key")
    def public_key_info(self, obj):
        return _fingerprint(obj.public_key)

    @admin.display(description="certificate")
    def certificate_info(self, obj):
        return _fingerprint(obj.certificate)

    def has_add_permission(self, request):
        return False  # nodes join with an enrollment token

    def save_model(self, request, obj, form, change):
        if change and "name" in form.changed_data:
            try:
                rename_node(obj, form.cleaned_data["name"], actor=user_actor(request.user))
            except ServiceError as exc:
                self.message_user(request, exc.detail, messages.ERROR)

    def delete_model(self, request, obj):
        self.delete_queryset(request, [obj])

    def delete_queryset(self, request, queryset):
        for node in queryset:
            try:
                delete_node(node, actor=user_actor(request.user))
            except ServiceError as exc:
                self.message_user(request, f"{node.name}: {exc.detail}", messages.ERROR)

    @admin.action(description="Revoke selected nodes")
    def revoke_selected(self, request, queryset):
        done = 0
        for node in queryset:
            try:
                revoke_node(node, actor=user_actor(request.user))
                done += 1
            except ServiceError as exc:
                self.message_user(request, f"{node.name}: {exc.detail}", messages.WARNING)
        self.message_user(request, f"revoked {done} node(s)")


@admin.register(EnrollmentToken)
class EnrollmentTokenAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "network", "uses_left", "max_uses", "is_public", "expires_at", "revoked_at")
    list_filter = ("network", "is_public")
    exclude = ("token_hash",)
    actions = ("revoke_selected",)

    def has_change_permission(self, request, obj=None):
        return obj is None  # the changelist (and its actions), not the edit form

    @admin.action(description="Revoke selected tokens")
    def revoke_selected(self, request, queryset):
        for token in queryset.filter(revoked_at=None):
            revoke_token(token, actor=user_actor(request.user))
        self.message_user(request, "tokens revoked")


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ("prefix", "via", "network", "approved", "created_at")
    list_filter = ("network", "approved")
    fields = ("prefix", "via", "approved")
    actions = ("approve_selected",)

    def get_readonly_fields(self, request, obj=None):
        return ("prefix", "via", "approved") if obj else ()

    def has_change_permission(self, request, obj=None):
        return obj is None

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            created = create_route(
                form.cleaned_data["via"],
                form.cleaned_data["prefix"],
                approved=form.cleaned_data["approved"],
                actor=user_actor(request.user),
            )
        except ServiceError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return
        obj.pk = created.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        delete_route(obj, actor=user_actor(request.user))

    def delete_queryset(self, request, queryset):
        for route in queryset:
            delete_route(route, actor=user_actor(request.user))

    @admin.action(description="Approve selected routes")
    def approve_selected(self, request, queryset):
        for route in queryset.filter(approved=False):
            approve_route(route, actor=user_actor(request.user))
        self.message_user(request, "routes approved")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "object_type", "object_id", "source_ip")
    list_filter = ("action",)
    search_fields = ("actor", "object_id")


@admin.register(AuthChallenge)
class AuthChallengeAdmin(ReadOnlyAdmin):
    list_display = ("node", "created_at", "expires_at", "used_at")
    exclude = ("challenge_hash",)


@admin.register(SessionToken)
class SessionTokenAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "node", "created_at", "expires_at", "source_ip")
    exclude = ("token_hash",)
