"""`manage.py createadmin [--username admin] [--viewer] [--reset]`: make a dashboard account.

There is no default password: a random one is generated and printed once, as the last line of
output, and only its hash is stored. `--viewer` makes a read-only account (member of the viewer
group) instead of a staff administrator. An existing account is left alone unless `--reset`.
"""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from meshadmin.mesh.permissions import VIEWER_GROUP

PASSWORD_BYTES = 18  # 24 URL-safe characters


class Command(BaseCommand):
    help = "Create a dashboard administrator (or --viewer) with a random password printed once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="")
        parser.add_argument("--viewer", action="store_true", help="read-only account instead of staff")
        parser.add_argument("--reset", action="store_true", help="set a new random password if it exists")

    def handle(self, *args, username: str, email: str, viewer: bool, reset: bool, **options):
        username = username.strip()
        if not username or len(username) > 150:
            raise CommandError("--username must be 1 to 150 characters")
        users = get_user_model()
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        with transaction.atomic():
            user = users.objects.filter(username=username).first()
            if user is not None and not reset:
                raise CommandError(f"user {username!r} exists; pass --reset to give it a new password")
            if user is None:
                user = users(username=username, email=email)
            user.is_active = True
            user.is_staff = not viewer
            user.is_superuser = not viewer
            user.set_password(password)
            user.save()
            if viewer:
                group, _ = Group.objects.get_or_create(name=VIEWER_GROUP)
                user.groups.add(group)
        role = "read-only viewer" if viewer else "administrator"
        self.stdout.write(f"{role} {username!r} {'reset' if reset else 'created'}; password (shown once):")
        self.stdout.write(password)
