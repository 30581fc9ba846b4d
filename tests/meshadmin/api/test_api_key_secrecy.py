"""An operator API key reaches neither the database, the audit log nor any log line, in either log
format, through any of its lives: created by the command and by the service, used well, used
altered, used read-only for a write, revoked and used again. Only its public prefix may appear."""

from __future__ import annotations

import json
import logging

import pytest
from django.apps import apps
from django.core import serializers
from django.core.management import call_command

from meshadmin.mesh.models import ApiKey, AuditEvent
from meshadmin.mesh.services.apikeys import create_api_key, revoke_api_key
from nodeagent.logs import JsonFormatter
from tests.meshadmin.api.operator_client import OperatorClient

pytestmark = pytest.mark.django_db


def _database_dump() -> str:
    return "\n".join(serializers.serialize("json", model.objects.all()) for model in apps.get_models())


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_api_key_is_never_stored_audited_or_logged(network, caplog, capsys, settings, log_format):
    caplog.set_level(logging.DEBUG)
    call_command("createapikey", "--name", "ops-command")
    from_command = capsys.readouterr().out.strip().splitlines()[-1]
    _, read_write = create_api_key("ops")
    ro_row, read_only = create_api_key("dashboards", read_only=True)
    assert from_command.startswith("smk_") and read_write.startswith("smk_")

    assert OperatorClient(from_command).get("/api/networks").status_code == 200
    assert OperatorClient(read_write).post("/api/tokens", {}).status_code == 201
    assert OperatorClient(read_write[:-1] + ("A" if read_write[-1] != "A" else "B")).get(
        "/api/nodes").status_code == 401
    assert OperatorClient(read_only).post("/api/tokens", {}).status_code == 403
    revoke_api_key(ro_row)
    assert OperatorClient(read_only).get("/api/nodes").status_code == 401
    logging.getLogger("meshadmin.test").warning("bearer seen: %s", "Authorization: Bearer <redacted>")

    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(
        settings.LOGGING["formatters"]["plain"]["format"])
    lines = [formatter.format(r) for r in caplog.records]
    assert lines, "nothing was logged: the check would prove nothing"
    if log_format == "json":
        assert all(json.loads(line) for line in lines)
    logs = "\n".join(lines)
    dump = _database_dump()
    audit = "\n".join(json.dumps(e.details) + e.actor + e.object_id for e in AuditEvent.objects.all())
    # the rows and the audit trail exist and name the keys by their prefixes
    prefixes = set(ApiKey.objects.values_list("prefix", flat=True))
    assert len(prefixes) == 3 and all(p in dump for p in prefixes)
    assert ro_row.prefix in audit
    for plaintext in (from_command, read_write, read_only):
        secret_part = plaintext[len("smk_") + 10 + 1:]  # smk_<10 hex prefix>_<secret>
        assert len(secret_part) >= 43
        for where, text in (("database", dump), ("audit log", audit), ("log lines", logs)):
            assert plaintext not in text, f"a whole API key in the {where}"
            assert secret_part not in text, f"an API key's secret part in the {where}"
