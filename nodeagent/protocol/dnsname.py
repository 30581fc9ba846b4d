"""DNS names of the mesh: which node names are DNS labels, which suffixes are DNS names. Pure.

A node answers to `<name>.<suffix>` (docs/operations.md#dns-names). The server refuses node names
and suffixes that are not valid here (meshadmin/mesh/services/validation.py), the netmap parser
refuses a suffix that is not (netmap.py), and the agent's name table skips any node name that is
not a label (names enrolled before the check existed).

Labels follow the host-name rule of RFC 1123 section 2.1: 1..63 ASCII letters, digits and
hyphens, neither first nor last a hyphen. Names compare case-insensitively (RFC 4343); `fold`
gives the form they are compared in.
"""

from __future__ import annotations

import re

__all__ = ["MAX_NAME", "MAX_SUFFIX", "default_suffix", "fold", "is_label", "is_suffix"]

MAX_NAME = 253  # the longest DNS name in text form, without the final dot (RFC 1035 2.3.4)
MAX_SUFFIX = MAX_NAME - 64  # room for one full label and its dot in front of the suffix
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
MESH_TLD = "mesh"


def is_label(value: object) -> bool:
    """One host-name label: 1..63 letters, digits or hyphens, not starting or ending with one."""
    return isinstance(value, str) and value.isascii() and bool(_LABEL.match(value))


def is_suffix(value: object) -> bool:
    """A DNS name of one or more labels (no final dot), at most MAX_SUFFIX characters, whose last
    label is not all digits (so no suffix reads as an IPv4 address)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SUFFIX:
        return False
    labels = value.split(".")
    return all(is_label(label) for label in labels) and not labels[-1].isdigit()


def fold(name: str) -> str:
    """The form names are compared in: ASCII lower case, without a final dot."""
    return name.rstrip(".").lower()


def default_suffix(network: str) -> str | None:
    """`<network>.mesh` when the network's name is a label, else None (no DNS names until an
    operator sets a suffix)."""
    return f"{fold(network)}.{MESH_TLD}" if is_label(network) else None
