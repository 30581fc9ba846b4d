"""`manage.py createtoken [--network NAME] [--uses N] [--expires DURATION] [--public]`."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from meshadmin.mesh.management.commands.createtoken import parse_duration
from meshadmin.mesh.models import EnrollmentToken, Network
from nodeagent.protocol.enroll_token import parse_token

ROOT = Path(__file__).resolve().parents[3]


def _create(capsys, *args) -> str:
    call_command("createtoken", *args)
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.django_db
def test_the_token_is_the_last_line_and_enrolls_once(api, identity_factory, capsys):
    token = _create(capsys)
    assert api.enroll(token, identity_factory(), "a").status_code == 201
    assert api.enroll(token, identity_factory(), "b").status_code == 403


@pytest.mark.django_db
def test_options_set_network_uses_expiry_and_public(api, identity_factory, capsys):
    before = timezone.now()
    token = _create(capsys, "--network", "lab", "--uses", "2", "--expires", "30m", "--public")
    row = EnrollmentToken.objects.get()
    assert (row.network.name, row.max_uses, row.uses_left, row.is_public) == ("lab", 2, 2, True)
    assert timedelta(minutes=29) < row.expires_at - before <= timedelta(minutes=30, seconds=5)
    assert Network.objects.filter(name="lab").exists()
    response = api.enroll(token, identity_factory(), "hub", is_public=True)
    assert response.status_code == 201
    assert response.json()["network"] == "lab"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_durations_parse(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "h", "0h", "-1h", "1y", "1.5h", "1 h", "99999999w", "\u0661h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.django_db
@pytest.mark.parametrize("args", [["--expires", "forever"], ["--uses", "0"], ["--expires", "400d"]])
def test_bad_options_are_a_command_error_and_create_nothing(args):
    with pytest.raises(CommandError):
        call_command("createtoken", *args)
    assert EnrollmentToken.objects.count() == 0


def test_the_command_line_prints_the_token_as_the_last_line(tmp_path):
    env = {"SHADOWMESH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    result = subprocess.run(
        [sys.executable, "manage.py", "createtoken", "--uses", "3"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    last = result.stdout.strip().splitlines()[-1]
    # the 43-character secret, '.', and the network CA's fingerprint (docs/protocol.md#enrollment-tokens)
    assert len(last) == 43 + 1 + 43 and " " not in last
    assert parse_token(last).fingerprint is not None


@pytest.mark.django_db
def test_tags_are_pre_assigned_to_every_node_enrolled_with_the_token(api, identity_factory, capsys):
    from meshadmin.mesh.models import AuditEvent, Node, Tag

    call_command("createtoken", "--uses", "2", "--tag", "web", "--tag", "prod", "--tag", "web")
    out = capsys.readouterr()
    token = out.out.strip().splitlines()[-1]
    assert "created tag web" in out.err and "created tag prod" in out.err and "tags web, prod" in out.err
    assert sorted(EnrollmentToken.objects.get().tags.values_list("name", flat=True)) == ["prod", "web"]
    for name in ("a", "b"):
        assert api.enroll(token, identity_factory(), name).status_code == 201
        assert sorted(Node.objects.get(name=name).tags.values_list("name", flat=True)) == ["prod", "web"]
    assert Tag.objects.count() == 2  # no tag twice
    enrolled = AuditEvent.objects.filter(action="node.enrolled").first()
    assert enrolled.details["tags"] == ["prod", "web"]
    call_command("createtoken", "--tag", "web")  # an existing tag is used, not created again
    assert "created tag" not in capsys.readouterr().err


@pytest.mark.django_db
def test_a_bad_tag_name_is_refused_before_anything_is_made(capsys):
    with pytest.raises(CommandError, match="--tag"):
        call_command("createtoken", "--tag", "Not A Name")
    assert not EnrollmentToken.objects.exists()
