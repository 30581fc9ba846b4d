"""The resolv.conf format, as far as `up --dns` needs it. Pure: text in, text out.

`parse(text)` reads the nameservers, search domains and options of a resolv.conf (resolv.conf(5):
a keyword at the start of a line, `#` or `;` comments; unknown lines are kept as they are);
`render_ours(...)` writes the file the agent installs: its own address as the only nameserver,
the mesh's suffix first among the search domains, the old options, and a first line that marks
the file as the agent's (`MARK` and the interface), so the agent that finds it at start knows a
killed predecessor left it (`is_ours`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["MARK", "Resolv", "is_ours", "parse", "render_ours"]

MARK = "# shadowmesh-agent"
MAX_SEARCH = 6  # what glibc reads of a search line (older glibc: 6 domains)


@dataclass(frozen=True, slots=True)
class Resolv:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # whole "options ..." lines


def parse(text: str) -> Resolv:
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        key, args = words[0], words[1:]
        if key == "nameserver" and args:
            try:
                nameservers.append(str(ipaddress.ip_address(args[0].split("%")[0])))
            except ValueError:
                continue
        elif key in ("search", "domain"):
            search = list(args)  # the last search or domain line wins
        elif key == "options":
            options.append(" ".join(words))
    return Resolv(tuple(nameservers), tuple(search), tuple(options))


def is_ours(text: str, interface: str | None = None) -> bool:
    """Whether `text` is a file an agent installed (for `interface`, when given)."""
    first = text.splitlines()[0] if text else ""
    if not first.startswith(MARK + " "):
        return False
    return interface is None or first.split()[2:3] == [interface + ":"]


def render_ours(interface: str, address: str, suffix: str | None, old: Resolv) -> str:
    search = ([suffix] if suffix else []) + [d for d in old.search if d != suffix]
    lines = [f"{MARK} {interface}: mesh names answered at {address}; the previous file comes back "
             "when the agent stops",
             f"nameserver {address}"]
    if search:
        lines.append("search " + " ".join(search[:MAX_SEARCH]))
    lines += old.options
    return "\n".join(lines) + "\n"
