"""`manage.py createapikey [--read-only] [--name NAME] [--expires DURATION|never] [--allow-from PREFIX]...
[--network NAME]`

Prints an operator API key as the LAST line of stdout (scripts take `tail -n1`); what it is
(prefix, scope, expiry) goes to stderr. The key is shown only here: the database keeps its hash.
It authenticates the REST API's operator operations as `Authorization: Bearer <key>` (docs/api.md).
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from meshadmin.mesh.durations import parse_duration
from meshadmin.mesh.models import Network
from meshadmin.mesh.services import ServiceError
from meshadmin.mesh.services.apikeys import DEFAULT_API_KEY_TTL, create_api_key

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Create an operator API key for the REST API; the key itself is printed as the last line."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--read-only", action="store_true",
                            help="the key may only read (GET); writes get 403")
        parser.add_argument("--name", default="cli", help="what the key is for, shown in the dashboard "
                                                          "(default: cli)")
        parser.add_argument("--expires", default=f"{DEFAULT_API_KEY_TTL.days}d",
                            help=f"lifetime like 30d or 12h, or 'never' "
                                 f"(default {DEFAULT_API_KEY_TTL.days}d)")
        parser.add_argument("--network", metavar="NAME",
                            help="the key sees and changes this network only (default: every network)")
        parser.add_argument("--allow-from", action="append", default=[], metavar="PREFIX",
                            help="only clients from this address or prefix may use the key (repeat for "
                                 "more; default: anywhere)")

    def handle(self, *args: Any, **options: Any) -> None:
        expires = options["expires"].strip().lower()
        try:
            ttl = None if expires == "never" else parse_duration(expires)
        except ValueError as exc:
            raise CommandError(f"--expires: {exc}") from exc
        network = None
        if options["network"] is not None:
            network = Network.objects.filter(name=options["network"]).first()
            if network is None:
                raise CommandError(f"--network: no network named {options['network']!r}")
        try:
            key, plaintext = create_api_key(options["name"], read_only=options["read_only"], ttl=ttl,
                                            actor="cli", allowed_from=options["allow_from"], network=network)
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        until = f"{key.expires_at:%Y-%m-%d %H:%M:%S} UTC" if key.expires_at else "never"
        sources = ", ".join(key.allowed_from) or "anywhere"
        reach = f"network {network.name}" if network is not None else "every network"
        self.stderr.write(f"API key {key.prefix} ({key.name}); {key.scope}; {reach}; expires {until}; "
                          f"from {sources}")
        self.stdout.write(plaintext)
