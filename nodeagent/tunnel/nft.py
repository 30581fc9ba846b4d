"""The exit node's nftables table: masquerade what peers send to the internet.

One table of our own per agent, `inet shadowmesh_<interface>`, so nothing else's rules are touched
and `nft delete table` takes all of ours at once:

    table inet shadowmesh_sm1a2b3c4d {
        chain postrouting {                      # nat: the internet sees the exit node's address
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr 10.10.10.0/24 oifname != "sm1a2b3c4d" masquerade
        }
        chain forward {                          # only when the agent turned forwarding on:
            type filter hook forward priority filter; policy accept;
            iifname != "sm1a2b3c4d" oifname != "sm1a2b3c4d" drop comment "shadowmesh: forwarding was off"
        }
    }

The agent turns IP forwarding on for the exit role (exitnode.py). If it was off, the forward
chain keeps every other interface pair from being forwarded, as before, and its comment tells a
later start that forwarding must be turned off again: the table is the record of what to undo,
and it lives in the node's own network namespace. The table is added when the exit role is
approved and removed when it is withdrawn, when the agent stops, and, after a crash, when it
starts again (`remove`). Commands go through the `nft` program (Debian's nftables package).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

__all__ = ["FORWARDING_WAS_OFF", "NftError", "apply", "exists", "remove", "ruleset", "table_name"]

FORWARDING_WAS_OFF = "shadowmesh: forwarding was off"
_TIMEOUT_S = 10


class NftError(Exception):
    """nft is missing or refused the ruleset; str() says which."""


def table_name(interface: str) -> str:
    return "shadowmesh_" + re.sub(r"[^A-Za-z0-9_]", "_", interface)


def ruleset(interface: str, overlay, *, forwarding_was_off: bool) -> str:
    """The table (module docstring) for the TUN `interface` and the overlay network `overlay`."""
    net = ipaddress.ip_network(overlay, strict=False)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", interface):
        raise ValueError(f"not an interface name: {interface!r}")
    family = "ip" if net.version == 4 else "ip6"
    lines = [
        f"table inet {table_name(interface)} {{",
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
        f'        {family} saddr {net} oifname != "{interface}" masquerade',
        "    }",
    ]
    if forwarding_was_off:
        lines += [
            "    chain forward {",
            "        type filter hook forward priority filter; policy accept;",
            f'        iifname != "{interface}" oifname != "{interface}" drop comment "{FORWARDING_WAS_OFF}"',
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        raise NftError("nft is not installed (Debian: apt-get install nftables); an exit node needs it")
    try:
        return subprocess.run([nft, *args], input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"nft {' '.join(args)}: {exc}") from None


def apply(interface: str, overlay, *, forwarding_was_off: bool) -> None:
    """Replace our table with a fresh one (one transaction: the old one goes, the new one comes)."""
    text = ruleset(interface, overlay, forwarding_was_off=forwarding_was_off)
    name = table_name(interface)
    script = f"table inet {name}\ndelete table inet {name}\n{text}"  # create-then-delete: no error if absent
    out = _nft("-f", "-", stdin=script)
    if out.returncode != 0:
        raise NftError(f"nft refused the exit node's table: {out.stderr.strip()}")


def exists(interface: str) -> str | None:
    """Our table as nft lists it, None when there is none."""
    out = _nft("list", "table", "inet", table_name(interface))
    return out.stdout if out.returncode == 0 else None


def remove(interface: str) -> str | None:
    """Delete our table; returns what it was (None: there was none)."""
    text = exists(interface)
    if text is None:
        return None
    out = _nft("delete", "table", "inet", table_name(interface))
    if out.returncode != 0:
        raise NftError(f"nft could not delete {table_name(interface)}: {out.stderr.strip()}")
    return text
