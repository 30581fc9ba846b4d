"""The agent websocket messages: round trips through bytes, strict parsing, typed errors with close codes."""

from __future__ import annotations

import typing

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol import messages, netmap_sign
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.constants import PROTOCOL_VERSION, CloseCode
from nodeagent.protocol.counters import PeerCounters
from nodeagent.protocol.strict import Malformed, MessageError

A, B, C, R = ("a" * 40), ("b" * 40), ("c" * 40), ("d" * 40)
FP = "f" * 64
V = PROTOCOL_VERSION
CA = mldsa.MLDSA87PrivateKey.generate()


def _peer(pid: str, ip: str, **kw) -> nm.Peer:
    return nm.Peer(peer_id=pid, name=f"n{pid[0]}", overlay_ip=ip, fingerprint=FP, **kw)


def _map(serial: int = 3, **kw) -> nm.NetMap:
    base = dict(
        network="default", serial=serial,
        node=nm.SelfInfo(peer_id=A, name="uk", overlay_ip="10.10.10.1", prefix_len=24, is_public=True),
        peers=(_peer(B, "10.10.10.2", endpoints=(nm.Endpoint("198.18.0.2", 8443, 9443),), online=True),
               _peer(C, "10.10.10.3", relay=R)),
        routes=(nm.Route("192.168.7.0/24", B),),
        relays=(R,),
        revoked=(nm.Revocation(R, FP),),
    )
    base.update(kw)
    return nm.NetMap(**base)


def _raw(d: dict) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


def test_every_message_round_trips_through_bytes():
    m = _map()
    msgs_server = [messages.Challenge(b"x" * 32), messages.sign_full(m, CA),
                   messages.sign_delta(nm.diff(m, _map(serial=4, routes=())), CA),
                   messages.CertificateIssued(b"c" * 7307), messages.Telemetry(1.0),
                   messages.Telemetry(20.0), messages.Telemetry(3600.0)]
    for msg in msgs_server:
        assert messages.decode_server_message(messages.encode(msg)) == msg
    msgs_agent = [
        messages.Auth(A, b"s" * 4627), messages.Resync(7), messages.Ack(9),
        messages.Auth(A, b"s" * 4627, 12, (messages.FEATURE_TELEMETRY,)),
        messages.Auth(A, b"s" * 4627, None, ("telemetry", "some-later_feature2")),
        messages.EndpointReport((nm.Endpoint("198.18.0.1", 8443, 9443),)),
        messages.EndpointReport((nm.Endpoint("198.18.0.1", 8443, 9443),), "0.1.0"),
        messages.Stats(12.5, (PeerCounters(B, "direct", rtt_ms=1.5, tx_frames=3),
                        PeerCounters(C, f"relay:{R}"))),
        messages.Renew(),
        messages.Advertise(exit_node=True), messages.Advertise(exit_node=False),
    ]
    for msg in msgs_agent:
        assert messages.decode_agent_message(messages.encode(msg)) == msg


@pytest.mark.parametrize("interval", [0.999, 0, 3600.5, -1, float("inf"), float("nan"), "2", None, True])
def test_a_telemetry_interval_outside_its_bounds_is_malformed(interval):
    with pytest.raises(Malformed):
        messages.decode_server_message(_raw({"v": V, "t": "telemetry", "interval_s": interval}))


def test_a_telemetry_message_with_another_key_is_malformed():
    with pytest.raises(Malformed):
        messages.decode_server_message(_raw({"v": V, "t": "telemetry", "interval_s": 2.0, "live": True}))


def test_a_server_message_is_not_accepted_from_an_agent():
    with pytest.raises(messages.UnknownType):
        messages.decode_agent_message(messages.encode(messages.Challenge(b"x" * 32)))


@pytest.mark.parametrize(
    ("frame", "error", "code"),
    [
        (b"\xc1", Malformed, CloseCode.MALFORMED),                       # 1 reserved msgpack byte
        (b'{"v": 1, "t": "ack"}', Malformed, CloseCode.MALFORMED),       # 2 JSON is not msgpack
        (_raw([1, "ack"]), Malformed, CloseCode.MALFORMED),              # 3 not a map
        (_raw({"v": 1, "t": "ack", "serial": 1}), messages.UnsupportedVersion, CloseCode.UNSUPPORTED_VERSION),
        (_raw({"v": V, "t": "hello"}), messages.UnknownType, CloseCode.UNKNOWN_TYPE),  # 5
        (_raw({"v": V, "t": "ack"}), Malformed, CloseCode.MALFORMED),    # 6 missing field
        (_raw({"v": V, "t": "ack", "serial": -1}), Malformed, CloseCode.MALFORMED),   # 7
        (_raw({"v": V, "t": "ack", "serial": True}), Malformed, CloseCode.MALFORMED),  # 8 bool != int
        (_raw({"v": V, "t": "ack", "serial": 1, "x": 0}), Malformed, CloseCode.MALFORMED),  # 9 extra
        (_raw({"v": V, "t": "auth", "peer_id": "A" * 40, "signature": b"s"}), Malformed,
         CloseCode.MALFORMED),                                               # 10 upper-case peer id
        (_raw({"v": V, "t": "auth", "peer_id": A, "signature": "text"}), Malformed,
         CloseCode.MALFORMED),                                               # 11 signature not bytes
        (b"\x00" * (messages.MAX_MESSAGE_SIZE + 1), messages.TooLarge, CloseCode.TOO_LARGE),  # 12 oversized
        (_raw({"v": V, "t": "stats", "uptime_s": float("nan"), "peers": []}), Malformed,
         CloseCode.MALFORMED),                                               # 13 NaN
        (_raw({1: 1}), Malformed, CloseCode.MALFORMED),                  # 14 non-string key
        ("text", Malformed, CloseCode.MALFORMED),                        # 15 text frame
        (_raw({"v": V, "t": "advertise", "exit_node": 1}), Malformed, CloseCode.MALFORMED),  # 16 not a bool
        (_raw({"v": V, "t": "advertise"}), Malformed, CloseCode.MALFORMED),  # 17 missing
        (_raw({"v": V, "t": "auth", "peer_id": A, "signature": b"s", "features": "telemetry"}), Malformed,
         CloseCode.MALFORMED),                                               # 18 features not a list
        (_raw({"v": V, "t": "auth", "peer_id": A, "signature": b"s", "features": ["Telemetry"]}), Malformed,
         CloseCode.MALFORMED),                                               # 19 upper case
        (_raw({"v": V, "t": "auth", "peer_id": A, "signature": b"s", "features": [""]}), Malformed,
         CloseCode.MALFORMED),                                               # 20 empty name
        (_raw({"v": V, "t": "auth", "peer_id": A, "signature": b"s", "features": ["x" * 33]}), Malformed,
         CloseCode.MALFORMED),                                               # 21 too long
        (_raw({"v": V, "t": "auth", "peer_id": A, "signature": b"s", "features": ["a"] * 17}), Malformed,
         CloseCode.MALFORMED),                                               # 22 too many
        (_raw({"v": V, "t": "auth", "peer_id": A, "signature": b"s", "features": [7]}), Malformed,
         CloseCode.MALFORMED),                                               # 23 not a string
    ],
)
def test_bad_agent_frames_raise_a_typed_error_with_a_close_code(frame, error, code):
    with pytest.raises(error) as info:
        messages.decode_agent_message(frame)
    assert info.value.code == code


def _full_frame(netmap: dict, key=CA) -> bytes:
    """A `netmap` frame around this plain-data map, signed by `key`."""
    body = _raw(netmap)
    return _raw({"v": V, "t": "netmap", "netmap": body, "sig": netmap_sign.sign(key, b"netmap", body)})


def test_a_netmap_with_a_bad_address_or_duplicate_peer_is_rejected():
    d = nm.netmap_to_dict(_map())
    d["peers"][0]["overlay_ip"] = "10.10.10.300"
    with pytest.raises(Malformed, match="overlay_ip"):
        messages.decode_server_message(_full_frame(d))
    d = nm.netmap_to_dict(_map())
    d["peers"].append(d["peers"][0])
    with pytest.raises(Malformed, match="duplicate"):
        messages.decode_server_message(_full_frame(d))
    d = nm.netmap_to_dict(_map())
    d["routes"][0]["prefix"] = "192.168.7.1/24"  # host bits set
    with pytest.raises(Malformed, match="prefix"):
        messages.decode_server_message(_full_frame(d))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_escape_as_anything_but_a_message_error(data):
    for decode in (messages.decode_agent_message, messages.decode_server_message):
        try:
            decode(data)
        except MessageError:
            pass


_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.text(max_size=8) | st.binary(max_size=8))


@settings(max_examples=100, deadline=None)
@given(st.recursive(_SCALARS,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20),
       st.sampled_from(["auth", "resync", "ack", "endpoints", "stats", "netmap", "delta", "challenge"]))
def test_random_structures_under_a_known_type_are_rejected_cleanly(body, t):
    frame = _raw({"v": V, "t": t, "netmap": body, "delta": body, "peers": body, "serial": body})
    for decode in (messages.decode_agent_message, messages.decode_server_message):
        try:
            decode(frame)
        except MessageError:
            pass


def test_an_endpoint_report_without_an_agent_version_still_parses():
    frame = _raw({"v": V, "t": "endpoints", "endpoints": []})
    assert messages.decode_agent_message(frame) == messages.EndpointReport(())


@pytest.mark.parametrize("version", ["", "x" * (messages.MAX_VERSION + 1), "1.0\n", 7, None])
def test_a_bad_agent_version_is_malformed(version):
    frame = _raw({"v": V, "t": "endpoints", "endpoints": [], "agent": version})
    with pytest.raises(Malformed):
        messages.decode_agent_message(frame)


# --- agent frames are sized up before they are decoded (the server reads 64 bytes, not 1 MiB) -----

LONGEST_IP = "0000:0000:0000:0000:0000:ffff:255.255.255.255"  # 45 characters, a valid address


def largest_valid_agent_frames() -> dict[str, bytes]:
    """Per type but stats, the largest frame decode_agent_message accepts: every field at its bound."""
    endpoint = nm.Endpoint(LONGEST_IP, 65535, 65535, "reflexive")
    frames = {m.type: messages.encode(m) for m in (
        messages.Auth(A, bytes(messages.MAX_SIGNATURE_SIZE)), messages.Resync(2**64 - 1),
        messages.Ack(2**64 - 1), messages.Renew(), messages.Advertise(False),
        messages.EndpointReport((endpoint,) * messages.MAX_ENDPOINTS, "\U0010ffff" * messages.MAX_VERSION))}
    for frame in frames.values():
        messages.decode_agent_message(frame)  # valid, as claimed
    return frames


def test_every_agent_message_type_has_a_size_limit_and_its_largest_frame_is_known():
    types = {cls.__dataclass_fields__["type"].default for cls in typing.get_args(messages.AgentMessage)}
    assert types == set(largest_valid_agent_frames()) | {"stats"}
    for t in types:
        assert messages.agent_frame_limit(t) > 0  # not UnknownType


def test_the_largest_valid_agent_frame_of_each_type_passes_the_size_check():
    for t, frame in largest_valid_agent_frames().items():
        assert messages.agent_frame_type(frame) == t
        assert len(frame) <= messages.agent_frame_limit(t) < messages.MAX_MESSAGE_SIZE // 50


def test_an_agent_frame_larger_than_its_type_can_be_is_too_large_before_it_is_decoded():
    for t in largest_valid_agent_frames():
        limit = messages.agent_frame_limit(t)
        # a frame's head and then padding that is not even msgpack: only the head is read, so
        # at the limit the type comes back, one byte over it is TooLarge
        head = _raw({"v": V, "t": t})
        assert messages.agent_frame_type(head + bytes(limit - len(head))) == t
        with pytest.raises(messages.TooLarge) as exc:
            messages.agent_frame_type(head + bytes(limit + 1 - len(head)))
        assert exc.value.code == CloseCode.TOO_LARGE
    # stats frames are capped by the server by its network's size, up to the 1 MiB frame limit
    assert messages.agent_frame_limit("stats") == messages.MAX_MESSAGE_SIZE


@pytest.mark.parametrize("t", ["challenge", "netmap", "", "x" * 40])
def test_a_type_agents_do_not_send_is_unknown_before_it_is_decoded(t):
    with pytest.raises(messages.UnknownType):
        messages.agent_frame_type(_raw({"v": V, "t": t, "pad": bytes(100)}))


def _peers(n: int) -> tuple[nm.Peer, ...]:
    out = []
    for i in range(n):
        eps = tuple(nm.Endpoint(f"198.18.{i % 250}.{k + 1}", 8443, 9443 + k) for k in range(i % 3))
        out.append(_peer(f"{i + 1:040x}", f"10.{i // 62500}.{(i // 250) % 250}.{i % 250 + 1}",
                         endpoints=eps, online=bool(eps), is_public=i % 5 == 0,
                         relay=None if i % 4 else R))
    return tuple(out)


@pytest.mark.parametrize("n", [0, 1, 2, 15, 16, 17, 300])  # fixarray ends at 15, array16 at 65,535
def test_a_netmap_packed_from_packed_peers_is_the_same_bytes(n):
    netmap = _map(peers=_peers(n))
    whole = _raw(nm.netmap_to_dict(netmap))
    assert messages.pack_netmap(netmap) == whole
    cache = {id(p): messages.pack_peer(p) for p in netmap.peers}
    joined = lambda m: b"".join(cache[id(p)] for p in m.peers)  # noqa: E731
    assert messages.pack_netmap(netmap, joined) == whole
    full = messages.sign_full(netmap, CA, joined)
    assert full.body == whole
    public = CA.public_key().public_bytes_raw()
    decoded = messages.decode_server_message(messages.encode(full), netmap_key=public)
    assert decoded.netmap == netmap


def test_pack_netmap_takes_the_peer_entries_from_the_packer_it_is_given():
    netmap = _map(peers=_peers(3))
    asked: list[nm.NetMap] = []

    def packed(m: nm.NetMap) -> bytes:
        asked.append(m)
        return messages.pack_peers(m)

    assert messages.pack_netmap(netmap, packed) == _raw(nm.netmap_to_dict(netmap))
    assert asked == [netmap]
