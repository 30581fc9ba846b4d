"""`manage.py revokeapikey PREFIX`: revoke an operator API key (named by its prefix, smk_…, as
`listapikeys` shows it, or its id). From then on the REST API refuses it (401)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from meshadmin.mesh.services import ServiceError
from meshadmin.mesh.services.apikeys import find_api_key, revoke_api_key

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Revoke an operator API key, named by its prefix (smk_…) or id."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("key", help="the key's prefix (smk_…) or id, as listapikeys shows")

    def handle(self, *args: Any, **options: Any) -> None:
        key = find_api_key(options["key"])
        if key is None:
            raise CommandError(f"no API key {options['key']!r} (see manage.py listapikeys --all)")
        try:
            revoke_api_key(key, actor="cli")
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"revoked {key.prefix} ({key.name})")
