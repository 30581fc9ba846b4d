"""When an agent asks for a new certificate and which answer it keeps (pure; `now` is given)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol import renewal
from nodeagent.protocol.cert import issue_certificate, parse_certificate

CA = mldsa.MLDSA87PrivateKey.generate()
CA_PUBLIC = CA.public_key().public_bytes_raw()
KEY = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()


def _cert(not_before: int, not_after: int, *, key=KEY, ip="10.10.10.2", name="belgium", flags=0, ca=CA,
          network="default") -> bytes:
    return issue_certificate(ca, public_key=key, name=name, network=network, overlay_ip=ip, prefix_len=24,
                             flags=flags, not_before=not_before, not_after=not_after)


CURRENT = parse_certificate(_cert(1000, 1000 + 365 * 86400))


def test_renewal_is_due_at_two_thirds_of_the_lifetime():
    assert renewal.renew_at(CURRENT) == 1000 + 243 * 86400 + 8 * 3600
    assert not renewal.wants_renewal(CURRENT, renewal.renew_at(CURRENT) - 1)
    assert renewal.wants_renewal(CURRENT, renewal.renew_at(CURRENT))
    short = parse_certificate(_cert(0, 30))
    assert renewal.renew_at(short) == 20


@pytest.mark.parametrize(("lifetime", "retry"), [(30, 1.0), (300, 10.0), (365 * 86400, 60.0), (3, 1.0)])
def test_a_request_without_a_new_certificate_is_repeated_within_1_to_60_s(lifetime, retry):
    assert renewal.retry_interval(parse_certificate(_cert(0, lifetime))) == retry


def test_a_renewal_with_a_new_name_and_flags_is_kept():
    data = _cert(2000, 2000 + 400 * 86400, name="belgium-2", flags=3)
    new = renewal.check_renewed(CURRENT, data, CA_PUBLIC, 2000)
    assert new.name == "belgium-2" and renewal.is_renewal(CURRENT, new)


def test_the_certificate_we_hold_is_no_renewal():
    same = renewal.check_renewed(CURRENT, CURRENT.to_bytes(), CA_PUBLIC, 2000)
    assert not renewal.is_renewal(CURRENT, same)


@pytest.mark.parametrize(("data", "why"), [
    (_cert(2000, 2000 + 400 * 86400, key=mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()),
     "another key"),
    (_cert(2000, 2000 + 400 * 86400, ip="10.10.10.3"), "overlay address"),
    (_cert(2000, 2000 + 400 * 86400, network="other"), "overlay address or network"),
    (_cert(2000, 2000 + 400 * 86400, ca=mldsa.MLDSA87PrivateKey.generate()), "rejected"),
    (_cert(2000, 1000 + 365 * 86400 - 1), "expires before"),
    (_cert(5000, 2000 + 400 * 86400), "rejected"),  # not valid yet at 2000
    (b"\x00" * 100, "rejected"),
])
def test_an_answer_that_is_not_our_renewed_certificate_is_refused(data, why):
    with pytest.raises(renewal.RenewalRefused, match=why):
        renewal.check_renewed(CURRENT, data, CA_PUBLIC, 2000)
