"""Write the seed corpora (fuzz/corpus/<harness>/) from real messages of the world's mesh.

    .venv/bin/python -m fuzz.make_corpus [NAME ...]     # every harness's corpus, or the ones named

Every seed is the harness's mode byte followed by a message made the way the product makes it
(sealed frames, a real handshake, control messages through a ControlCipher, signed netmaps and
records, the example configuration), so fuzzing starts from inputs that reach past each parse.
The files are small and committed; run this again when a format changes.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from fuzz import world
from nodeagent import server_link
from nodeagent.discovery import messages as dht
from nodeagent.protocol import control, frames, messages, netmap_sign
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.counters import PeerCounters

ROOT = Path(__file__).resolve().parent / "corpus"


def _frames() -> list[bytes]:
    from fuzz.fuzz_frames import KEY

    data = frames.seal(KEY, frames.FrameType.DATA, 5, 1, 1000, b"\x45" + bytes(39),
                       frames.FrameFlags.CSUM_PARTIAL)
    echo = frames.seal(KEY, frames.FrameType.KEEPALIVE, 5, 2, 1001, frames.pack_echo(999, 3),
                       frames.FrameFlags.ECHO_REQUEST)
    relay = frames.wrap_relay(KEY, frames.FrameType.RELAY, 9, 4, 1002, bytes.fromhex(world.B.peer_id), data)
    relayed = frames.wrap_relay(KEY, frames.FrameType.RELAYED, 9, 5, 1003, bytes.fromhex(world.A.peer_id),
                                echo)
    return [b"\x00" + data, b"\x00" + echo, b"\x00" + relay, b"\x00" + relayed,
            b"\x01\x00\x00" + bytes(16) + b"\x45" + bytes(19), b"\x01\x01\x01" + bytes(16) + bytes(8),
            b"\x02\x00" + bytes.fromhex(world.B.peer_id) + data]


def _disco() -> list[bytes]:
    from fuzz.fuzz_disco import OFFER, TXID
    from nodeagent.protocol import disco

    probe = disco.pack_probe(TXID, 1)
    acks = [disco.pack_ack(TXID, 1, None), disco.pack_ack(TXID, 2, ("198.18.0.7", 40001)),
            disco.pack_ack(TXID, 3, ("2001:db8::7", 9443))]
    go = disco.pack_call(disco.Call(disco.CallKind.GO, TXID, disco.NatClass.PUBLIC))
    return ([b"\x00" + probe, b"\x00" + disco.pack_probe(TXID, 2, 1200)] + [b"\x01" + a for a in acks]
            + [b"\x02" + OFFER, b"\x02" + go, b"\x03", b"\x03\x02\x01\x05\x04",
               b"\x04\x00" + bytes(8) + probe, b"\x04\x02" + bytes(8) + OFFER])


def _handshake() -> list[bytes]:
    from fuzz.fuzz_handshake import CHALLENGE, CONFIRM, HELLO

    return [b"\x00" + HELLO, b"\x01", b"\x01\x01\x00\x10\x00\x07", b"\x02" + CHALLENGE, b"\x03",
            b"\x03\x02\x01\x05\x04", b"\x04" + CONFIRM, b"\x05", b"\x05\x01\x03\x20\x01"]


def _control_messages() -> list[control.Message]:
    import ipaddress

    return [
        control.UdpEndpoint(ipaddress.ip_address("198.18.0.5"), 9443),
        control.UdpEndpoint(ipaddress.ip_address("2001:db8::5"), 9443),
        control.Keepalive(1_800_000_000_000, 1_799_999_999_000, 12),
        control.Routes(4, (ipaddress.ip_network("192.168.7.0/24"), ipaddress.ip_network("2001:db8:7::/48"))),
        control.Close(control.CloseReason.REPLACED, "a newer connection took over"),
        control.RelayHandshake(world.B.peer_id, b"\x01\x02\x01" + bytes(40)),
        control.Handshake(b"\x03" + bytes(32)),
    ]


def _control() -> list[bytes]:
    from fuzz.fuzz_control import K1, K2

    msgs = _control_messages()
    sender = control.ControlCipher(K1, K2)
    stream = control.frame_clear_handshake(b"\x01\x02\x01" + bytes(64))
    stream += b"".join(sender.seal(m) for m in msgs)
    return [b"\x00" + control.encode_message(m) for m in msgs] + [b"\x01" + stream, b"\x02" + stream]


def _netmap_pair() -> tuple[nm.NetMap, nm.NetMap]:
    from fuzz.fuzz_messages import sample_map

    old = sample_map(5)
    new = nm.NetMap(**{**{f: getattr(old, f) for f in old.__dataclass_fields__}, "serial": 6,
                       "routes": (nm.Route("192.168.8.0/24", world.B.peer_id),), "revoked": ()})
    return old, new


def _messages() -> list[bytes]:
    old, new = _netmap_pair()
    full = messages.sign_full(old, world.CA)
    delta = messages.sign_delta(nm.diff(old, new), world.CA)
    agent = [
        messages.Auth(world.A.peer_id, b"s" * 4627), messages.Resync(7), messages.Ack(9), messages.Renew(),
        messages.EndpointReport((nm.Endpoint("198.18.0.3", 8443, 9443),), "0.1.0"),
        messages.Stats(12.5, (PeerCounters(world.B.peer_id, "direct", rtt_ms=1.5, tx_frames=3, rx_frames=2,
                                           tx_bytes=300, rx_bytes=200, lost_frames=1, last_handshake_s=4.0),
                              PeerCounters("cd" * 20, f"relay:{world.A.peer_id}"))),
    ]
    server = [messages.Challenge(b"n" * 32), full, delta, messages.CertificateIssued(world.A.cert)]
    state = Path(tempfile.mkdtemp())
    try:
        part = netmap_sign.SignedPart
        chain = netmap_sign.SignedChain(part(netmap_sign.LABEL_FULL, full.body, full.signature),
                                        (part(netmap_sign.LABEL_DELTA, delta.body, delta.signature),))
        server_link.save_signed_netmap(state, chain)
        persisted = (state / server_link.NETMAP_FILE).read_bytes()
    finally:
        shutil.rmtree(state)
    bodies = len(full.body).to_bytes(2, "big") + full.body + delta.body
    return ([b"\x00" + messages.encode(m) for m in agent] + [b"\x01" + messages.encode(m) for m in server]
            + [b"\x02" + messages.encode(full), b"\x02" + messages.encode(delta), b"\x03" + bodies,
               b"\x04" + persisted])


def _cert() -> list[bytes]:
    return [b"\x00" + world.A.cert, b"\x00" + world.B.cert, b"\x01", b"\x01\x01\x00\x30\x00\x07"]


def _dht() -> list[bytes]:
    from fuzz.fuzz_dht import NODE_RECORD, REVOCATIONS

    contact = dht.WireContact(bytes.fromhex(world.B.peer_id), "198.18.0.5", 8443)
    msgs = [
        dht.Ping(1, want=True), dht.FindNode(2, bytes(20), me=b"r" * 64),
        dht.FindValue(3, bytes.fromhex(world.A.peer_id)), dht.Store(4, bytes(20), b"x" * 100),
        dht.Pong(1, you=b"y" * 32), dht.Nodes(2, (contact,)), dht.Value(3, b"v" * 50, (contact,)),
        dht.Stored(4, "ok"), dht.Stored(5, "refused", "stale"), dht.Error(0, "malformed", "bad frame"),
    ]
    return ([b"\x00" + dht.encode(m) for m in msgs] + [b"\x01" + NODE_RECORD, b"\x01" + REVOCATIONS,
                                                         b"\x02", b"\x03", b"\x02\x01\x00\x40\x00\x05"])


CONFIG = f'''# the world's alpha, serverless
[node]
name = "alpha"
private_key = "alpha.key"
overlay_ip = "10.10.10.3/24"
listen_ip = "0.0.0.0"
control_port = 8443
udp_port = 9443
public = true
interface = "sm-alpha"
mtu = 1380
rekey_after_s = 60
keepalive_s = 10
relay_rate_pps = 500

[[peer]]
name = "bravo"
public_key = "bravo.pub"
overlay_ip = "10.10.10.5"
endpoint = "198.18.0.5:8443"
allowed_ips = ["192.168.8.0/24", "2001:db8:8::/48"]

[[peer]]
public_key = "{__import__("base64").b64encode(world.key("charlie").public_key().public_bytes_raw()).decode()}"
overlay_ip = "10.10.10.6"
endpoint = "[2001:db8::6]:8443"
via = "{world.B.peer_id}"
'''


def _config() -> list[bytes]:
    minimal = b'[node]\nprivate_key = "alpha.key"\noverlay_ip = "10.10.10.3/24"\n'
    hub = CONFIG.replace(f'via = "{world.B.peer_id}"', 'via = "HUB"')
    inline = b'node = { private_key = "k", overlay_ip = "fd00::1/64" }\n'
    return [CONFIG.encode(), minimal, hub.encode(), inline]


HARNESSES = {"frames": _frames, "disco": _disco, "handshake": _handshake, "control": _control,
             "messages": _messages, "cert": _cert, "dht": _dht, "config": _config}


# --------------------------------------------------------------------------- dictionaries
# libFuzzer -dict files: the formats' own tokens (keys, type names, markers), so mutations
# produce well-formed maps and tables far more often than byte flips alone would.

_MSGPACK_KEYS = [
    # websocket envelope, netmap, delta, endpoints, counters (nodeagent/protocol)
    "v", "t", "peer_id", "signature", "serial", "endpoints", "agent", "uptime_s", "peers", "netmap", "sig",
    "delta", "nonce", "certificate", "network", "node", "name", "overlay_ip", "prefix_len", "is_public",
    "is_relay", "fingerprint", "relay", "online", "routes", "relays", "revoked", "prefix", "via", "ip",
    "control_port", "udp_port", "source", "base_serial", "upsert", "remove", "path", "rtt_ms", "tx_frames",
    "rx_frames", "tx_bytes", "rx_bytes", "lost_frames", "replayed_frames", "bad_frames", "last_handshake_s",
    "auth", "resync", "ack", "stats", "renew", "challenge", "reported", "observed", "direct", "relay:",
    "format", "body", "deltas", "local", "reflexive",
    # DHT (nodeagent/discovery/messages.py)
    "rid", "key", "rec", "me", "want", "you", "nodes", "status", "why", "code", "text", "ping", "find_node",
    "find_value", "store", "pong", "value", "stored", "error",
]


def _escape(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02x}" for b in data)


def _msgpack_dict() -> list[bytes]:
    import msgpack

    tokens = [msgpack.packb(k) for k in _MSGPACK_KEYS]
    tokens += [msgpack.packb(x) for x in (None, True, False, 2, 2**64 - 1, -1, 0.5, b"", "")]
    tokens += [bytes([b]) for b in (0xC4, 0xC5, 0xD9, 0xDA, 0xDC, 0xDE, 0xCB, 0xCF, 0xD3, 0xC7, 0xD4)]
    tokens += [world.A.peer_id.encode(), b"\n", b"\x00", b"::ffff:", b"198.18.0.1", b"fe80::1%", b"/24"]
    return tokens


_TOML = [
    "[node]", "[[peer]]", "private_key", "overlay_ip", "listen_ip", "control_port", "udp_port", "public",
    "name", "interface", "mtu", "control_socket", "rekey_after_s", "keepalive_s", "relay_rate_pps",
    "public_key", "endpoint", "via", "allowed_ips", " = ", '"', "'", '"""', "'''", "[", "]", "{", "}", ",",
    "\n", "\r\n", "\r", "#", "true", "false", "inf", "nan", "-0", "0x1F", "1e400", "1979-05-27T07:32:00Z",
    "\\u0000", "\\n", "~", "/", "..", "\x00", ":", "198.18.0.5", "[2001:db8::5]:8443", "10.10.10.5/24",
    "fd00::5", "bravo.pub", "alpha.pub",
]


def write_dicts() -> None:
    folder = Path(__file__).resolve().parent / "dict"
    folder.mkdir(exist_ok=True)
    (folder / "msgpack.dict").write_text(
        "# msgpack tokens of the websocket and DHT messages (fuzz/make_corpus.py)\n"
        + "".join(f'"{_escape(t)}"\n' for t in _msgpack_dict()))
    (folder / "toml.dict").write_text(
        "# TOML syntax and the configuration's keys (fuzz/make_corpus.py)\n"
        + "".join(f'"{_escape(t.encode())}"\n' for t in _TOML))


def main(names: list[str]) -> None:
    for name, make in HARNESSES.items():
        if names and name not in names:
            continue
        folder = ROOT / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        seeds = make()
        for seed in seeds:
            (folder / hashlib.sha256(seed).hexdigest()[:16]).write_bytes(seed)
        print(f"{name}: {len(seeds)} seeds, {sum(map(len, seeds))} bytes")
    write_dicts()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
