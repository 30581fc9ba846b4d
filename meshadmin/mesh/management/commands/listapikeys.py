"""`manage.py listapikeys [--all]`: the operator API keys (never the keys themselves).

One line per key: prefix, scope, state, last use, expiry, name, the network it is limited to and
the prefixes it may be used from, when it is. Without --all only the keys
that still work (neither revoked nor expired) are listed."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from meshadmin.mesh.models import ApiKey

__all__ = ["Command"]


def _when(at: datetime | None, empty: str) -> str:
    return f"{at:%Y-%m-%d %H:%M}" if at is not None else empty


class Command(BaseCommand):
    help = "List the operator API keys: prefix, scope, state, last use, expiry and name."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--all", action="store_true", help="revoked and expired keys too")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        keys = [k for k in ApiKey.objects.select_related("network").order_by("created_at", "id")
                if options["all"] or k.state(now) == "active"]
        self.stdout.write(f"{'PREFIX':<15} {'SCOPE':<10} {'STATE':<8} {'LAST USED (UTC)':<16}  "
                          f"{'EXPIRES (UTC)':<16}  NAME")
        for k in keys:
            used, expires = _when(k.last_used_at, "never"), _when(k.expires_at, "never")
            state = k.state(now)
            limits = ([f"network {k.network.name}"] if k.network is not None else []) + (
                [f"from {', '.join(k.allowed_from)}"] if k.allowed_from else [])
            sources = f"  ({'; '.join(limits)})" if limits else ""
            self.stdout.write(f"{k.prefix:<15} {k.scope:<10} {state:<8} {used:<16}  {expires:<16}  {k.name}"
                              f"{sources}")
