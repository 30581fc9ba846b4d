"""Session events of the dashboard.

- Logging out closes every dashboard websocket that user has open (in any tab or browser): the
  consumer of each socket joined the user's group and closes itself on `session.logout`.
- A failed dashboard login is a security event and goes to the audit log (never the password).
- Every committed mesh write (services announce a Change) tells open dashboards to refresh.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out, user_login_failed
from django.dispatch import receiver

from meshadmin.client_address import request_client_ip
from meshadmin.mesh.changes import change_announced
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.services.common import record_audit
from meshadmin.metrics import events
from meshadmin.realtime.groups import ALL_DASHBOARDS_GROUP, SESSION_LOGOUT, user_group
from meshadmin.realtime.groups import DASHBOARD_CHANGED as CHANGED

log = logging.getLogger(__name__)
_pending: set[asyncio.Task] = set()  # keeps scheduled sends alive until they finish


def _group_send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    try:
        if loop is not None:  # called from async code: schedule instead of blocking the loop
            task = loop.create_task(layer.group_send(group, message))
            _pending.add(task)
            task.add_done_callback(_pending.discard)
        else:
            async_to_sync(layer.group_send)(group, message)
    except Exception:  # a dashboard hint must never break the write or the logout that caused it
        log.exception("dashboard group_send to %s failed", group)


@receiver(change_announced, dispatch_uid="dashboard.refresh_on_change")
def refresh_on_change(sender, change, **kwargs) -> None:
    _group_send(
        ALL_DASHBOARDS_GROUP,
        {"type": CHANGED, "network_id": change.network_id, "reason": change.reason, "serial": change.serial},
    )


@receiver(user_logged_out, dispatch_uid="dashboard.close_sockets_on_logout")
def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        _group_send(user_group(user.pk), {"type": SESSION_LOGOUT})


@receiver(user_login_failed, dispatch_uid="dashboard.audit_failed_login")
def audit_failed_login(sender, credentials, request=None, **kwargs) -> None:
    username = str(credentials.get("username", ""))[:80]
    source_ip = request_client_ip(request) if request is not None else None
    events.auth_failed("dashboard", "login failed")
    record_audit(
        AuditAction.AUTH_FAILED,
        actor=f"user:{username}" if username else "anonymous",
        object_type="user",
        object_id=username[:64],
        source_ip=source_ip,
        reason="dashboard login failed",
    )
