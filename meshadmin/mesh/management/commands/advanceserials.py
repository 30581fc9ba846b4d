"""`manage.py advanceserials [--network NAME] [--by N]`: after restoring the database from a
backup, raise the networks' netmap serials above any serial an agent may hold, so every agent
takes the restored map (docs/operations.md, "Restoring a backup")."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from meshadmin.mesh.services import ServiceError
from meshadmin.mesh.services.networks import RESTORE_SERIAL_STEP, advance_serials

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Raise every network's netmap serial (after restoring a backup), so agents take the restored maps."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--network", help="only this network (default: all)")
        parser.add_argument("--by", type=int, default=RESTORE_SERIAL_STEP,
                            help=f"how much to add (default {RESTORE_SERIAL_STEP:,}: more changes than "
                                 "any network makes between two backups)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            done = advance_serials(options["by"], options["network"], actor="cli")
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        for name, before, after in done:
            self.stdout.write(f"{name}: serial {before} -> {after}")
