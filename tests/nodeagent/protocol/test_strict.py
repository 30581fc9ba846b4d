"""The strict map reader and field checks on their own (the netmap and message parsers build on them)."""

from __future__ import annotations

import pytest

from nodeagent.protocol.constants import CloseCode
from nodeagent.protocol.strict import (
    MAX_ITEMS,
    U64_MAX,
    Malformed,
    MessageError,
    StrictMap,
    check_fingerprint,
    check_ip,
    check_peer_id,
)

A = "a" * 40


def test_every_key_is_read_once_and_leftovers_or_missing_keys_are_malformed():
    o = StrictMap({"n": 1, "extra": 2}, "thing")
    assert o.int("n") == 1
    with pytest.raises(Malformed, match=r"thing: unknown key\(s\) \['extra'\]"):
        o.done()
    with pytest.raises(Malformed, match="thing: missing 'gone'"):
        StrictMap({}, "thing").int("gone")
    with pytest.raises(Malformed, match="thing must be a map"):
        StrictMap([1], "thing")


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (U64_MAX, True), (-1, False), (U64_MAX + 1, False), (True, False), (1.0, False),
     ("1", False)],
)
def test_int_is_a_real_integer_within_bounds(value, ok):
    o = StrictMap({"k": value}, "m")
    if ok:
        assert o.int("k") == value
    else:
        with pytest.raises(Malformed, match=r"m\.k must be an integer"):
            o.int("k")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, True, "1"])
def test_num_is_finite_and_not_negative(value):
    with pytest.raises(Malformed):
        StrictMap({"k": value}, "m").num("k")
    assert StrictMap({"k": None}, "m").num("k", nullable=True) is None
    assert StrictMap({"k": 2}, "m").num("k") == 2.0


@pytest.mark.parametrize("value", ["", "x" * 64, "a\nb", "a\x7fb", b"bytes", 7])
def test_str_is_bounded_text_without_control_characters(value):
    with pytest.raises(Malformed):
        StrictMap({"k": value}, "m").str("k")


def test_str_refuses_exactly_c0_controls_and_del_anywhere():
    """The check is a regular expression (decoding a delta is on every agent's path): it must
    refuse what the per-character rule refused, wherever the character sits, and nothing else."""
    for code in range(0x300):
        c = chr(code)
        refused = code < 0x20 or code == 0x7F
        for value in (c, f"a{c}", f"{c}b", f"a{c}b"):
            if refused:
                with pytest.raises(Malformed, match="control characters"):
                    StrictMap({"k": value}, "m").str("k")
            else:
                assert StrictMap({"k": value}, "m").str("k") == value


def test_optional_and_nullable_strings():
    o = StrictMap({"n": None}, "m")
    assert o.str("absent", optional=True) is None
    assert o.str("n", nullable=True) is None
    o.done()  # an optional key that was absent counts as read


def test_bytes_lists_and_booleans_are_typed():
    with pytest.raises(Malformed):
        StrictMap({"k": "text"}, "m").bytes("k", 1, 8)
    with pytest.raises(Malformed):
        StrictMap({"k": b"123456789"}, "m").bytes("k", 1, 8)
    with pytest.raises(Malformed):
        StrictMap({"k": [0] * (MAX_ITEMS + 1)}, "m").list("k")
    with pytest.raises(Malformed):
        StrictMap({"k": 1}, "m").bool("k")
    assert StrictMap({"k": None}, "m").list("k", nullable=True) is None


def test_field_checks():
    assert check_peer_id(A, "x") == A
    assert check_ip("2001:DB8::0001", "x") == "2001:db8::1"  # canonical form
    assert check_fingerprint("0" * 64, "x") == "0" * 64
    for bad in ("A" * 40, "a" * 39, 7):
        with pytest.raises(Malformed, match="peer id"):
            check_peer_id(bad, "x")
    with pytest.raises(Malformed, match="not an IP address"):
        check_ip("10.0.0.256", "x")
    for bad in ("F" * 64, "0" * 63, "0" * 65, "0" * 64 + "\n", "\n" + "0" * 63, "0" * 63 + "g", ""):
        with pytest.raises(Malformed, match="64 lowercase hex"):
            check_fingerprint(bad, "x")
    assert check_fingerprint("0123456789abcdef" * 4, "x") == "0123456789abcdef" * 4


def test_malformed_is_a_message_error_closing_with_4400():
    assert issubclass(Malformed, MessageError) and issubclass(MessageError, ValueError)
    assert Malformed("x").code == CloseCode.MALFORMED == 4400


def test_a_peer_id_with_a_trailing_newline_is_not_a_peer_id():
    # found writing the websocket fuzz harness's invariant that every parsed peer id is 40 hex
    # characters (fuzz/fuzz_messages.py check_ids): PEER_ID_RE ended in "$", which also matches
    # before a final newline, so 41 characters passed every peer id check of the protocol
    for value in (A + "\n", A + "\r", "\n" + A, A[:39] + "\n"):
        with pytest.raises(Malformed):
            check_peer_id(value, "peer")
    with pytest.raises(Malformed, match="peer id"):
        StrictMap({"peer_id": A + "\n"}, "m").peer_id("peer_id")
