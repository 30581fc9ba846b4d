"""`manage.py createapikey [--read-only]` prints a working key as its last line; `listapikeys`
and `revokeapikey` list and revoke keys from the server's shell."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import ApiKey, AuditEvent
from tests.meshadmin.api.operator_client import OperatorClient

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[3]


def _create(capsys, *args: str) -> tuple[str, str]:
    call_command("createapikey", *args)
    captured = capsys.readouterr()
    return captured.out.strip().splitlines()[-1], captured.err


def test_the_last_line_is_a_read_write_key_that_works(capsys, network):
    key, told = _create(capsys)
    row = ApiKey.objects.get()
    assert key.startswith(row.prefix + "_") and row.prefix in told and "read-write" in told
    assert key not in told
    client = OperatorClient(key)
    assert client.get("/api/nodes").status_code == 200
    created = client.post("/api/tokens", {"uses": 1})
    assert created.status_code == 201
    assert AuditEvent.objects.get(action=AuditAction.TOKEN_CREATED).actor == f"apikey:{row.prefix}"
    assert AuditEvent.objects.get(action=AuditAction.APIKEY_CREATED).actor == "cli"


def test_read_only_keys_read_and_cannot_write(capsys, network):
    key, told = _create(capsys, "--read-only", "--name", "grafana")
    assert "read-only" in told
    client = OperatorClient(key)
    assert client.get("/api/tokens").status_code == 200
    assert client.post("/api/tokens", {}).status_code == 403
    assert ApiKey.objects.get().name == "grafana"


def test_expiry_options(capsys):
    before = timezone.now()
    _create(capsys)
    _create(capsys, "--expires", "12h")
    _create(capsys, "--expires", "never")
    default, twelve, never = ApiKey.objects.order_by("id")
    assert timedelta(days=89) < default.expires_at - before <= timedelta(days=90, seconds=5)
    assert timedelta(hours=11) < twelve.expires_at - before <= timedelta(hours=12, seconds=5)
    assert never.expires_at is None
    with pytest.raises(CommandError, match="--expires"):
        call_command("createapikey", "--expires", "soon")
    with pytest.raises(CommandError, match="name"):
        call_command("createapikey", "--name", " ")
    assert ApiKey.objects.count() == 3


def test_list_shows_prefixes_and_last_use_never_the_keys(capsys, network):
    key, _ = _create(capsys, "--name", "ci")
    old, _ = _create(capsys, "--name", "old")
    OperatorClient(key).get("/api/nodes")
    call_command("revokeapikey", ApiKey.objects.get(name="old").prefix)
    capsys.readouterr()
    call_command("listapikeys")
    listing = capsys.readouterr().out
    ci = ApiKey.objects.get(name="ci")
    assert ci.prefix in listing and "old" not in listing and key not in listing
    line = next(line for line in listing.splitlines() if ci.prefix in line)
    assert "read-write" in line and "active" in line and f"{ci.last_used_at:%Y-%m-%d %H:%M}" in line
    call_command("listapikeys", "--all")
    everything = capsys.readouterr().out
    assert "revoked" in everything and old not in everything


def test_revoke_by_prefix_or_id_stops_the_key(capsys, network):
    key, _ = _create(capsys)
    row = ApiKey.objects.get()
    call_command("revokeapikey", row.prefix)
    assert f"revoked {row.prefix}" in capsys.readouterr().out
    assert OperatorClient(key).get("/api/nodes").status_code == 401
    assert AuditEvent.objects.get(action=AuditAction.APIKEY_REVOKED).actor == "cli"
    with pytest.raises(CommandError, match="already revoked"):
        call_command("revokeapikey", str(row.pk))
    with pytest.raises(CommandError, match="no API key"):
        call_command("revokeapikey", "smk_0000000000")


def test_the_command_as_a_process_prints_only_the_key_on_stdout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SHADOWMESH_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="meshadmin.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True,
                   timeout=300)
    done = subprocess.run([sys.executable, "manage.py", "createapikey", "--read-only"], cwd=ROOT, env=env,
                          check=True, capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("smk_")
    assert "read-only" in done.stderr and lines[0] not in done.stderr


def test_allow_from_binds_the_key_to_client_addresses(capsys, network):
    key, told = _create(capsys, "--allow-from", "198.51.100.0/24", "--allow-from", "2001:db8::/32")
    assert "from 198.51.100.0/24, 2001:db8::/32" in told
    assert OperatorClient(key, remote_addr="198.51.100.20").get("/api/nodes").status_code == 200
    outside = OperatorClient(key, remote_addr="203.0.113.5").get("/api/nodes")
    assert outside.status_code == 401 and outside.json()["detail"] == "invalid, revoked or expired API key"
    call_command("listapikeys")
    assert "(from 198.51.100.0/24, 2001:db8::/32)" in capsys.readouterr().out
    with pytest.raises(CommandError, match="allowed_from"):
        call_command("createapikey", "--allow-from", "198.51.100.1/24")
    assert ApiKey.objects.count() == 1


def test_network_limits_the_key_to_one_network(capsys, network):
    key, told = _create(capsys, "--network", "default", "--name", "ci")
    assert "network default" in told
    assert ApiKey.objects.get().network == network
    assert OperatorClient(key).get("/api/networks").json()[0]["name"] == "default"
    call_command("listapikeys")
    assert "(network default)" in capsys.readouterr().out
    with pytest.raises(CommandError, match="--network: no network named 'nowhere'"):
        call_command("createapikey", "--network", "nowhere")
    assert ApiKey.objects.count() == 1
