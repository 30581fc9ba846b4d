"""Enrollment tokens: create (returns the plaintext once) and revoke.

The plaintext is `<secret>.<CA fingerprint>` (nodeagent/protocol/enroll_token.py): the database
keeps the hash of the secret only; the fingerprint of the network's CA rides along so the
enrolling agent can check the CA key it is given (docs/protocol.md#enrollment-tokens)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from nodeagent.protocol.enroll_token import make_token

from ..changes import Change, announce
from ..choices import AuditAction
from ..constants import DEFAULT_TOKEN_TTL
from ..models import EnrollmentToken, Network, Tag
from ..secrets import hash_secret, new_token, token_prefix
from .common import bump_serial, record_audit
from .errors import InvalidInput

__all__ = ["create_token", "revoke_token"]

MAX_TOKEN_USES = 10_000
MAX_TOKEN_TTL = timedelta(days=365)


def create_token(
    network: Network,
    *,
    uses: int = 1,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
    is_public: bool = False,
    ephemeral: bool = False,
    tags: Iterable[str] = (),
    created_by=None,
    actor: str = "system",
) -> tuple[EnrollmentToken, str]:
    """Create a token; returns (row, plaintext). The plaintext exists only in this return value.
    `tags`: names of existing tags that every node enrolled with it gets (as Tailscale's tagged
    auth keys do). `ephemeral`: the nodes it enrolls are deleted once silent (services/ephemeral.py)."""
    tags = list(dict.fromkeys(tags))
    if not 1 <= uses <= MAX_TOKEN_USES:
        raise InvalidInput(f"uses: must be 1..{MAX_TOKEN_USES}")
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise InvalidInput("expires: must be positive and at most 365 days")
    secret = new_token()
    plaintext = make_token(secret, bytes(network.ca_public_key))
    with transaction.atomic():
        locked = bump_serial(network.pk)
        rows = list(Tag.objects.filter(network=locked, name__in=tags))
        missing = sorted(set(tags) - {t.name for t in rows})
        if missing:
            raise InvalidInput(f"tags: no tag named {missing[0]!r} in network {locked.name}")
        token = EnrollmentToken.objects.create(
            token_hash=hash_secret("enroll", secret),
            prefix=token_prefix(plaintext),
            network=locked,
            max_uses=uses,
            uses_left=uses,
            expires_at=timezone.now() + ttl,
            is_public=is_public,
            ephemeral=ephemeral,
            created_by=created_by,
        )
        token.tags.set(rows)
        record_audit(
            AuditAction.TOKEN_CREATED,
            actor=actor,
            network=locked,
            obj=token,
            prefix=token.prefix,
            uses=uses,
            is_public=is_public,
            ephemeral=ephemeral,
            expires_at=token.expires_at.isoformat(),
            tags=sorted(tags),
        )
        announce(Change(locked.pk, "token.created", frozenset(), locked.serial))
    return token, plaintext


def revoke_token(token: EnrollmentToken, *, actor: str = "system") -> EnrollmentToken:
    with transaction.atomic():
        locked = bump_serial(token.network_id)
        EnrollmentToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now())
        token.refresh_from_db()
        record_audit(AuditAction.TOKEN_REVOKED, actor=actor, network=locked, obj=token, prefix=token.prefix)
        announce(Change(locked.pk, "token.revoked", frozenset(), locked.serial))
    return token
