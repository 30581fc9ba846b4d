"""Operator API keys: create (the plaintext is returned once), revoke, and check one on a request.

A key is `smk_<10 hex>_<43 characters>`: the first part (`prefix`) is random and no part of the
secret, so showing it (dashboard, audit log, `manage.py listapikeys`) gives nothing away; the rest is
256 random bits. Only the HMAC of the whole key is stored (mesh/secrets.py, domain "apikey").

A key may be bound to source prefixes (`allowed_from`): used from any other client address it is
refused like an unknown key (401; the audit log says why), so a key that leaks is of no use
outside the networks it was made for.

Every creation and revocation is audited; so is every refused use (an unknown, revoked or expired
key, or one used from an address it is not allowed from: 401; a read-only key on a write: 403),
folded like the other refusals (services/audit.py).
A good key's last use is written at most once per LAST_USE_RESOLUTION: a conditional UPDATE that
matches nothing while the stored time is recent, and is not even sent when the row just read is.
"""

from __future__ import annotations

import ipaddress
import secrets as _secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from meshadmin.client_address import address_in

from ..choices import AuditAction
from ..models import ApiKey, Network
from ..secrets import hash_secret, new_token
from .audit import record_refusal
from .common import apikey_actor, record_audit
from .errors import Conflict, Forbidden, InvalidInput, NotAuthenticated
from .validation import clean_label

__all__ = [
    "DEFAULT_API_KEY_TTL", "KEY_MARK", "LAST_USE_RESOLUTION", "MAX_ALLOWED_FROM", "MAX_API_KEY_TTL",
    "authenticate_api_key", "clean_allowed_from", "create_api_key", "find_api_key", "note_use",
    "revoke_api_key", "source_allowed",
]

KEY_MARK = "smk_"  # "ShadowMesh key": lets people and secret scanners recognise one
PREFIX_HEX = 10
DEFAULT_API_KEY_TTL = timedelta(days=90)
MAX_API_KEY_TTL = timedelta(days=3650)
LAST_USE_RESOLUTION = timedelta(seconds=60)
_MAX_KEY_LENGTH = 256
_REFUSED = "invalid, revoked or expired API key"
MAX_ALLOWED_FROM = 32


def clean_allowed_from(values: str | Iterable[str] | None) -> list[str]:
    """Source prefixes as stored: canonical, unique, in the given order; a bare address is its host
    prefix. Text is split at commas and whitespace. InvalidInput names `allowed_from`."""
    if values is None:
        return []
    if isinstance(values, str):
        values = values.replace(",", " ").split()
    elif not isinstance(values, list | tuple):
        raise InvalidInput("allowed_from: a list of addresses or prefixes like 198.51.100.0/24")
    out: list[str] = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise InvalidInput("allowed_from: a list of addresses or prefixes like 198.51.100.0/24")
        try:
            net = ipaddress.ip_network(v.strip(), strict=True)
        except ValueError:
            raise InvalidInput(f"allowed_from: {v.strip()[:60]!r} is not an address or a prefix with its "
                               "host bits zero") from None
        if str(net) not in out:
            out.append(str(net))
    if len(out) > MAX_ALLOWED_FROM:
        raise InvalidInput(f"allowed_from: at most {MAX_ALLOWED_FROM} prefixes")
    return out


def source_allowed(key: ApiKey, source_ip: str | None) -> bool:
    """May `key` be used from `source_ip`? Always when it names no prefix; never from an unknown
    address when it does. An IPv4 client seen as IPv4-mapped IPv6 counts as IPv4."""
    if not key.allowed_from:
        return True
    return address_in(source_ip, [ipaddress.ip_network(p) for p in key.allowed_from])


def _new_key() -> tuple[str, str]:
    prefix = KEY_MARK + _secrets.token_hex(PREFIX_HEX // 2)
    return prefix, f"{prefix}_{new_token()}"


def create_api_key(
    name: str, *, read_only: bool = False, ttl: timedelta | None = DEFAULT_API_KEY_TTL, actor: str = "system",
    allowed_from: str | Iterable[str] | None = None, network: Network | None = None,
) -> tuple[ApiKey, str]:
    """A new key; returns (row, plaintext). The plaintext exists only in this return value.
    `ttl` None: the key never expires. `allowed_from`: the source prefixes it may be used from
    (clean_allowed_from; empty: anywhere). `network`: the one network it may see and change
    (None: every network)."""
    name = clean_label(name, "name")
    sources = clean_allowed_from(allowed_from)
    if ttl is not None and not timedelta(0) < ttl <= MAX_API_KEY_TTL:
        raise InvalidInput(f"expires: must be positive and at most {MAX_API_KEY_TTL.days} days")
    for _ in range(3):  # a prefix collision (40 random bits) is retried, not reported
        prefix, plaintext = _new_key()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    name=name, prefix=prefix, key_hash=hash_secret("apikey", plaintext), read_only=read_only,
                    created_by=actor[:100], expires_at=None if ttl is None else timezone.now() + ttl,
                    allowed_from=sources, network=network,
                )
                record_audit(AuditAction.APIKEY_CREATED, actor=actor, obj=key, object_id=prefix,
                             prefix=prefix, name=name, scope=key.scope,
                             expires_at=key.expires_at.isoformat() if key.expires_at else None,
                             allowed_from=sources, network=network)
        except IntegrityError:
            continue
        return key, plaintext
    raise Conflict("could not choose an unused key prefix; try again")


def revoke_api_key(key: ApiKey, *, actor: str = "system") -> ApiKey:
    """From now on the key is refused (401). Its row stays, so the audit log keeps naming it."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=key.pk, revoked_at=None).update(revoked_at=timezone.now())
        key.refresh_from_db()
        if not revoked:
            raise Conflict(f"API key {key.prefix} is already revoked")
        record_audit(AuditAction.APIKEY_REVOKED, actor=actor, obj=key, object_id=key.prefix,
                     prefix=key.prefix, name=key.name)
    return key


def find_api_key(ident: str) -> ApiKey | None:
    """The key named by its prefix (`smk_…`) or its numeric id."""
    ident = (ident or "").strip()
    if ident.isascii() and ident.isdigit():
        return ApiKey.objects.filter(pk=int(ident)).first()
    return ApiKey.objects.filter(prefix=ident).first()


def _refuse(reason: str, key: ApiKey | None, source_ip: str | None, *, write: bool) -> None:
    record_refusal(
        AuditAction.APIKEY_DENIED, reason=reason,
        actor=apikey_actor(key) if key is not None else "anonymous",
        object_type="apikey" if key is not None else "", object_id=key.prefix if key is not None else "",
        source_ip=source_ip, channel="api", write=write,
    )


def authenticate_api_key(
    plaintext: str, *, write: bool, source_ip: str | None = None, now: datetime | None = None,
) -> ApiKey:
    """The key a request presents, checked for a `write` (anything but GET) or a read.

    Raises NotAuthenticated (unknown, revoked or expired key, or one not allowed from `source_ip`)
    or Forbidden (a read-only key asked to write); both are audited. On success the key's last use
    is noted (at most once a minute)."""
    now = now or timezone.now()
    key = None
    if plaintext and len(plaintext) <= _MAX_KEY_LENGTH and plaintext.startswith(KEY_MARK):
        key = ApiKey.objects.filter(key_hash=hash_secret("apikey", plaintext)).first()
    if key is None:
        _refuse("unknown key", None, source_ip, write=write)
        raise NotAuthenticated(_REFUSED)
    state = key.state(now)
    if state != "active":
        _refuse(f"{state} key", key, source_ip, write=write)
        raise NotAuthenticated(_REFUSED)
    if not source_allowed(key, source_ip):
        _refuse("source address not allowed", key, source_ip, write=write)
        raise NotAuthenticated(_REFUSED)
    if write and key.read_only:
        _refuse("read-only key", key, source_ip, write=write)
        raise Forbidden("this API key is read-only")
    note_use(key, source_ip, now)
    return key


def note_use(key: ApiKey, source_ip: str | None, now: datetime) -> bool:
    """Record a use of `key` unless one was recorded less than LAST_USE_RESOLUTION ago: no query at
    all when the row in hand says so, and an UPDATE that matches nothing when another process
    recorded one since that row was read. Returns whether a use was written."""
    if key.last_used_at is not None and now - key.last_used_at < LAST_USE_RESOLUTION:
        return False
    return bool(ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at=None) | Q(last_used_at__lte=now - LAST_USE_RESOLUTION)
    ).update(last_used_at=now, last_used_ip=source_ip))
