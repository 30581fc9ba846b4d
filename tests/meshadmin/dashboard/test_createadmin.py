"""`manage.py createadmin`: no default password; a random one is printed once and works."""

import io

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from meshadmin.mesh.permissions import VIEWER_GROUP, can_edit, can_view

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("createadmin", *args, stdout=out)
    return out.getvalue()


def test_the_first_admin_gets_a_random_password_printed_once_as_the_last_line():
    output = run()
    password = output.strip().splitlines()[-1]
    assert len(password) >= 20
    user = authenticate(username="admin", password=password)
    assert user is not None and user.is_staff and user.is_superuser
    assert can_edit(user)
    assert password not in User.objects.get(username="admin").password, "only the hash is stored"


def test_two_admins_never_share_a_password():
    first = run("--username", "one").strip().splitlines()[-1]
    second = run("--username", "two").strip().splitlines()[-1]
    assert first != second


def test_an_existing_account_is_left_alone_unless_reset_is_asked_for():
    old = run().strip().splitlines()[-1]
    with pytest.raises(CommandError, match="exists"):
        run()
    assert authenticate(username="admin", password=old) is not None
    new = run("--reset").strip().splitlines()[-1]
    assert authenticate(username="admin", password=old) is None
    assert authenticate(username="admin", password=new) is not None


def test_a_viewer_account_can_look_but_not_change():
    password = run("--username", "auditor", "--viewer").strip().splitlines()[-1]
    user = authenticate(username="auditor", password=password)
    assert user.groups.filter(name=VIEWER_GROUP).exists()
    assert can_view(user) and not can_edit(user) and not user.is_staff


def test_a_blank_username_is_refused():
    with pytest.raises(CommandError):
        run("--username", "  ")
