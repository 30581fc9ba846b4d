"""protocol/chunk.py: the CHUNK codec, the super-packet checks, reassembly bounds, the negotiation
signal and the loss policy. Pure code: every case is driven by hand, `now` is an argument."""

import ipaddress
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nodeagent.protocol import chunk
from nodeagent.protocol.chunk import (
    CHUNK_SUBHEADER,
    DONE,
    DUPLICATE,
    MAX_PIECES,
    MAX_PLAIN,
    MISMATCH,
    PENDING,
    ChunkError,
    LossPolicy,
    Reassembler,
    Signal,
    from_tun,
    open_chunk,
    pack_control,
    pack_super,
    parse_control,
    parse_piece,
    parse_super,
    piece_size_for,
    seal_chunk,
    seal_chunk_iov,
)
from nodeagent.protocol.frames import (
    HEADER_SIZE,
    TAG_SIZE,
    BadTag,
    FrameError,
    FrameType,
    nonce,
    parse_header,
)

AEAD = ChaCha20Poly1305(os.urandom(32))
OTHER = ChaCha20Poly1305(os.urandom(32))


def super_frame(payload: bytes, mss: int = 1388, version: int = 4, gso_type: int | None = None,
                flags: int = 1, csum_start: int | None = None, csum_offset: int = 16) -> bytes:
    """A TUN read with TSO on: virtio_net_hdr + one TCP super-packet."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 7, 1, 5 << 4, 0x10, 500, 0, 0)
    if version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0x4000, 64, 6, 0,
                         ipaddress.ip_address("10.10.10.1").packed, ipaddress.ip_address("10.10.10.2").packed)
        kind, start = 1, 20
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, 20 + len(payload), 6, 64,
                         ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed)
        kind, start = 4, 40
    gso_type = kind if gso_type is None else gso_type
    start = start if csum_start is None else csum_start
    return struct.pack("<BBHHHH", flags, gso_type, len(ip) + 20, mss, start, csum_offset) + ip + tcp + payload


def pieces_of(datagrams):
    """parse_header + parse_piece of every datagram."""
    out = []
    for d in datagrams:
        h = parse_header(d)
        out.append((h, *parse_piece(h, d)))
    return out


def reassemble(datagrams, order=None, now=0.0, r=None):
    r = r or Reassembler()
    parsed = pieces_of(datagrams)
    result = None
    for i in order or range(len(parsed)):
        h, index, count, piece = parsed[i]
        status, sealed = r.add(h.receiver_index, h.counter, h.timestamp, index, count, piece, now)
        if status == DONE:
            result = (h, count, sealed)
        else:
            assert status == PENDING
    return result


# --- codec ------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 60_000), mss=st.integers(1000, 1448), version=st.sampled_from([4, 6]),
       index=st.integers(0, 2**32 - 1), counter=st.integers(0, 2**64 - 1), ts=st.integers(0, 2**32 - 1),
       seed=st.integers(0, 2**32))
def test_any_super_packet_crosses_as_a_chunk_in_any_piece_order(size, mss, version, index, counter, ts, seed):
    frame = super_frame(os.urandom(size), mss, version)
    info = from_tun(frame)
    assert info is not None
    gso_type, gso_size, hdr_len = info
    assert (gso_type, gso_size, hdr_len) == (1 if version == 4 else 4, mss, 40 if version == 4 else 60)
    plain = pack_super(gso_type, gso_size, frame)
    piece_size = piece_size_for(hdr_len, gso_size)
    datagrams = seal_chunk(AEAD, index, counter, ts, plain, piece_size)
    assert 1 <= len(datagrams) <= MAX_PIECES
    # every datagram is at most as large as the DATA frame of one full segment, all but the last equal
    assert all(len(d) <= hdr_len + gso_size + HEADER_SIZE + TAG_SIZE for d in datagrams)
    assert len({len(d) for d in datagrams[:-1]}) <= 1 and len(datagrams[-1]) <= len(datagrams[0])
    order = list(range(len(datagrams)))
    random.Random(seed).shuffle(order)
    h, count, sealed = reassemble(datagrams, order)
    assert (h.type, h.receiver_index, h.counter, h.timestamp) == (FrameType.CHUNK, index, counter, ts)
    opened = open_chunk(AEAD, index, counter, ts, count, sealed)
    assert opened == plain
    sp = parse_super(opened)
    assert bytes(sp.packet) == frame[10:]
    assert sp.vnet == frame[:2] + struct.pack("<HHHH", hdr_len, mss, 20 if version == 4 else 40, 16)
    assert sp.source == (ipaddress.ip_address("10.10.10.1").packed if version == 4
                         else ipaddress.ip_address("fd00::1").packed)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, MAX_PLAIN), piece_size=st.integers(1, 4000), index=st.integers(0, 2**32 - 1),
       counter=st.integers(0, 2**64 - 1), ts=st.integers(0, 2**32 - 1))
def test_the_scatter_gather_form_holds_the_datagrams_cut_by_hand(size, piece_size, index, counter, ts):
    """seal_chunk_iov: two buffers per datagram (a 22-byte header, a view of the sealed unit), joined
    they are the datagrams of the wire format: header(CHUNK, flags 0, length, index, counter,
    timestamp) ‖ piece index ‖ count ‖ piece, the unit cut every piece_size bytes."""
    plain = os.urandom(size)
    sealed_len = size + TAG_SIZE
    count = -(-sealed_len // piece_size)
    if count > MAX_PIECES:
        with pytest.raises(ChunkError):
            seal_chunk_iov(AEAD, index, counter, ts, plain, piece_size)
        return
    iov, dsize, n = seal_chunk_iov(AEAD, index, counter, ts, plain, piece_size)
    aad = struct.pack("!BBIQIBI", FrameType.CHUNK, 0, index, counter, ts, count, sealed_len)
    unit = AEAD.encrypt(nonce(counter), plain, aad)
    pieces = [unit[i:i + piece_size] for i in range(0, sealed_len, piece_size)]
    by_hand = [struct.pack("!BBHIQIBB", FrameType.CHUNK, 0, 2 + len(p), index, counter, ts, i, count) + p
               for i, p in enumerate(pieces)]
    assert n == count and len(iov) == 2 * count
    assert all(len(iov[i]) == HEADER_SIZE + CHUNK_SUBHEADER for i in range(0, 2 * count, 2))
    assert [b"".join(iov[i:i + 2]) for i in range(0, 2 * count, 2)] == by_hand
    assert dsize == len(by_hand[0]) and all(len(d) == dsize for d in by_hand[:-1])
    assert seal_chunk(AEAD, index, counter, ts, plain, piece_size) == by_hand


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 20000), which=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_a_flipped_bit_in_any_piece_fails_the_whole_unit(size, which, bit):
    plain = pack_super(1, 1000, super_frame(os.urandom(size), 1000))
    datagrams = seal_chunk(AEAD, 7, 9, 11, plain, piece_size_for(40, 1000))
    d = which % len(datagrams)
    pos = HEADER_SIZE + CHUNK_SUBHEADER + (which // len(datagrams)) % (len(datagrams[d]) - HEADER_SIZE - 2)
    bad = bytearray(datagrams[d])
    bad[pos] ^= 1 << bit
    datagrams[d] = bytes(bad)
    h, count, sealed = reassemble(datagrams)
    with pytest.raises(BadTag):
        open_chunk(AEAD, h.receiver_index, h.counter, h.timestamp, count, sealed)


@pytest.mark.parametrize("field", ["index", "counter", "timestamp", "count", "key", "dropped_piece"])
def test_a_unit_under_other_header_fields_or_keys_does_not_open(field):
    plain = pack_super(1, 1000, super_frame(os.urandom(5000), 1000))
    datagrams = seal_chunk(AEAD, 7, 9, 11, plain, 1000)
    _h, count, sealed = reassemble(datagrams)
    args = {"index": 7, "counter": 9, "timestamp": 11, "count": count, "key": AEAD}
    if field == "dropped_piece":
        sealed = sealed[:-1000]
    elif field == "key":
        args["key"] = OTHER
    else:
        args[field] += 1
    with pytest.raises(BadTag):
        open_chunk(args["key"], args["index"], args["counter"], args["timestamp"], args["count"], sealed)


def test_seal_refuses_what_cannot_travel():
    with pytest.raises(ChunkError, match="plaintext"):
        seal_chunk(AEAD, 1, 1, 1, b"", 1000)
    with pytest.raises(ChunkError, match="plaintext"):
        seal_chunk(AEAD, 1, 1, 1, bytes(MAX_PLAIN + 1), 2000)
    with pytest.raises(ChunkError, match="more than 64"):
        seal_chunk(AEAD, 1, 1, 1, bytes(64 * 100), 100)
    with pytest.raises(ChunkError, match="positive"):
        seal_chunk(AEAD, 1, 1, 1, b"x", 0)
    with pytest.raises(ChunkError, match="header"):
        seal_chunk(AEAD, 2**32, 1, 1, b"x", 10)
    assert len(seal_chunk(AEAD, 1, 1, 1, bytes(MAX_PLAIN), 1100)) == 60  # ceil((65,538 + 16) / 1,100)


def _piece(index, count, body=b"x", flags=0, ftype=8):
    d = struct.pack("!BBHIQIBB", ftype, flags, 2 + len(body), 7, 9, 11, index, count) + body
    return d


@pytest.mark.parametrize(("datagram", "reason"), [
    (_piece(0, 0), "piece 0 of 0"),
    (_piece(2, 2), "piece 2 of 2"),
    (_piece(0, 65), "piece 0 of 65"),
    (_piece(0, 2, flags=1), "no flags"),
    (_piece(0, 2, flags=2), "no flags"),
])
def test_malformed_pieces_are_refused(datagram, reason):
    with pytest.raises(ChunkError, match=reason):
        parse_piece(parse_header(datagram), datagram)


def test_a_piece_without_body_fails_the_header_parse_and_other_types_are_not_pieces():
    with pytest.raises(FrameError, match="without a piece"):
        parse_header(_piece(0, 2, body=b""))
    d = _piece(0, 2, body=bytes(16), ftype=1)
    with pytest.raises(ChunkError, match="not a CHUNK"):
        parse_piece(parse_header(d), d)
    d = _piece(63, 64)
    assert parse_piece(parse_header(d), d) == (63, 64, b"x")


# --- super-packets ------------------------------------------------------------------------------
def _plain(frame):
    return pack_super(frame[1], struct.unpack_from("<H", frame, 4)[0], frame)


def _with(frame: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(frame)
    b[offset:offset + len(value)] = value
    return bytes(b)


V4 = super_frame(bytes(3000), 1000)
V6 = super_frame(bytes(3000), 1000, version=6)
BAD_SUPER = [  # (what, TUN read) -- from_tun says None, parse_super raises
    ("gso none", super_frame(bytes(3000), gso_type=0)),
    ("gso udp", super_frame(bytes(3000), gso_type=3)),
    ("v6 type on v4", super_frame(bytes(3000), gso_type=4)),
    ("v4 type on v6", super_frame(bytes(3000), version=6, gso_type=1)),
    ("not tcp", _with(V4, 10 + 9, b"\x11")),
    ("fragment", _with(V4, 10 + 6, b"\x20")),
    ("fragment offset", _with(V4, 10 + 7, b"\x01")),
    ("ipv4 length", _with(V4, 10 + 2, b"\x00\x30")),
    ("ipv6 length", _with(V6, 10 + 4, b"\x00\x30")),
    ("ipv6 extension header", _with(V6, 10 + 6, b"\x00")),
    ("short ihl", _with(V4, 10, b"\x44")),
    ("tcp offset", _with(V4, 10 + 32, b"\x40")),
    ("no payload", super_frame(b"", 1000)),
    ("gso size 0", super_frame(bytes(3000), 0)),
    ("ipv6 version on v4 frame", _with(V4, 10, b"\x65")),
]


@pytest.mark.parametrize(("what", "frame"), BAD_SUPER, ids=[w for w, _ in BAD_SUPER])
def test_what_is_not_one_tcp_super_packet_is_neither_sent_nor_accepted_as_a_chunk(what, frame):
    assert from_tun(frame) is None
    with pytest.raises(ChunkError):
        parse_super(_plain(frame))


@pytest.mark.parametrize(("what", "frame"), [
    ("flags 0", super_frame(bytes(3000), flags=0)),
    ("csum start", super_frame(bytes(3000), csum_start=24)),
    ("csum offset", super_frame(bytes(3000), csum_offset=6)),
    ("short", b"\x01\x01\x00"),
])
def test_a_tun_read_without_the_usual_partial_checksum_takes_the_per_segment_path(what, frame):
    assert from_tun(frame) is None


def test_super_packet_checks_accept_ecn_and_refuse_short_plaintexts():
    ecn = super_frame(bytes(3000), gso_type=0x81)
    assert from_tun(ecn) == (0x81, 1388, 40)
    assert parse_super(_plain(ecn)).vnet[1] == 0x81
    with pytest.raises(ChunkError, match="too short"):
        parse_super(b"\x01\x03\xe8" + bytes(39))
    assert len(parse_super(_plain(V6)).source) == 16


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_super_raises_only_chunk_error_on_random_bytes(data):
    try:
        parse_super(data)
    except ChunkError:
        pass
    assert from_tun(data) is None or len(data) >= 10


# --- control ------------------------------------------------------------------------------------
def test_control_payloads_round_trip_and_anything_else_is_malformed():
    for state in (False, True):
        for ack in (False, True):
            assert parse_control(pack_control(state, ack)) == (state, ack)
    for bad in (b"", b"\x04", b"\xff", b"\x01\x00"):
        with pytest.raises(ChunkError, match="one byte"):
            parse_control(bad)


def test_the_signal_resends_until_acknowledged_and_gives_up_on_a_peer_that_never_answers():
    s = Signal(resend_s=0.5, first_tries=3)
    assert s.due(0.0) is None  # nothing wanted, nothing granted
    s.want = True
    sent = []
    for t in range(40):
        now = t * 0.1
        state = s.due(now)
        if state is not None:
            sent.append(now)
            s.sent(now)
    assert sent == [0.0, 0.5, 1.0]  # every resend_s, then silence: an older agent never acks
    s.on_ack(True)  # a late answer: the peer speaks chunks after all
    assert s.due(5.0) is None
    s.want = False  # a change of mind goes out at once, and is retried without a limit
    assert s.due(5.0) is False
    for i in range(10):
        s.sent(5.0 + i)
        assert s.due(5.0 + i + 0.5) is False
    s.on_ack(False)
    assert s.due(20.0) is None


# --- loss policy --------------------------------------------------------------------------------
def feed(policy, steps, per_step=250, lost_per_step=0, t0=0.0, start=(0, 0), dt=0.25):
    received, lost = start
    states = []
    now = t0
    for _ in range(steps):
        received += per_step
        lost += lost_per_step
        now += dt
        states.append(policy.update(now, received, lost))
    return states, now, (received, lost)


def test_the_policy_turns_on_after_clean_windows_only_and_off_on_loss():
    p = LossPolicy(min_frames=200, min_s=0.2, clean_windows=3, off_above=0.01, hold_s=5.0)
    states, now, totals = feed(p, 4)
    assert states == [False, False, False, True]  # a baseline, then three clean windows
    states, now, totals = feed(p, 3, lost_per_step=1, t0=now, start=totals)  # 0.4 %: under the bar
    assert states == [True] * 3
    states, now, totals = feed(p, 1, lost_per_step=5, t0=now, start=totals)  # 2 %: off
    assert states == [False] and p.hold_until == pytest.approx(now + 10.0)  # switched off soon: hold doubled
    states, now, totals = feed(p, 20, t0=now, start=totals)  # clean, but the hold runs 10 s
    assert not any(states)
    states, now, totals = feed(p, 40, t0=now, start=totals)
    assert states[-1] and p.switches == 3


def test_the_policy_waits_for_enough_frames_and_time_and_any_loss_restarts_the_clean_count():
    p = LossPolicy(min_frames=200, min_s=0.2, clean_windows=2)
    assert p.update(0.0, 0, 0) is False
    assert p.update(10.0, 199, 0) is False  # too few frames: the window stays open
    assert p.update(10.05, 10_000, 0) is False  # enough frames, but 10.05 - 0 > min_s: closes (clean 1)
    assert p.update(10.1, 20_000, 0) is False  # only 0.05 s later: open
    assert p.update(10.3, 20_000, 1) is False  # one gap: clean count restarts
    assert p.update(10.6, 30_000, 1) is False
    assert p.update(10.9, 40_000, 1) is True
    assert p.update(11.0, 5, 0) is True  # totals went backwards (counters restarted): a new baseline only


def test_a_calm_period_resets_the_hold():
    p = LossPolicy(min_frames=10, min_s=0.1, clean_windows=1, hold_s=1.0, max_hold_s=8.0)
    p.update(0.0, 0, 0)
    assert p.update(1.0, 100, 0) is True
    assert p.update(2.0, 200, 50) is False and p.hold_until == 4.0  # off within 4 holds: doubled
    assert p.update(4.0, 300, 50) is True
    assert p.update(100.0, 400, 100) is False and p.hold_until == 101.0  # long calm: back to 1 s


# --- reassembly bounds --------------------------------------------------------------------------
def test_reassembly_is_bounded_in_number_and_age_and_counts_what_it_gives_up():
    r = Reassembler(max_inflight=4, timeout_s=1.0)
    for counter in range(6):  # six chunks started, never finished: the oldest two are pushed out
        assert r.add(1, counter, 0, 0, 2, b"a", 0.0) == (PENDING, None)
    assert len(r) == 4 and r.expired == 2
    assert r.add(1, 5, 0, 1, 2, b"b", 0.5) == (DONE, b"ab")  # the newest still completes
    assert r.add(1, 0, 0, 1, 2, b"b", 0.5) == (PENDING, None)  # counter 0 was pushed out: starts afresh
    assert r.expire(1.2) == 3 and len(r) == 1 and r.expired == 5  # started at 0.0, older than 1 s
    r.forget(1)
    assert len(r) == 0 and r.expired == 5


def test_duplicates_mismatches_and_oversized_units_are_refused_without_losing_the_chunk():
    r = Reassembler()
    assert r.add(1, 9, 5, 0, 3, b"a", 0.0) == (PENDING, None)
    assert r.add(1, 9, 5, 0, 3, b"a", 0.0) == (DUPLICATE, None)
    assert r.add(1, 9, 5, 1, 4, b"b", 0.0) == (MISMATCH, None)  # another count
    assert r.add(1, 9, 6, 1, 3, b"b", 0.0) == (MISMATCH, None)  # another timestamp
    assert r.add(2, 9, 5, 1, 3, b"x", 0.0) == (PENDING, None)  # another session: its own chunk
    assert r.add(1, 9, 5, 1, 3, bytes(chunk.MAX_SEALED), 0.0) == (MISMATCH, None)  # too large
    assert r.add(1, 9, 5, 2, 3, b"c", 0.0) == (PENDING, None)
    assert r.add(1, 9, 5, 1, 3, b"b", 0.0) == (DONE, b"abc")
    assert r.add(1, 10, 5, 0, 1, b"z", 0.0) == (DONE, b"z")  # a one-piece chunk never waits


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20), st.integers(0, 70), st.integers(1, 70),
                          st.binary(min_size=1, max_size=3000), st.floats(0, 0.5)), max_size=200))
# found by hypothesis: born 3e-114, now 1.0; `now - born` rounds to 1.0, yet `born > now - 1.0` holds
@example([(0, 0, 0, 2, b"\x00", 3.060522161380862e-114), (0, 0, 0, 1, b"\x00", 0.5),
          (0, 0, 0, 1, b"\x00", 0.5)])
def test_reassembly_never_holds_more_than_its_bounds_whatever_arrives(events):
    r = Reassembler(max_inflight=8, timeout_s=1.0)
    now = 0.0
    for index_key, counter, index, count, piece, dt in events:
        now += dt
        if index >= count or count > MAX_PIECES:
            continue  # parse_piece refuses these before they reach the reassembler
        status, sealed = r.add(index_key, counter, 0, index, count, piece, now)
        assert status in (PENDING, DONE, DUPLICATE, MISMATCH)
        assert (sealed is not None) == (status == DONE)
        assert len(r) <= 8
        # younger than the timeout, in the reassembler's own terms (born > now - timeout_s): the
        # difference `now - born` can round to the timeout for a partial that is not yet due
        assert all(p.size <= chunk.MAX_SEALED and p.born > now - 1.0 for p in r._partials.values())


# --- runs of pieces (add_run) -------------------------------------------------------------------
def _state(r: Reassembler) -> dict:
    """What a reassembler holds, whatever the form of its slots: per chunk the count, timestamp,
    pieces held, size, which indexes are filled and their bodies joined."""
    return {key: (p.count, p.timestamp, p.have, p.size, [s is not None for s in p.pieces],
                  b"".join(s for s in p.pieces if s is not None))
            for key, p in r._partials.items()} | {"expired": r.expired}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 1), st.integers(0, 9),
                          st.integers(1, 9), st.integers(1, 10), st.integers(1, 9000), st.floats(0, 0.4)),
                max_size=60))
def test_a_run_of_pieces_is_stored_as_the_pieces_one_by_one_would_be(events):
    """Against a reassembler fed piece by piece: a run that add_run takes leaves the same state and
    gives what the last of its pieces would have given, with no duplicate or mismatch among them;
    a run it refuses is one where piece by piece would have met a duplicate or mismatch, would not
    fit, or would complete the chunk before its last piece; then nothing was stored (the caller
    goes piece by piece)."""
    runs, single = Reassembler(max_inflight=4, timeout_s=1.0), Reassembler(max_inflight=4, timeout_s=1.0)
    now = 0.0
    for receiver, counter, ts, index, pieces, count, body, dt in events:
        now += dt
        if pieces < 2 or index + pieces > count:
            continue  # the caller only asks for runs of two or more pieces of one chunk
        bodies = [bytes([index + j]) * body for j in range(pieces)]
        before = _state(runs)
        got = runs.add_run(receiver, counter, ts, index, pieces, count, b"".join(bodies), now)
        one_by_one = [single.add(receiver, counter, ts, index + j, count, bodies[j], now)
                      for j in range(pieces)]
        # clean: every piece stored, the chunk completed by the last one at most (a piece after
        # the one that completed it would start the same chunk afresh: a duplicate of it)
        clean = (all(status == PENDING for status, _ in one_by_one[:-1])
                 and one_by_one[-1][0] in (PENDING, DONE))
        if got is None:
            assert not clean
            # nothing stored (only an expiry that add() would also have done may have happened)
            assert {k: v for k, v in _state(runs).items() if k != "expired"}.items() <= before.items()
            for j in range(pieces):  # the caller's way: piece by piece
                runs.add(receiver, counter, ts, index + j, count, bodies[j], now)
        else:
            assert clean and got == one_by_one[-1]
        assert _state(runs) == _state(single)


def test_a_run_next_to_single_pieces_completes_the_chunk_and_a_repeated_run_is_refused():
    r = Reassembler()
    assert r.add(1, 9, 5, 3, 5, b"d", 0.0) == (PENDING, None)
    assert r.add_run(1, 9, 5, 0, 3, 5, b"abc", 0.0) == (PENDING, None)
    assert r.add_run(1, 9, 5, 1, 2, 5, b"bc", 0.0) is None  # pieces 1 and 2 are held already
    assert r.add_run(1, 9, 5, 3, 2, 5, b"de", 0.0) is None  # piece 3 too
    assert r.add_run(1, 9, 6, 4, 1, 5, b"e", 0.0) is None  # a run is two pieces or more
    assert r.add(1, 9, 5, 4, 5, b"e", 0.0) == (DONE, b"abcde")
    assert r.add_run(1, 10, 5, 0, 2, 2, b"xy", 0.0) == (DONE, b"xy")  # a whole chunk in one run
    assert r.add_run(1, 11, 5, 0, 2, 3, bytes(chunk.MAX_SEALED + 1), 0.0) is None  # too large: not stored
    assert r.add_run(1, 11, 5, 0, 3, 2, b"xyz", 0.0) is None  # more pieces than the count
    assert len(r) == 0
