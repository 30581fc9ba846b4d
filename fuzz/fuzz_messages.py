"""The agent websocket (nodeagent/protocol/messages.py and what it is built on: netmap.py,
counters.py, strict.py, netmap_sign.py): every frame a server or an agent may send, the signed
netmap envelopes, netmap and delta bodies, and the persisted signed netmap (netmap.json).

Declared error: strict.MessageError (Malformed, TooLarge, UnknownType, UnsupportedVersion,
netmap_sign.BadNetmapSignature); the persisted file is read by server_link.load_signed_netmap,
which must never raise. Input: a mode byte, then
  0  an agent frame (auth, resync, ack, endpoints, stats with per-peer counters, renew);
  1  a server frame read without a CA key (challenge, netmap, delta, certificate);
  2  a server frame read as the agent reads it, with the CA key: a netmap or delta whose
     signature does not verify is refused before its body is parsed;
  3  a 2-byte length, a netmap body of that length, then a delta body (msgpack): parsed,
     round-tripped through the plain-data form, and diff/apply_delta between the world's map
     and the parsed one give it back;
  4  the contents of netmap.json.
Every frame that parses encodes to a frame that parses to the same message; every peer id in
a parsed message is exactly 40 lowercase hex characters; every agent frame that parses passes
the server's size check made before decoding (`agent_frame_type`): the check never refuses a
valid frame.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from fuzz import world
    from nodeagent import server_link
    from nodeagent.protocol import messages
    from nodeagent.protocol import netmap as nm
    from nodeagent.protocol.strict import MessageError

ID = re.compile(r"[0-9a-f]{40}")
ID_FIELDS = {"peer_id", "via", "relay", "relays", "remove"}
STATE = Path(tempfile.mkdtemp(prefix="shadowmesh-fuzz-"))


def sample_map(serial: int = 5) -> nm.NetMap:
    """The map the server would send alpha in the world's mesh."""
    return nm.NetMap(
        network=world.NETWORK, serial=serial,
        node=nm.SelfInfo(world.A.peer_id, "alpha", world.A.overlay_ip, 24, is_public=True, is_relay=True),
        peers=(nm.Peer(world.B.peer_id, "bravo", world.B.overlay_ip, "ab" * 32,
                       endpoints=(nm.Endpoint("198.18.0.5", 8443, 9443),), online=True),),
        routes=(nm.Route("192.168.7.0/24", world.B.peer_id),),
        relays=(world.A.peer_id,),
        revoked=(nm.Revocation("cd" * 20, "ef" * 32),),
    )


def check_ids(value: object, field: str = "") -> None:
    """Every peer id anywhere in a parsed value is 40 lowercase hex characters, nothing more."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            check_ids(getattr(value, f.name), f.name)
    elif isinstance(value, tuple | list):
        for item in value:
            check_ids(item, field)
    elif isinstance(value, str) and field in ID_FIELDS:
        assert ID.fullmatch(value), f"{field} {value!r} is not a peer id"


def _frame(data: bytes, decode) -> None:
    try:
        messages.frame_type(data)
    except MessageError:
        pass
    try:
        msg = decode(data)
    except MessageError:
        return
    check_ids(msg)
    assert decode(messages.encode(msg)) == msg
    if decode is messages.decode_agent_message:
        assert messages.agent_frame_type(data) == msg.type, "a valid agent frame fails the size check"
        assert messages.agent_frame_type(messages.encode(msg)) == msg.type


def _server_with_key(data: bytes) -> None:
    try:
        msg = messages.decode_server_message(data, world.CA_PUBLIC)
    except MessageError:
        return
    check_ids(msg)
    if isinstance(msg, messages.Full):
        assert nm.netmap_from_dict(nm.netmap_to_dict(msg.netmap)) == msg.netmap


def _bodies(data: bytes) -> None:
    split = 2 + int.from_bytes(data[:2], "big")
    body, delta_body = data[2:split], data[split:]
    old = sample_map()
    try:
        new = messages.netmap_from_body(body)
    except MessageError:
        pass
    else:
        check_ids(new)
        assert nm.netmap_from_dict(nm.netmap_to_dict(new)) == new
        if new.network == old.network:
            assert nm.apply_delta(old, nm.diff(old, new)) == new
    try:
        delta = messages.delta_from_body(delta_body)
    except MessageError:
        return
    check_ids(delta)
    assert nm.delta_from_dict(nm.delta_to_dict(delta)) == delta
    try:
        applied = nm.apply_delta(old, delta)
    except nm.SerialGap:
        return
    assert applied.serial == delta.serial


def _persisted(data: bytes) -> None:
    (STATE / server_link.NETMAP_FILE).write_bytes(data)
    loaded = server_link.load_signed_netmap(STATE, world.CA_PUBLIC)
    if loaded is not None:
        check_ids(loaded[0])


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 5, data[1:]
    if mode == 0:
        _frame(rest, messages.decode_agent_message)
    elif mode == 1:
        _frame(rest, messages.decode_server_message)
    elif mode == 2:
        _server_with_key(rest)
    elif mode == 3:
        _bodies(rest)
    else:
        _persisted(rest)


if __name__ == "__main__":
    import logging

    from fuzz.harness import run

    logging.disable(logging.CRITICAL)  # the loader logs every file it refuses
    run(one_input)
