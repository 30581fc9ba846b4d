"""No plaintext enrollment or session token reaches the database or the logs."""

import logging

import pytest
from django.apps import apps
from django.core import serializers

pytestmark = pytest.mark.django_db


def _database_dump() -> str:
    rows = []
    for model in apps.get_models():
        rows.append(serializers.serialize("json", model.objects.all()))
    return "\n".join(rows)


def test_tokens_appear_in_neither_the_database_nor_the_logs(api, make_token, identity_factory, caplog):
    caplog.set_level(logging.DEBUG)
    one_time = make_token()
    reusable = make_token(uses=3)
    ident = identity_factory()
    assert api.enroll(one_time, ident, "belgium").status_code == 201
    assert api.enroll(one_time, identity_factory(), "again").status_code == 403  # logs a refusal
    assert api.enroll(reusable, identity_factory(), "mac").status_code == 201
    session = api.login(ident)
    assert (
        api.post(
            "/api/peers/register", {"ip": "198.18.0.4", "port": 1, "udp_port": 2, "is_public": False}
        ).status_code
        == 200
    )
    api.bearer = session + "x"
    assert api.get(f"/api/peers/{ident.peer_id}").status_code == 401  # logs a refusal too

    dump = _database_dump()
    logs = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "belgium" in dump  # the dump does contain the enrolled rows
    for secret in (one_time, reusable, session):
        assert secret not in dump
        assert secret not in logs


def test_the_createtoken_command_prints_the_token_but_stores_only_its_hash(capsys):
    from django.core.management import call_command

    call_command("createtoken", "--uses", "2")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(token) >= 43
    assert token not in _database_dump()


def _secret_forms(raw: bytes) -> list[str]:
    import base64

    return [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_a_formatted_log_line_in_either_format(
        api, make_token, identity_factory, network, caplog, settings, log_format):
    """Enrollment, HTTP auth, a bad session token, the websocket-free API and /metrics with a wrong
    and a right token, every record formatted as the server formats it (settings.LOGGING): no
    enrollment token, session token, node or CA private key, metrics token or secret key."""
    import asyncio
    import json

    from meshadmin.mesh.pki import load_ca_key
    from nodeagent.logs import JsonFormatter

    metrics_token = "secret-metrics-token-" + "q" * 24
    settings.SHADOWMESH_METRICS_TOKEN = metrics_token
    caplog.set_level(logging.DEBUG)
    token = make_token()
    ident = identity_factory()
    assert api.enroll(token, ident, "belgium").status_code == 201
    assert api.enroll(token, identity_factory(), "again").status_code == 403
    session = api.login(ident)
    api.bearer = session[:-2] + "xy"
    assert api.get(f"/api/peers/{ident.peer_id}").status_code == 401
    from meshadmin.asgi import application

    for presented in (metrics_token + "z", metrics_token):
        scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {presented}".encode())], "client": ("198.18.0.5", 1)}
        sent: list = []

        async def send(message, sent=sent):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b""}

        asyncio.run(application(scope, receive, send))
        assert sent[0]["status"] in (200, 401)
    logging.getLogger("meshadmin.test").warning("a line with extras", extra={"event": "x", "peer_id": "p"})

    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(
        settings.LOGGING["formatters"]["plain"]["format"])
    lines = [formatter.format(r) for r in caplog.records]
    assert lines, "nothing was logged: the check would prove nothing"
    if log_format == "json":
        parsed = [json.loads(line) for line in lines]
        assert all({"timestamp", "level", "logger", "message", "event"} <= set(p) for p in parsed)
        assert any(p["event"] == "x" and p["peer_id"] == "p" for p in parsed)
    text = "\n".join(lines)
    ca_seed = load_ca_key(network).private_bytes_raw()
    secrets = [token, token.split(".")[0], session, metrics_token, settings.SECRET_KEY,
               *_secret_forms(ident.key.private_bytes_raw()), *_secret_forms(ca_seed)]
    for secret in secrets:
        assert secret not in text
