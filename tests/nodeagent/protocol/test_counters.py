"""protocol/counters.py: the per-peer counters' wire type, its strict codec, its size bound, and
what the counters mean over time (difference of two reports, rates and loss)."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol import messages
from nodeagent.protocol.constants import PROTOCOL_VERSION
from nodeagent.protocol.counters import (
    MAX_ENCODED_SIZE,
    TRAFFIC,
    DhtCounters,
    PeerCounters,
    Rates,
    Traffic,
    counters_from_dict,
    counters_to_dict,
    dht_from_dict,
    dht_to_dict,
    difference,
    rates,
)
from nodeagent.protocol.strict import U64_MAX, Malformed

B, R = "b" * 40, "d" * 40
# the counter keys of a `status --json` peer entry, in their fixed order (docs/operations.md)
WIRE_KEYS = ["peer_id", "path", "rtt_ms", "tx_frames", "rx_frames", "tx_bytes", "rx_bytes", "lost_frames",
             "replayed_frames", "bad_frames", "last_handshake_s", "denied_frames"]

_ints = st.integers(0, U64_MAX)
_nums = st.none() | st.floats(0, 1e12, allow_nan=False, allow_infinity=False)
_ids = st.text("0123456789abcdef", min_size=40, max_size=40)
counters_strategy = st.builds(
    PeerCounters, _ids, st.just("direct") | _ids.map(lambda p: f"relay:{p}"), _nums, _ints, _ints, _ints,
    _ints, _ints, _ints, _ints, _nums, _ints)


def test_the_keys_are_the_field_names_in_the_status_order():
    assert list(counters_to_dict(PeerCounters(B))) == WIRE_KEYS


@settings(max_examples=300, deadline=None)
@given(counters_strategy)
def test_every_valid_entry_round_trips_and_fits_the_size_bound(c):
    d = counters_to_dict(c)
    assert counters_from_dict(d) == c
    assert counters_from_dict(msgpack.unpackb(msgpack.packb(d, use_bin_type=True), raw=False)) == c
    assert len(msgpack.packb(d, use_bin_type=True)) <= MAX_ENCODED_SIZE


def test_the_size_bound_is_reached_by_the_widest_entry():
    widest = PeerCounters(B, f"relay:{R}", 1.5, *([U64_MAX] * 7), 2.5, U64_MAX)
    assert len(msgpack.packb(counters_to_dict(widest), use_bin_type=True)) == MAX_ENCODED_SIZE


dht_strategy = st.none() | st.builds(
    DhtCounters, st.integers(0, U64_MAX), st.integers(0, U64_MAX),
    st.none() | st.floats(0, 1e12, allow_nan=False, allow_infinity=False), st.integers(0, U64_MAX),
    st.integers(0, U64_MAX))


@settings(max_examples=50, deadline=None)
@given(st.lists(counters_strategy, max_size=40), st.floats(0, 1e9, allow_nan=False), dht_strategy)
def test_a_stats_frame_never_exceeds_the_bound_for_its_peer_count(peers, uptime, dht):
    frame = messages.encode(messages.Stats(uptime, tuple(peers), dht))
    assert len(frame) <= messages.max_stats_size(len(peers))
    assert messages.decode_agent_message(frame).dht == dht


def test_the_dht_object_has_the_fixed_status_keys_and_is_optional_on_the_wire():
    keys = ["contacts", "records", "last_publish_s", "lookups", "failures"]  # docs/operations.md
    assert list(dht_to_dict(DhtCounters())) == keys
    without = msgpack.unpackb(messages.encode(messages.Stats(1.0, ())), raw=False)
    assert "dht" not in without  # a report without a DHT is the one it always was
    assert messages.decode_agent_message(messages.encode(messages.Stats(1.0, ()))).dht is None


@pytest.mark.parametrize(("dht", "match"), [
    (None, "dht must be a map"),
    ({"contacts": 1}, "missing"),
    ({**dht_to_dict(DhtCounters()), "extra": 1}, "unknown"),
    ({**dht_to_dict(DhtCounters()), "lookups": -1}, "lookups"),
    ({**dht_to_dict(DhtCounters()), "last_publish_s": float("nan")}, "last_publish_s"),
])
def test_a_bad_dht_object_is_malformed(dht, match):
    frame = msgpack.packb({"v": PROTOCOL_VERSION, "t": "stats", "uptime_s": 1.0, "peers": [], "dht": dht},
                          use_bin_type=True)
    with pytest.raises(Malformed, match=match):
        messages.decode_agent_message(frame)
    with pytest.raises(Malformed):
        dht_from_dict(dht)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"peer_id": "B" * 40}, "peer_id"),
        ({"path": "relay"}, "path"),
        ({"path": "relay:" + "x" * 40}, "path"),
        ({"path": "direct\n"}, "path"),
        ({"tx_bytes": -1}, "tx_bytes"),
        ({"rx_frames": U64_MAX + 1}, "rx_frames"),
        ({"lost_frames": True}, "lost_frames"),
        ({"bad_frames": 1.0}, "bad_frames"),
        ({"rtt_ms": math.nan}, "rtt_ms"),
        ({"rtt_ms": -0.5}, "rtt_ms"),
        ({"last_handshake_s": "3"}, "last_handshake_s"),
        ({"extra": 1}, "unknown"),
    ],
)
def test_a_bad_entry_names_its_field(change, match):
    d = counters_to_dict(PeerCounters(B)) | change
    with pytest.raises(Malformed, match=match):
        counters_from_dict(d)


@pytest.mark.parametrize("key", WIRE_KEYS)
def test_a_missing_key_is_named(key):
    d = counters_to_dict(PeerCounters(B))
    del d[key]
    with pytest.raises(Malformed, match=key):
        counters_from_dict(d)


def test_the_difference_of_two_reports_is_what_the_link_carried():
    before = PeerCounters(B, tx_bytes=1000, rx_bytes=500, tx_frames=10, rx_frames=8, lost_frames=1,
                          denied_frames=4)
    after = PeerCounters(B, tx_bytes=5000, rx_bytes=2500, tx_frames=30, rx_frames=26, lost_frames=3,
                         denied_frames=9)
    assert difference(after, before) == Traffic(4000, 2000, 20, 18, 2, 5)
    assert tuple(Traffic.__dataclass_fields__) == TRAFFIC


def test_a_smaller_total_counts_from_zero():
    """The agent restarted between the reports: what it counted since is the whole total."""
    before = PeerCounters(B, tx_bytes=10**6, rx_bytes=10, lost_frames=9)
    after = PeerCounters(B, tx_bytes=300, rx_bytes=40, lost_frames=0)
    assert difference(after, before) == Traffic(tx_bytes=300, rx_bytes=30, lost_frames=0)


def test_rates_are_per_second_and_loss_is_the_share_of_expected_frames():
    assert rates(Traffic(4000, 1000, 20, 18, 2), 2.0) == Rates(2000.0, 500.0, 10.0, 9.0, 10.0)
    assert rates(Traffic(tx_bytes=1, rx_frames=2, lost_frames=1), 3.0) == Rates(0.3, 0.0, 0.0, 0.67, 33.333)


def test_no_expected_frame_is_no_loss_and_a_zero_interval_counts_as_a_second():
    assert rates(Traffic(tx_bytes=100), 0.0) == Rates(100.0, 0.0, 0.0, 0.0, 0.0)


def test_sums_of_traffic_take_anything_with_the_traffic_fields():
    class Row:  # like the server's stored samples
        tx_bytes, rx_bytes, tx_frames, rx_frames, lost_frames, denied_frames = 1, 2, 3, 4, 5, 6

    assert Traffic() + Row() + Row() == Traffic(2, 4, 6, 8, 10, 12)
    assert rates(Row(), 1.0).loss_pct == pytest.approx(100 * 5 / 9, abs=0.001)


# ----------------------------------------------------------------------------- the frame head


V = PROTOCOL_VERSION


def _raw(d: dict) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


def test_a_frames_type_is_read_from_its_head():
    assert messages.frame_type(messages.encode(messages.Stats(1.0, (PeerCounters(B),)))) == "stats"
    assert messages.frame_type(_raw({"v": V, "t": "whatever", "x": b"\0" * 100_000})) == "whatever"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (_raw({"t": "ack", "v": V, "serial": 1}), Malformed),                 # t before v
        (_raw({"serial": 1, "v": V, "t": "ack"}), Malformed),                 # another key first
        (_raw({"v": V}), Malformed),                                          # no t
        (_raw({"v": V, "t": "x" * 80}), Malformed),                           # a type far too long
        (_raw({"v": V, "t": 7}), Malformed),
        (_raw({"v": "1", "t": "ack"}), Malformed),
        (_raw({"v": 1, "t": "ack"}), messages.UnsupportedVersion),  # an agent of the previous version
        (_raw([1, "ack"]), Malformed),
        (b"", Malformed),
        ("text", Malformed),
        (b"\x00" * (messages.MAX_MESSAGE_SIZE + 1), messages.TooLarge),
    ],
)
def test_a_frame_without_the_head_is_refused_by_frame_type_and_the_decoders(frame, error):
    with pytest.raises(error):
        messages.frame_type(frame)
    for decode in (messages.decode_agent_message, messages.decode_server_message):
        with pytest.raises(error):
            decode(frame)


def test_a_repeated_type_key_cannot_change_the_type_after_the_head():
    # msgpack maps may repeat a key; the head says "ack", a later "t" says "stats"
    frame = b"\x84" + _raw("v") + _raw(V) + _raw("t") + _raw("ack") + _raw("serial") + _raw(1) \
        + _raw("t") + _raw("stats")
    assert messages.frame_type(frame) == "ack"
    with pytest.raises(Malformed, match="once"):
        messages.decode_agent_message(frame)
