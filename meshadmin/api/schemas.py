"""Request and response bodies. Requests forbid unknown fields; binary values are standard base64.

The OpenAPI schema states every constraint the server enforces (tests/fuzz/test_api_schema.py runs
schemathesis against it). What JSON Schema cannot express is named by a `format` with its rule in
the description, and listed in FORMATS:

    shadowmesh-label         1..63 bytes of UTF-8 once surrounding spaces are stripped, no control
                             characters (a certificate's name)
    shadowmesh-public-key    base64 of a raw ML-DSA-87 public key (2,592 bytes)
    shadowmesh-endpoint-ip   an IPv4 or IPv6 address peers may be sent to: not unspecified, loopback,
                             link-local, multicast or broadcast (nodeagent/protocol/endpoints.py)
    shadowmesh-endpoint      such an address and a port 1..65535: "IP:PORT" or "[IPv6]:PORT"
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from ninja import Schema
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

__all__ = [
    "FORMATS",
    "B64Bytes",
    "ChallengeIn",
    "ChallengeOut",
    "EnrollIn",
    "EnrollOut",
    "ErrorOut",
    "JsonInt",
    "LinkOut",
    "LinkPointOut",
    "LinkSeriesOut",
    "LinksOut",
    "PeerOut",
    "RegisterIn",
    "Request",
    "VerifyIn",
    "VerifyOut",
    "b64",
    "integral",
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


FORMATS = ("shadowmesh-label", "shadowmesh-public-key", "shadowmesh-endpoint-ip", "shadowmesh-endpoint")
PEER_ID_PATTERN = "^[0-9a-f]{40}$"
_PUBLIC_KEY_B64 = 3456  # base64 of 2,592 bytes, no padding needed


def _format(name: str, description: str, **more: int) -> dict[str, JsonValue]:
    """The schema's extra keys for a field in a named format (its rule in the description)."""
    return {"format": name, "description": description, **more}


def _integral(value: object) -> object:
    """JSON has numbers, not integers: 1063.0 is the integer 1063 to JSON Schema (and to the
    schema's clients), so it is one here too; 1063.5, "1063" and true are still refused."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]
# A bounded JSON integer: Annotated[StrictInt, Field(ge=.., le=..), BeforeValidator(integral)]; bounds
# given after the validator would reach the schema as "ge"/"le", which JSON Schema ignores.
integral = _integral


def b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


class _Request(Schema):
    model_config = ConfigDict(extra="forbid")


Request = _Request  # the base of every request body: unknown fields are refused


class ErrorOut(Schema):
    detail: str


class EnrollIn(_Request):
    token: StrictStr = Field(max_length=256)
    name: StrictStr = Field(min_length=1, max_length=63, json_schema_extra=_format(
        "shadowmesh-label", "the node's name: 1..63 bytes of UTF-8 after stripping surrounding spaces, "
        "no control characters"))
    public_key: B64Bytes = Field(json_schema_extra=_format(
        "shadowmesh-public-key", "standard base64 of the node's raw ML-DSA-87 public key (2,592 bytes)",
        minLength=_PUBLIC_KEY_B64, maxLength=_PUBLIC_KEY_B64))
    endpoint: StrictStr | None = Field(default=None, max_length=64, json_schema_extra=_format(
        "shadowmesh-endpoint", "IP:PORT (or [IPv6]:PORT) of the control port, an address peers may be sent "
        "to (no unspecified, loopback, link-local, multicast or broadcast address), port 1..65535; "
        "empty or absent: none"))
    is_public: StrictBool | None = None


class EnrollOut(Schema):
    peer_id: str
    overlay_ip: str
    certificate: str = Field(description="base64 mesh certificate (nodeagent.protocol.cert)")
    ca_public_key: str = Field(description="base64 raw ML-DSA-87 public key of the network's CA")
    network: str


class ChallengeIn(_Request):
    # any other string is refused as an unknown peer (401, audited), not as a malformed request
    peer_id: StrictStr = Field(max_length=64, json_schema_extra={"pattern": PEER_ID_PATTERN})


class ChallengeOut(Schema):
    challenge: str = Field(
        description="base64, 32 bytes; sign the decoded bytes with context shadowmesh/auth/v1"
    )
    expires_at: datetime


class VerifyIn(_Request):
    peer_id: StrictStr = Field(max_length=64, json_schema_extra={"pattern": PEER_ID_PATTERN})
    challenge: B64Bytes
    signature: B64Bytes


class VerifyOut(Schema):
    session_token: str
    expires_at: datetime


class RegisterIn(_Request):
    ip: StrictStr = Field(max_length=64, json_schema_extra=_format(
        "shadowmesh-endpoint-ip", "an IPv4 or IPv6 address peers may be sent to: no unspecified, loopback, "
        "link-local, multicast or broadcast address"))
    port: JsonInt = Field(ge=1, le=65535)
    udp_port: JsonInt = Field(ge=1, le=65535)
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


class _Rates(Schema):
    tx_bytes_per_s: float
    rx_bytes_per_s: float
    tx_frames_per_s: float
    rx_frames_per_s: float
    loss_pct: float


class LinkPointOut(_Rates):
    at: datetime
    peer: str
    path: str
    rtt_ms: float | None
    last_handshake_s: float | None


class LinkOut(LinkPointOut):
    reporter: str


class LinksOut(Schema):
    network: str
    links: list[LinkOut]


class LinkSeriesOut(Schema):
    reporter: str
    peer: str
    window: str
    resolution: str = Field(description='"raw" (windows up to 1 h) or "1m"')
    points: list[LinkPointOut]
