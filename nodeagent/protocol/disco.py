"""Path-discovery payloads: PROBE, PROBE_ACK and CALL (frame types 5, 6, 7). Pure: bytes in, values out.

These frames are end-to-end frames like DATA (frames.py: the same 20-byte header, the receiver's
session index), sealed under the keypair's *disco keys* (keys.DiscoKeys) with their own counter
and replay window. They travel directly to a candidate address, or inside a RELAY envelope
through a hub (a probe of a relayed path, and every CALL). Layouts (docs/protocol.md#path-discovery-frames):

    PROBE      txid (8) ‖ sequence u32 ‖ zero padding, at least PROBE_MIN_PAYLOAD bytes in all
    PROBE_ACK  txid (8) ‖ sequence u32 ‖ observed source: ip version u8 (0 none, 4, 6)
               ‖ address (0, 4 or 16) ‖ port u16 (absent when the version is 0)
    CALL       kind u8 (OFFER 1, ANSWER 2, GO 3) ‖ txid (8) ‖ NAT class u8 ‖ count u8 (≤ MAX_CANDIDATES)
               ‖ count x (candidate kind u8 ‖ ip version u8 (4 or 6) ‖ address ‖ port u16)

An ACK carries at most 31 payload bytes and a probe at least 32, so an ACK is never larger than
the probe it answers (`ack_fits`): a probe cannot make a node send more than it received.
Candidate values are parsed here, not judged: which addresses may be probed is
paths/candidates.py's call.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from .wire import Reader

__all__ = [
    "ACK_MAX_PAYLOAD",
    "MAX_CANDIDATES",
    "PROBE_MIN_PAYLOAD",
    "TXID_SIZE",
    "Ack",
    "Call",
    "CallKind",
    "CandidateKind",
    "DiscoError",
    "NatClass",
    "Probe",
    "WireCandidate",
    "ack_fits",
    "pack_ack",
    "pack_call",
    "pack_probe",
    "parse_ack",
    "parse_call",
    "parse_probe",
]

TXID_SIZE = 8
MAX_CANDIDATES = 16
ACK_MAX_PAYLOAD = TXID_SIZE + 4 + 1 + 16 + 2  # 31
PROBE_MIN_PAYLOAD = ACK_MAX_PAYLOAD + 1  # 32: an ACK is always smaller than its probe
_HEAD = struct.Struct("!8sI")


class DiscoError(ValueError):
    """A disco payload is malformed."""


class CallKind(enum.IntEnum):
    OFFER = 1  # "let us punch": the initiator's candidates
    ANSWER = 2  # the responder's candidates; the initiator times the relay round trip
    GO = 3  # the initiator starts probing after half that round trip; the responder at once


class NatClass(enum.IntEnum):
    UNKNOWN = 0
    PUBLIC = 1  # no translation seen: the hubs saw our own address and port
    EASY = 2  # endpoint-independent mapping: every hub saw the same address and port
    HARD = 3  # a new mapping per destination: two hubs saw different ports


class CandidateKind(enum.IntEnum):
    LOCAL = 1  # an interface address of the node (peers behind the same NAT)
    OBSERVED = 2  # the websocket's source address as the server saw it, with the UDP port
    REFLEXIVE = 3  # the UDP source a hub saw on the data port (a PROBE_ACK's observed address)
    PEER_REFLEXIVE = 4  # the source of an authenticated probe from the peer itself
    CONFIGURED = 5  # an endpoint from the configuration or the netmap's reported endpoint


@dataclass(frozen=True, slots=True)
class WireCandidate:
    kind: CandidateKind
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Probe:
    txid: bytes
    sequence: int
    size: int  # payload length, padding included


@dataclass(frozen=True, slots=True)
class Ack:
    txid: bytes
    sequence: int
    observed: tuple[str, int] | None  # the source (ip, port) the probe came from, None if relayed


@dataclass(frozen=True, slots=True)
class Call:
    kind: CallKind
    txid: bytes
    nat: NatClass
    candidates: tuple[WireCandidate, ...] = ()


def _check_txid(txid: bytes) -> bytes:
    if not isinstance(txid, bytes | bytearray) or len(txid) != TXID_SIZE:
        raise DiscoError(f"txid must be {TXID_SIZE} bytes")
    return bytes(txid)


def _check_u32(v: int, what: str) -> int:
    if type(v) is not int or not 0 <= v < 2**32:
        raise DiscoError(f"{what} must fit in 32 bits")
    return v


def _pack_addr(ip: str, port: int) -> bytes:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise DiscoError(f"bad address {ip!r}") from exc
    if type(port) is not int or not 1 <= port <= 65535:
        raise DiscoError(f"port must be 1..65535, not {port!r}")
    return bytes([addr.version]) + addr.packed + struct.pack("!H", port)


def _read_addr(r: Reader, *, allow_none: bool) -> tuple[str, int] | None:
    version = r.u8("ip version")
    if version == 0 and allow_none:
        return None
    if version == 4:
        ip = str(ipaddress.IPv4Address(r.take(4, "IPv4 address")))
    elif version == 6:
        ip = str(ipaddress.IPv6Address(r.take(16, "IPv6 address")))
    else:
        raise DiscoError(f"ip version must be {'0, ' if allow_none else ''}4 or 6, not {version}")
    port = r.u16("port")
    if port == 0:
        raise DiscoError("port 0")
    return ip, port


# --- PROBE ------------------------------------------------------------------------------------


def pack_probe(txid: bytes, sequence: int, size: int = PROBE_MIN_PAYLOAD) -> bytes:
    """A probe payload of `size` bytes (at least PROBE_MIN_PAYLOAD; the rest is zero padding)."""
    if type(size) is not int or not PROBE_MIN_PAYLOAD <= size <= 65000:
        raise DiscoError(f"probe size must be {PROBE_MIN_PAYLOAD}..65000")
    head = _HEAD.pack(_check_txid(txid), _check_u32(sequence, "sequence"))
    return head + bytes(size - len(head))


def parse_probe(payload: bytes) -> Probe:
    r = Reader(payload, DiscoError)
    txid, seq = r.take(TXID_SIZE, "txid"), r.u32("sequence")
    if len(payload) < PROBE_MIN_PAYLOAD:
        raise DiscoError(f"a probe is at least {PROBE_MIN_PAYLOAD} bytes")
    if any(payload[r.position :]):
        raise DiscoError("probe padding must be zero")
    return Probe(txid, seq, len(payload))


# --- PROBE_ACK --------------------------------------------------------------------------------


def pack_ack(txid: bytes, sequence: int, observed: tuple[str, int] | None) -> bytes:
    head = _HEAD.pack(_check_txid(txid), _check_u32(sequence, "sequence"))
    if observed is None:
        return head + b"\x00"
    return head + _pack_addr(observed[0], observed[1])


def parse_ack(payload: bytes) -> Ack:
    r = Reader(payload, DiscoError)
    txid, seq = r.take(TXID_SIZE, "txid"), r.u32("sequence")
    observed = _read_addr(r, allow_none=True)
    r.end()
    return Ack(txid, seq, observed)


def ack_fits(probe_payload_size: int, ack_payload: bytes) -> bool:
    """An ACK may be sent only if it is not larger than the probe it answers."""
    return len(ack_payload) <= probe_payload_size


# --- CALL -------------------------------------------------------------------------------------


def pack_call(call: Call) -> bytes:
    try:
        kind, nat = CallKind(call.kind), NatClass(call.nat)
    except ValueError as exc:
        raise DiscoError(str(exc)) from exc
    if len(call.candidates) > MAX_CANDIDATES:
        raise DiscoError(f"at most {MAX_CANDIDATES} candidates")
    parts = [bytes([kind]), _check_txid(call.txid), bytes([nat, len(call.candidates)])]
    for c in call.candidates:
        try:
            ckind = CandidateKind(c.kind)
        except ValueError as exc:
            raise DiscoError(str(exc)) from exc
        parts.append(bytes([ckind]) + _pack_addr(c.ip, c.port))
    return b"".join(parts)


def parse_call(payload: bytes) -> Call:
    r = Reader(payload, DiscoError)
    code = r.u8("call kind")
    try:
        kind = CallKind(code)
    except ValueError as exc:
        raise DiscoError(f"unknown call kind {code}") from exc
    txid = r.take(TXID_SIZE, "txid")
    code = r.u8("nat class")
    try:
        nat = NatClass(code)
    except ValueError as exc:
        raise DiscoError(f"unknown NAT class {code}") from exc
    count = r.u8("candidate count")
    if count > MAX_CANDIDATES:
        raise DiscoError(f"at most {MAX_CANDIDATES} candidates, not {count}")
    cands = []
    for _ in range(count):
        code = r.u8("candidate kind")
        try:
            ckind = CandidateKind(code)
        except ValueError as exc:
            raise DiscoError(f"unknown candidate kind {code}") from exc
        addr = _read_addr(r, allow_none=False)
        if addr is None:  # cannot happen: version 0 is refused when allow_none is False
            raise DiscoError("a candidate needs an address")
        cands.append(WireCandidate(ckind, addr[0], addr[1]))
    r.end()
    return Call(kind, txid, nat, tuple(cands))
