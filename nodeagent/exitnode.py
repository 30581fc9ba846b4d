"""Exit nodes on the agent (enrolled mode): using one, and being one.

Using one (a client). Each applied netmap decides the exit node in use (routing/exits.py:
`up --exit-node NAME`, else the operator's choice). enrolled.py puts its default route into the
data path's table and the exit peer's allowed prefixes, so packets for the internet go to it and
its answers, from any address, are accepted from it and from no other peer (the anti-spoofing
check of the receive path uses the same table). Here the kernel follows: `tun.exit_routing_up`
sends the node's unmarked traffic into the tunnel while the agent's own sockets, marked
(tunnel/mark.py), keep the node's own routes to its peers and its server. No exit node in use:
the rules are removed.

Being one. While the netmap says the node is an approved exit node (`SelfInfo.is_exit`), IP
forwarding is on for the overlay's family and our nftables table masquerades what peers send
(tunnel/nft.py); when the approval goes, when the agent stops and, after a crash, when it starts
again, the table goes and forwarding is turned off again if the agent turned it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from pathlib import Path

from .protocol.netmap import NetMap
from .routing.exits import ExitChoice, choose_exit
from .tunnel import nft
from .tunnel import tun as tunmod
from .tunnel.mark import UNDERLAY_MARK

__all__ = ["ExitNode", "forwarding_path"]

log = logging.getLogger(__name__)


def forwarding_path(version: int) -> Path:
    return Path("/proc/sys/net/ipv4/ip_forward" if version == 4 else "/proc/sys/net/ipv6/conf/all/forwarding")


def _read_forwarding(version: int) -> str:
    return forwarding_path(version).read_text().strip()


def _write_forwarding(version: int, value: str) -> None:
    forwarding_path(version).write_text(value + "\n")


class ExitNode:
    def __init__(self, interface: str, overlay, *, requested: str | None = None) -> None:
        """`interface`: our TUN; `overlay`: our address with its prefix (ip_interface);
        `requested`: `up --exit-node NAME` (None: follow the dashboard)."""
        self.interface = interface
        self.overlay = ipaddress.ip_interface(overlay)
        self.version = self.overlay.version
        self.requested = requested
        self.choice = ExitChoice()
        self.routing = False  # exit_routing_up is in place
        self.serving = False  # our table and forwarding are in place
        self.forwarding_was_off = False
        self.error = ""

    # --- start and stop ----------------------------------------------------------------------
    def recover(self) -> None:
        """At start: undo what a killed agent of this interface left (rules, table, forwarding)."""
        try:
            if tunmod.exit_routing_down(self.version):
                log.warning("removed exit-node routing rules an earlier run left")
        except Exception as exc:  # netlink trouble: say so, start anyway
            log.error("exit-node routing rules could not be checked: %s", exc)
        try:
            left = nft.remove(self.interface)
        except nft.NftError as exc:
            log.debug("exit-node table: %s", exc)
            return
        if left is not None:
            log.warning("removed the exit node's nftables table an earlier run left")
            if nft.FORWARDING_WAS_OFF in left:
                with contextlib.suppress(OSError):
                    _write_forwarding(self.version, "0")

    def close(self) -> None:
        """When the agent stops (sync: after the event loop)."""
        if self.routing:
            self._routing_down()
        if self.serving:
            self._stop_serving()

    # --- each netmap -------------------------------------------------------------------------
    def choose(self, netmap: NetMap) -> ExitChoice:
        """The exit node to use with this map (enrolled.py builds the routes from it first)."""
        choice = choose_exit(netmap, self.requested, self.version)
        if choice != self.choice:
            if choice.peer_id:
                log.info("exit node: %s (%s), %s", choice.name, choice.peer_id[:8],
                         "up --exit-node" if choice.source == "flag" else "chosen in the dashboard")
            elif choice.problem:
                log.warning("exit node not used: %s", choice.problem)
            elif self.choice.peer_id:
                log.info("exit node: none any more")
        self.choice = choice
        return choice

    async def apply(self, netmap: NetMap) -> None:
        """The kernel follows the choice and our own role (netlink and nft in a worker thread)."""
        if self.choice.peer_id and not self.routing:
            try:
                await asyncio.to_thread(tunmod.exit_routing_up, self.interface, self.version, UNDERLAY_MARK)
                self.routing = True
                self.error = ""
            except tunmod.TunError as exc:
                self.error = str(exc)
                log.error("%s", exc)
        elif not self.choice.peer_id and self.routing:
            await asyncio.to_thread(self._routing_down)
        if netmap.node.is_exit and not self.serving:
            await asyncio.to_thread(self._start_serving)
        elif not netmap.node.is_exit and self.serving:
            await asyncio.to_thread(self._stop_serving)

    def _routing_down(self) -> None:
        try:
            tunmod.exit_routing_down(self.version)
        except Exception as exc:
            log.error("exit-node routing could not be removed: %s", exc)
        self.routing = False

    def _start_serving(self) -> None:
        try:
            was = _read_forwarding(self.version)
            nft.apply(self.interface, self.overlay.network, forwarding_was_off=was == "0")
            if was == "0":
                _write_forwarding(self.version, "1")
            self.forwarding_was_off = was == "0"
            self.serving = True
            self.error = ""
            log.info("exit node: approved; forwarding and masquerading %s (table %s)", self.overlay.network,
                     nft.table_name(self.interface))
        except (OSError, nft.NftError) as exc:
            self.error = f"cannot act as an exit node: {exc}"
            log.error("%s", self.error)
            with contextlib.suppress(nft.NftError):
                nft.remove(self.interface)

    def _stop_serving(self) -> None:
        try:
            nft.remove(self.interface)
        except nft.NftError as exc:
            log.error("exit node: %s", exc)
        if self.forwarding_was_off:
            with contextlib.suppress(OSError):
                _write_forwarding(self.version, "0")
        self.forwarding_was_off = False
        self.serving = False
        log.info("exit node: no longer; table %s removed", nft.table_name(self.interface))

    def status(self) -> dict:
        """`status --json` node.exit_node."""
        return {"using": self.choice.peer_id, "using_name": self.choice.name,
                "source": self.choice.source or None, "problem": self.choice.problem or None,
                "routing": self.routing, "serving": self.serving, "error": self.error or None}
