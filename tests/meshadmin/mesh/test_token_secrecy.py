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
