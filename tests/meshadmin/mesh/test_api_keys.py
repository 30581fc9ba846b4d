"""Operator API keys (services/apikeys.py): shown once, stored hashed, scoped, revoked, audited,
last use noted at most once a minute."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.core import serializers
from django.utils import timezone

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import ApiKey, AuditEvent
from meshadmin.mesh.secrets import hash_secret
from meshadmin.mesh.services import Conflict, Forbidden, InvalidInput, NotAuthenticated
from meshadmin.mesh.services.apikeys import (
    LAST_USE_RESOLUTION,
    authenticate_api_key,
    clean_allowed_from,
    create_api_key,
    find_api_key,
    note_use,
    revoke_api_key,
    source_allowed,
)

pytestmark = pytest.mark.django_db


def _dump() -> str:
    return "\n".join(serializers.serialize("json", m.objects.all()) for m in apps.get_models())


def test_a_key_is_returned_once_and_only_its_hash_is_stored():
    key, plaintext = create_api_key("ci", actor="user:alice")
    assert plaintext.startswith(key.prefix + "_") and key.prefix.startswith("smk_")
    assert len(plaintext) >= len(key.prefix) + 1 + 43  # 256 random bits after the prefix
    assert key.key_hash == hash_secret("apikey", plaintext)
    secret = plaintext[len(key.prefix) + 1:]
    dump = _dump()
    assert key.prefix in dump and plaintext not in dump and secret not in dump
    assert ApiKey.objects.get().created_by == "user:alice"


def test_two_keys_differ_in_prefix_and_secret():
    (a, a_text), (b, b_text) = create_api_key("a"), create_api_key("b")
    assert a.prefix != b.prefix and a_text[len(a.prefix):] != b_text[len(b.prefix):]


def test_creation_is_audited_without_the_key():
    key, plaintext = create_api_key("deploy", read_only=True, actor="cli")
    event = AuditEvent.objects.get(action=AuditAction.APIKEY_CREATED)
    assert (event.actor, event.object_type, event.object_id) == ("cli", "apikey", key.prefix)
    assert event.details["scope"] == "read-only" and event.details["name"] == "deploy"
    assert plaintext not in str(event.details) and plaintext[len(key.prefix) + 1:] not in str(event.details)


def test_names_and_lifetimes_are_checked():
    with pytest.raises(InvalidInput, match=r"^name:"):
        create_api_key("  ")
    with pytest.raises(InvalidInput, match=r"^name:"):
        create_api_key("x" * 64)
    with pytest.raises(InvalidInput, match=r"^expires:"):
        create_api_key("ok", ttl=timedelta(0))
    with pytest.raises(InvalidInput, match=r"^expires:"):
        create_api_key("ok", ttl=timedelta(days=3651))
    assert create_api_key("forever", ttl=None)[0].expires_at is None
    assert not ApiKey.objects.exclude(name="forever").exists()


def test_scopes_read_only_keys_may_read_and_not_write():
    rw, rw_text = create_api_key("rw")
    ro, ro_text = create_api_key("ro", read_only=True)
    assert authenticate_api_key(rw_text, write=True).pk == rw.pk
    assert authenticate_api_key(rw_text, write=False).pk == rw.pk
    assert authenticate_api_key(ro_text, write=False).pk == ro.pk
    with pytest.raises(Forbidden):
        authenticate_api_key(ro_text, write=True, source_ip="198.18.0.9")
    denied = AuditEvent.objects.get(action=AuditAction.APIKEY_DENIED)
    assert denied.actor == f"apikey:{ro.prefix}" and denied.details["reason"] == "read-only key"
    assert denied.source_ip == "198.18.0.9"


def test_unknown_revoked_and_expired_keys_are_refused_and_audited():
    key, plaintext = create_api_key("soon", ttl=timedelta(hours=1))
    for bad in ("", "smk_nope", plaintext + "x", plaintext[:-1], "x" * 300, plaintext.upper()):
        with pytest.raises(NotAuthenticated):
            authenticate_api_key(bad, write=False, source_ip="198.18.0.1")
    unknown = AuditEvent.objects.get(action=AuditAction.APIKEY_DENIED)
    assert unknown.actor == "anonymous" and unknown.details["reason"] == "unknown key"
    assert unknown.count == 6  # folded: one row for the same refusal from the same address
    with pytest.raises(NotAuthenticated):
        authenticate_api_key(plaintext, write=False, now=timezone.now() + timedelta(hours=2))
    assert AuditEvent.objects.filter(action=AuditAction.APIKEY_DENIED,
                                     details__reason="expired key").count() == 1
    revoke_api_key(key, actor="user:alice")
    with pytest.raises(NotAuthenticated):
        authenticate_api_key(plaintext, write=False)
    revoked = AuditEvent.objects.get(action=AuditAction.APIKEY_DENIED, details__reason="revoked key")
    assert revoked.actor == f"apikey:{key.prefix}" and revoked.object_id == key.prefix


def test_revocation_is_audited_once_and_is_final():
    key, _ = create_api_key("old")
    revoke_api_key(key, actor="user:alice")
    event = AuditEvent.objects.get(action=AuditAction.APIKEY_REVOKED)
    assert (event.actor, event.object_id) == ("user:alice", key.prefix)
    with pytest.raises(Conflict):
        revoke_api_key(key)
    assert AuditEvent.objects.filter(action=AuditAction.APIKEY_REVOKED).count() == 1
    assert ApiKey.objects.get().state(timezone.now()) == "revoked"


def test_the_last_use_is_written_at_most_once_a_minute(django_assert_num_queries):
    key, plaintext = create_api_key("busy")
    t0 = timezone.now()
    with django_assert_num_queries(2):  # the lookup and the first note of a use
        authenticate_api_key(plaintext, write=False, source_ip="198.18.0.5", now=t0)
    key.refresh_from_db()
    assert key.last_used_at == t0 and key.last_used_ip == "198.18.0.5"
    for seconds in (1, 30, 59):
        with django_assert_num_queries(1):  # the lookup only: no write within the minute
            authenticate_api_key(plaintext, write=True, source_ip="198.18.0.6",
                                 now=t0 + timedelta(seconds=seconds))
    key.refresh_from_db()
    assert key.last_used_at == t0
    later = t0 + LAST_USE_RESOLUTION
    authenticate_api_key(plaintext, write=False, source_ip="198.18.0.7", now=later)
    key.refresh_from_db()
    assert key.last_used_at == later and key.last_used_ip == "198.18.0.7"


def test_a_stale_copy_of_the_row_does_not_write_a_second_use_within_the_minute():
    """Two processes read the row before either noted the use: the second UPDATE matches nothing."""
    key, _ = create_api_key("raced")
    t0 = timezone.now()
    first, second = ApiKey.objects.get(pk=key.pk), ApiKey.objects.get(pk=key.pk)
    assert note_use(first, "198.18.0.1", t0) is True
    assert note_use(second, "198.18.0.2", t0 + timedelta(seconds=5)) is False
    assert (ApiKey.objects.get().last_used_at, ApiKey.objects.get().last_used_ip) == (t0, "198.18.0.1")
    assert note_use(second, "198.18.0.2", t0 + LAST_USE_RESOLUTION) is True


def test_keys_are_found_by_prefix_or_id():
    key, _ = create_api_key("k")
    assert find_api_key(key.prefix) == key and find_api_key(str(key.pk)) == key
    assert find_api_key("smk_0000000000") is None and find_api_key("") is None


def test_a_key_bound_to_prefixes_works_only_from_inside_them_and_says_why_in_the_audit_log():
    """A key that leaks is of no use from elsewhere: the same 401 as an unknown key (nothing tells
    the caller that the key itself is good), the reason in the audit log."""
    key, plaintext = create_api_key("ci", allowed_from="198.51.100.0/24, 2001:db8::/32")
    assert key.allowed_from == ["198.51.100.0/24", "2001:db8::/32"]
    for inside in ("198.51.100.7", "2001:db8::1", "::ffff:198.51.100.9"):
        assert authenticate_api_key(plaintext, write=True, source_ip=inside) == key
    for outside in ("198.51.101.7", "2001:db9::1", None):
        with pytest.raises(NotAuthenticated) as refused:
            authenticate_api_key(plaintext, write=False, source_ip=outside)
        assert refused.value.detail == "invalid, revoked or expired API key"
    denied = AuditEvent.objects.filter(action=AuditAction.APIKEY_DENIED,
                                       details__reason="source address not allowed")
    assert denied.count() >= 3 and all(e.actor == f"apikey:{key.prefix}" for e in denied)
    created = AuditEvent.objects.get(action=AuditAction.APIKEY_CREATED)
    assert created.details["allowed_from"] == ["198.51.100.0/24", "2001:db8::/32"]
    assert not source_allowed(key, "not-an-address")  # never from the server: an address or None
    unbound, anywhere = create_api_key("anywhere")
    assert unbound.allowed_from == []
    assert authenticate_api_key(anywhere, write=False, source_ip=None) == unbound


@pytest.mark.parametrize("given, says", [
    ("198.51.100.1/24", "host bits"), ("10.0.0.300", "not an address"), (["10.0.0.0/8", 7], "a list"),
    (" ".join(f"10.0.{i}.0/24" for i in range(33)), "at most 32"), ({"10.0.0.0/8": 1}, "a list"),
])
def test_bad_source_prefixes_are_refused_naming_the_field_and_no_key_is_made(given, says):
    with pytest.raises(InvalidInput) as refused:
        create_api_key("ci", allowed_from=given)
    assert refused.value.detail.startswith("allowed_from: ") and says in refused.value.detail
    assert not ApiKey.objects.exists()


def test_source_prefixes_are_stored_canonical_and_unique():
    assert clean_allowed_from("198.51.100.7 198.51.100.7/32,2001:DB8::/32") == [
        "198.51.100.7/32", "2001:db8::/32"]
    assert clean_allowed_from(None) == clean_allowed_from("") == clean_allowed_from([]) == []
