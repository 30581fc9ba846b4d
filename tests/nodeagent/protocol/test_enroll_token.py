"""Enrollment tokens: `<secret>.<CA fingerprint>`, old-form tokens, and strict parsing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.protocol.enroll_token import (
    TokenFormatError,
    ca_fingerprint,
    fingerprint_matches,
    fingerprint_text,
    make_token,
    parse_fingerprint,
    parse_token,
)

CA = bytes(range(256)) * 10 + bytes(32)  # 2,592 bytes: the shape of a CA key
SECRET = "q8x" * 14 + "Z"  # 43 characters, like secrets.token_urlsafe(32)


def test_a_token_is_the_secret_a_dot_and_the_ca_fingerprint():
    token = make_token(SECRET, CA)
    secret, fp = token.split(".")
    assert secret == SECRET and len(fp) == 43
    parsed = parse_token(token)
    assert parsed.secret == SECRET and parsed.fingerprint == hashlib.sha256(CA).digest()
    assert fingerprint_matches(parsed.fingerprint, CA)
    assert not fingerprint_matches(parsed.fingerprint, CA[::-1])


def test_an_old_form_token_has_no_fingerprint():
    assert parse_token(SECRET).fingerprint is None and parse_token(SECRET).secret == SECRET


@pytest.mark.parametrize("bad", ["", "short", SECRET + ".", SECRET + ".abc", SECRET + "." + "A" * 44,
                                 SECRET + ".." + fingerprint_text(ca_fingerprint(CA)), "bad char!" * 3,
                                 SECRET + "." + "/" * 43, "x" * 300])
def test_a_malformed_token_is_a_token_format_error(bad):
    with pytest.raises(TokenFormatError):
        parse_token(bad)


def test_a_fingerprint_reads_as_base64url_or_hex_and_only_canonically():
    fp = ca_fingerprint(CA)
    assert parse_fingerprint(fingerprint_text(fp)) == fp == parse_fingerprint(fp.hex().upper())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    text = fingerprint_text(fp)
    # the last character carries 4 bits of the key and 2 unused ones: setting one gives other text
    # for the same bytes, which is refused (one fingerprint, one spelling)
    non_canonical = text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]
    with pytest.raises(TokenFormatError, match="canonical"):
        parse_fingerprint(non_canonical)


@given(st.text(max_size=300))
def test_any_text_is_a_token_or_a_token_format_error(text):
    try:
        parsed = parse_token(text)
    except TokenFormatError:
        return
    assert parsed.fingerprint is None or len(parsed.fingerprint) == 32
