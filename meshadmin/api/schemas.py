"""Request and response bodies. Requests forbid unknown fields; binary values are standard base64."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, WithJsonSchema

__all__ = [
    "B64Bytes",
    "ChallengeIn",
    "ChallengeOut",
    "EnrollIn",
    "EnrollOut",
    "ErrorOut",
    "PeerOut",
    "RegisterIn",
    "VerifyIn",
    "VerifyOut",
    "b64",
]


def _decode_b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not valid base64 (standard alphabet, with padding)") from None


B64Bytes = Annotated[
    bytes,
    BeforeValidator(_decode_b64),
    WithJsonSchema({"type": "string", "format": "byte", "description": "standard base64"}),
]


def b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


class _Request(Schema):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(Schema):
    detail: str


class EnrollIn(_Request):
    token: StrictStr = Field(max_length=256)
    name: StrictStr = Field(max_length=256)
    public_key: B64Bytes
    endpoint: StrictStr | None = Field(default=None, max_length=64, description="IP:PORT of the control port")
    is_public: StrictBool | None = None


class EnrollOut(Schema):
    peer_id: str
    overlay_ip: str
    certificate: str = Field(description="base64 mesh certificate (nodeagent.protocol.cert)")
    ca_public_key: str = Field(description="base64 raw ML-DSA-87 public key of the network's CA")
    network: str


class ChallengeIn(_Request):
    peer_id: StrictStr = Field(max_length=64)


class ChallengeOut(Schema):
    challenge: str = Field(
        description="base64, 32 bytes; sign the decoded bytes with context shadowmesh/auth/v1"
    )
    expires_at: datetime


class VerifyIn(_Request):
    peer_id: StrictStr = Field(max_length=64)
    challenge: B64Bytes
    signature: B64Bytes


class VerifyOut(Schema):
    session_token: str
    expires_at: datetime


class RegisterIn(_Request):
    ip: StrictStr = Field(max_length=64)
    port: StrictInt
    udp_port: StrictInt
    is_public: StrictBool


class PeerOut(Schema):
    peer_id: str
    name: str
    overlay_ip: str | None
    ip: str | None
    port: int | None
    udp_port: int | None
    is_public: bool
    public_key: str
    last_seen: datetime | None
    expires_at: datetime | None
