"""`manage.py createtoken [--network NAME] [--uses N] [--expires DURATION] [--public] [--tag NAME]...`

Prints an enrollment token as the LAST line of stdout (scripts take `tail -n1`). The token is
shown only here; the database keeps its hash. A missing network is created (with a new CA key).
`--tag NAME` (repeatable): every node enrolled with the token carries the tag; a tag that does
not exist yet is created (and said so on stderr).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from meshadmin.mesh.constants import DEFAULT_NETWORK_NAME
from meshadmin.mesh.durations import parse_duration
from meshadmin.mesh.models import Tag
from meshadmin.mesh.services import ServiceError
from meshadmin.mesh.services.networks import get_or_create_network
from meshadmin.mesh.services.policies import clean_name, ensure_tags
from meshadmin.mesh.services.tokens import create_token

__all__ = ["Command", "parse_duration"]


class Command(BaseCommand):
    help = "Create an enrollment token; the token itself is printed as the last line."

    def add_arguments(self, parser):
        parser.add_argument(
            "--network", default=DEFAULT_NETWORK_NAME, help="network name (created if missing)"
        )
        parser.add_argument("--uses", type=int, default=1, help="how many enrollments it allows (default 1)")
        parser.add_argument("--expires", default="24h", help="lifetime like 30m, 1h, 7d (default 24h)")
        parser.add_argument(
            "--public", action="store_true", help="nodes enrolled with it may be public relays"
        )
        parser.add_argument(
            "--ephemeral", action="store_true",
            help="nodes enrolled with it are deleted once silent (SHADOWMESH_EPHEMERAL_AFTER_S)",
        )
        parser.add_argument(
            "--tag", action="append", default=[], metavar="NAME",
            help="nodes enrolled with it carry this tag (repeatable; a new tag is created)",
        )

    def handle(self, *args, **options):
        try:
            ttl = parse_duration(options["expires"])
        except ValueError as exc:
            raise CommandError(f"--expires: {exc}") from exc
        try:
            names = [clean_name(name, "--tag") for name in options["tag"]]
            network = get_or_create_network(options["network"], actor="cli")
            new = [n for n in names if not Tag.objects.filter(network=network, name=n).exists()]
            ensure_tags(network, names, actor="cli")
            for name in new:
                self.stderr.write(f"created tag {name}")
            token, plaintext = create_token(
                network, uses=options["uses"], ttl=ttl, is_public=options["public"],
                ephemeral=options["ephemeral"], tags=names, actor="cli",
            )
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        self.stderr.write(
            f"network {network.name} ({network.overlay_cidr}); uses {token.max_uses}; "
            f"public {'yes' if token.is_public else 'no'}; expires {token.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            + ("; ephemeral" if token.ephemeral else "")
            + (f"; tags {', '.join(names)}" if names else "")
        )
        self.stdout.write(plaintext)
