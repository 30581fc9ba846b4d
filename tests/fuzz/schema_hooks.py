"""Schemathesis hooks for meshadmin's OpenAPI schema: a strategy for each `format` the schema names
(meshadmin/api/schemas.py FORMATS), generating exactly the values the format's description allows,
so "schema-valid" means what the server accepts. Loaded by the CLI through SCHEMATHESIS_HOOKS."""

from __future__ import annotations

import base64
import ipaddress

import schemathesis
from hypothesis import strategies as st

from nodeagent.protocol.endpoints import BadEndpoint, check_endpoint_ip

_ALLOWED = st.characters(exclude_categories=("Cc", "Cs"))  # no control characters, no surrogates


def _label_ok(text: str) -> bool:
    return 1 <= len(text.strip().encode()) <= 63


def _reachable(ip) -> bool:
    try:
        check_endpoint_ip(str(ip))
    except BadEndpoint:
        return False
    return True


LABEL = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=63),
    st.text(_ALLOWED, min_size=1, max_size=15),  # 15 characters of 4 bytes still fit in 63 bytes
).filter(_label_ok)
PUBLIC_KEY = st.binary(min_size=2592, max_size=2592).map(lambda b: base64.b64encode(b).decode())
ENDPOINT_IP = st.one_of(
    st.ip_addresses(v=4, network="198.18.0.0/15"),
    st.ip_addresses(v=6, network="2001:db8::/32"),
    st.ip_addresses().filter(_reachable),
)
PORT = st.integers(1, 65535)


def _prefix(ip, length: int) -> str:
    """The network of `ip` with `length` bits: no host bits set, never a default route (/0)."""
    return str(ipaddress.ip_network(f"{ip}/{length}", strict=False))


PREFIX = st.one_of(
    st.builds(_prefix, st.ip_addresses(v=4), st.integers(1, 32)),
    st.builds(_prefix, st.ip_addresses(v=6), st.integers(1, 128)),
)


def _endpoint(ip, port: int) -> str:
    return f"[{ip}]:{port}" if isinstance(ip, ipaddress.IPv6Address) else f"{ip}:{port}"


schemathesis.openapi.format("shadowmesh-label", LABEL)
schemathesis.openapi.format("shadowmesh-public-key", PUBLIC_KEY)
schemathesis.openapi.format("shadowmesh-endpoint-ip", ENDPOINT_IP.map(str))
schemathesis.openapi.format("shadowmesh-endpoint", st.builds(_endpoint, ENDPOINT_IP, PORT))
schemathesis.openapi.format("shadowmesh-prefix", PREFIX)
