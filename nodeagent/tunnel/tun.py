"""The TUN device and its kernel state. The ONLY module that imports pyroute2.

Contract:
- `TunDevice.open(name)` opens /dev/net/tun and attaches with TUNSETIFF (IFF_TUN | IFF_NO_PI) in
  the *current* network namespace (the agent is started inside the node's namespace). The fd is
  non-blocking: each read returns one IP packet (after a 10-byte virtio_net_hdr when opened
  with vnet=True, the default; with TSO on, also the default, the packet may be a TCP
  super-packet or carry a partial checksum: tunnel/tso.py) or raises BlockingIOError; each
  write injects one packet, or a GSO super-packet of one TCP flow (tunnel/gro.py). Closing the
  fd of this non-persistent device deletes it, and the kernel drops its addresses and routes
  with it, so even `kill -9` leaves nothing behind.
  (pyroute2's own `link('add', kind='tuntap')` closes its fd and leaves a persistent device
  without a packet handle, which is why we open it ourselves.)
- `configure()` sets the address, MTU and state up and adds a route per routed prefix that the
  address's own subnet does not already cover; `teardown()` removes those routes and the link.
  Both are blocking netlink calls through the sync `IPRoute`; the agent runs them before its
  event loop starts or with `asyncio.to_thread` (the sync IPRoute raises inside a running loop,
  and AsyncIPRoute breaks under uvloop: docs/architecture.md#design-notes).
- `route_mtus(destinations)` asks the kernel which route it would take to each address, and its
  MTU (a lookup: nothing is sent; blocking, before the loop starts, like `configure`);
  `fitting_mtu` turns the narrowest into the overlay MTU (docs/protocol.md#sizes-and-overheads).
- Errors are `TunError` with a message that says what to do (not root, no /dev/net/tun, name taken).
- Exit-node routing (`exit_routing_up`, `exit_routing_down`): while the node sends its internet
  traffic through an exit node, two policy rules of the overlay's family and a table of our own:

      pref 5270  lookup main suppress_prefixlength 0     every route of the node but its default
      pref 5271  not fwmark UNDERLAY_MARK lookup 29549   the rest (unmarked) ...
      table 29549: default dev <tun>                      ... goes into the tunnel

  The agent's own sockets carry UNDERLAY_MARK (tunnel/mark.py), so its datagrams, control links
  and websocket keep the node's default route whatever address they go to (a peer that roams
  included); so do the node's other routes (its LAN, the overlay). The table's route goes with the
  device; the rules are removed by `exit_routing_down`, also at the next start after a crash.

MTU (`overlay_mtu`): the largest inner packet whose datagram still fits one underlay packet:

    overlay MTU = underlay MTU - IP header - UDP header - frame overhead
    direct:    1500 - 20 (IPv4) - 8 - 36 (20-byte header + 16-byte tag) = 1436
               1500 - 40 (IPv6) - 8 - 36                               = 1416
    relayed:   frame overhead is 92 (outer header + inner frame + sealed 36-byte peer id):
               IPv4 1380, IPv6 1360

The underlay family is that of the node's own address (listen_ip, or the peers' endpoints when
it listens on the wildcard); the underlay MTU is taken as 1500 (Ethernet), or as the MTU of
the narrowest route the node sends on when that is smaller (`fitting_mtu`; the `mtu` config key
overrides everything). A node with any `via` peer uses the relayed figure for the whole device,
so one MTU fits every path the node's own routes know of; a narrower link further on is handled
by udp.py and the data path's "too big" answers (toobig.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import struct

from .mark import UNDERLAY_MARK

__all__ = [
    "EXIT_RULE_PREF", "EXIT_TABLE", "TunDevice", "TunError", "configure", "exit_routing_down",
    "exit_routing_up", "fitting_mtu", "overlay_mtu", "route_mtus", "set_routes", "teardown",
]

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
# A/B knob: SHADOWMESH_TUN_TSO=0 keeps the vnet TUN without offloads (reads are plain packets).
# IPv6 super-packets (TSO6) only with SHADOWMESH_TUN_TSO6=1: tso.py cuts them, but a TCPv6
# packet with extension headers cannot be cut there and would be dropped, and no netns test runs
# an IPv6 overlay yet; without TSO6 the kernel segments IPv6 itself (checksums still partial).
TSO = os.environ.get("SHADOWMESH_TUN_TSO", "1") != "0"
TSO6 = os.environ.get("SHADOWMESH_TUN_TSO6", "0") == "1"
TSO_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN | (TUN_F_TSO6 if TSO6 else 0)
UNDERLAY_MTU = 1500
DEFAULT_ROUTES = {"default4": 2, "default6": 10}  # route_mtus' names for the default routes
MAIN_TABLE = 254
MIN_OVERLAY_MTU = {4: 576, 6: 1280}  # the least each IP version must carry (RFC 791, RFC 8200)
# tuning: packets the kernel queues on the TUN while the agent is busy (a drain of 64 reads
# takes ~0.1-0.3 ms; on a shared 2-core box the agent can lose the CPU for milliseconds, and
# the default 1000 overflowed at 300 Mbit/s of 1200-byte UDP)
TXQUEUELEN = int(os.environ.get("SHADOWMESH_TUN_TXQLEN", "4000"))
IP_HEADER = {4: 20, 6: 40}
EXIT_TABLE = 0x736D  # 29549: the exit node's routing table ("sm")
EXIT_RULE_PREF = 5270  # the suppress rule; the mark rule is the next one
FAMILY = {4: 2, 6: 10}  # AF_INET, AF_INET6
ANY = {4: "0.0.0.0", 6: "::"}  # the default route's destination  # noqa: S104
UDP_HEADER = 8


class TunError(Exception):
    """The TUN device could not be created or configured."""


def overlay_mtu(family: int, frame_overhead: int, underlay_mtu: int = UNDERLAY_MTU) -> int:
    """Overlay MTU for an underlay of IP `family` (4 or 6) and a per-datagram frame overhead."""
    return underlay_mtu - IP_HEADER[family] - UDP_HEADER - frame_overhead


def fitting_mtu(family: int, frame_overhead: int, route_mtus: dict[str, int],
                overlay_version: int = 4) -> int:
    """The overlay MTU whose frames fit the narrowest of the routes the agent will send on
    (`route_mtus`: destination -> MTU of its route, from `route_mtus`): `overlay_mtu` of the
    smaller of UNDERLAY_MTU and that route's MTU. A larger route MTU (a jumbo-frame LAN) does not
    raise it: the Internet between nodes is assumed to carry UNDERLAY_MTU. Never below the least
    an IP version must carry (576 for IPv4; 1280 for an IPv6 overlay, which the kernel would turn
    off on a smaller device): frames of a narrower route are fragmented by the kernel."""
    narrowest = min([UNDERLAY_MTU, *route_mtus.values()])
    return max(MIN_OVERLAY_MTU[overlay_version], overlay_mtu(family, frame_overhead, narrowest))


def route_mtus(destinations) -> dict[str, int]:
    """The MTU of the route the kernel would take to each destination address (the route's own
    `mtu` metric when it has one, else its device's), as `ip route get` finds it; "default4" and
    "default6" stand for the first default route of each IP version. A destination without a
    route, or not an IP address, is left out. A lookup only: nothing is sent."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    _quiet_pyroute2()
    out: dict[str, int] = {}
    with IPRoute() as ipr:
        for dest in destinations:
            try:
                if dest in DEFAULT_ROUTES:  # the main table's (an exit node's table has one too)
                    routes = [r for r in ipr.get_default_routes(family=DEFAULT_ROUTES[dest])
                              if r.get_attr("RTA_TABLE") in (None, MAIN_TABLE)]
                else:  # as the agent's own marked sockets are routed, past an exit node's rules
                    routes = list(ipr.route("get", dst=str(dest), mark=UNDERLAY_MARK))
            except (NetlinkError, ValueError, OSError):
                continue
            if not routes:
                continue
            route = routes[0]
            metrics = route.get_attr("RTA_METRICS")
            mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
            if not mtu:
                oif = route.get_attr("RTA_OIF")
                links = ipr.get_links(oif) if oif else []
                mtu = links[0].get_attr("IFLA_MTU") if links else None
            if mtu:
                out[str(dest)] = int(mtu)
    return out


class TunDevice:
    __slots__ = ("fd", "name", "tso", "vnet")

    def __init__(self, fd: int, name: str, vnet: bool = False, tso: bool = False) -> None:
        self.fd = fd
        self.name = name
        self.vnet = vnet
        self.tso = tso

    @classmethod
    def open(cls, name: str, vnet: bool = True, tso: bool | None = None) -> TunDevice:
        """vnet=True: IFF_VNET_HDR with a 10-byte header, so that our writes may be GSO
        super-packets (tunnel/gro.py). tso (default: the SHADOWMESH_TUN_TSO knob, on) also turns
        on the offloads CSUM|TSO4|TSO_ECN (TSO6 with SHADOWMESH_TUN_TSO6=1): the kernel then
        hands us TCP super-packets of up to 64 KB and packets with partial checksums, which the
        data path cuts (tunnel/tso.py) and sends as CSUM_PARTIAL frames. Without tso a read is a
        zero header + one complete IP packet."""
        tso = TSO if tso is None else tso
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TunError("/dev/net/tun does not exist (load the tun module or run in a VM/container "
                           "that provides it)") from None
        except PermissionError:
            raise TunError("cannot open /dev/net/tun: run as root or with CAP_NET_ADMIN") from None
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
            if vnet:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 10))
                fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
                if tso:
                    try:
                        fcntl.ioctl(fd, TUNSETOFFLOAD, TSO_OFFLOADS)
                    except OSError as exc:  # an old kernel without some flag: stay without offloads
                        logging.getLogger(__name__).info("TUN offloads not available (%s)", exc.strerror)
                        tso = False
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EPERM:
                raise TunError(f"creating TUN device {name}: operation not permitted "
                               "(needs root or CAP_NET_ADMIN)") from None
            if exc.errno == errno.EBUSY:
                raise TunError(f"TUN device {name} already exists and is in use "
                               "(another agent with this interface name?)") from None
            raise TunError(f"creating TUN device {name}: {exc.strerror}") from None
        os.set_blocking(fd, False)
        return cls(fd, name, vnet, tso=bool(vnet and tso))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _extra_routes(address, routes):
    own = ipaddress.ip_interface(address).network
    return [r for r in routes if not (r.version == own.version and r.subnet_of(own))]


def _quiet_pyroute2() -> None:
    # pyroute2 resets its logger on import and logs every netlink message at DEBUG
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


def configure(name: str, address, mtu: int, routes) -> None:
    """Address, MTU, up, routes. `address` is an ip_interface; `routes` are ip_networks.

    An IPv4-only overlay gets IPv6 disabled on the device, so the kernel's own IPv6 chatter
    (router solicitations, MLD) does not show up as `no_route` drops.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    _quiet_pyroute2()
    if address.version == 4 and all(r.version == 4 for r in routes):
        with contextlib.suppress(OSError), open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")

    try:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=name)
            if not idx:
                raise TunError(f"TUN device {name} vanished before it was configured")
            index = idx[0]
            ipr.link("set", index=index, mtu=mtu, txqlen=TXQUEUELEN)
            ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
            ipr.link("set", index=index, state="up")
            for net in _extra_routes(address, routes):
                ipr.route("add", dst=str(net.network_address), dst_len=net.prefixlen, oif=index,
                          family=2 if net.version == 4 else 10)
    except NetlinkError as exc:
        raise TunError(f"configuring {name}: {os.strerror(exc.code)} (netlink error {exc.code})") from None


def teardown(name: str, address, routes) -> None:
    """Remove our routes and the link; missing ones are fine (the kernel may have gone first)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    _quiet_pyroute2()
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return
        for net in _extra_routes(address, routes):
            try:
                ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx[0],
                          family=2 if net.version == 4 else 10)
            except NetlinkError:
                pass
        try:
            ipr.link("del", index=idx[0])
        except NetlinkError:
            pass


def set_routes(name: str, address, add=(), remove=()) -> None:
    """Live route changes on the device (enrolled mode: the netmap's routes changed).

    Prefixes inside our own overlay network are skipped (the address's connected route covers
    them); a route that is already there (add) or already gone (remove) is not an error."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    _quiet_pyroute2()
    if any(net.prefixlen == 0 for net in add):  # the classic bug: it would capture the tunnel itself
        raise TunError("a default route goes through exit-node routing (exit_routing_up), not the main table")
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise TunError(f"TUN device {name} is gone")
        for op, nets in (("del", remove), ("replace", add)):
            for net in _extra_routes(address, nets):
                try:
                    ipr.route(op, dst=str(net.network_address), dst_len=net.prefixlen, oif=idx[0],
                              family=2 if net.version == 4 else 10)
                except NetlinkError as exc:
                    if op == "replace":
                        raise TunError(f"route {net} on {name}: {os.strerror(exc.code)}") from None


def interface_addresses() -> list[tuple[str, int, str]]:
    """Every address of this namespace's interfaces as (address, prefix length, interface name):
    the local candidates of NAT traversal come from these (traversal.py). A blocking netlink
    call: run it in a worker thread once the loop runs."""
    from pyroute2 import IPRoute

    _quiet_pyroute2()
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        out = []
        for msg in ipr.get_addr():
            ip = msg.get_attr("IFA_ADDRESS")
            if ip:
                out.append((ip, msg["prefixlen"], names.get(msg["index"], "")))
        return out


def _exit_rules(version: int, mark: int) -> list[dict]:
    from pyroute2.netlink.rtnl.fibmsg import FR_ACT_TO_TBL

    family = FAMILY[version]
    return [
        {"family": family, "table": 254, "priority": EXIT_RULE_PREF, "suppress_prefixlen": 0,
         "action": FR_ACT_TO_TBL},
        {"family": family, "table": EXIT_TABLE, "priority": EXIT_RULE_PREF + 1, "fwmark": mark,
         "fwmask": 0xFFFFFFFF, "flags": 2, "action": FR_ACT_TO_TBL},  # flags 2: FIB_RULE_INVERT ("not")
    ]


def exit_routing_up(name: str, version: int, mark: int) -> None:
    """Send the node's unmarked traffic of IP `version` (4 or 6) through the TUN `name` (module
    docstring). Idempotent: rules already there are replaced."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    _quiet_pyroute2()
    exit_routing_down(version)
    family = FAMILY[version]
    try:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=name)
            if not idx:
                raise TunError(f"TUN device {name} is gone")
            ipr.route("replace", dst=ANY[version], dst_len=0, oif=idx[0], table=EXIT_TABLE, family=family)
            for rule in _exit_rules(version, mark):
                ipr.rule("add", **rule)
    except NetlinkError as exc:
        with contextlib.suppress(Exception):
            exit_routing_down(version)
        raise TunError(f"exit-node routing on {name}: {os.strerror(exc.code)} "
                       f"(netlink error {exc.code})") from None


def exit_routing_down(version: int | None = None) -> bool:
    """Remove our exit-node rules and table routes (of `version`, or both families). Returns
    whether anything was there."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    _quiet_pyroute2()
    found = False
    with IPRoute() as ipr:
        for v in (4, 6) if version is None else (version,):
            family = FAMILY[v]
            for rule in ipr.get_rules(family=family):
                pref = rule.get_attr("FRA_PRIORITY")
                table = rule.get_attr("FRA_TABLE")
                ours = (pref == EXIT_RULE_PREF and table == 254
                        and rule.get_attr("FRA_SUPPRESS_PREFIXLEN") == 0) or \
                    (pref == EXIT_RULE_PREF + 1 and table == EXIT_TABLE)
                if ours:
                    found = True
                    with contextlib.suppress(NetlinkError):
                        ipr.rule("del", family=family, priority=pref, table=table)
            try:
                routes = ipr.get_routes(family=family, table=EXIT_TABLE)
            except NetlinkError:
                routes = []
            for route in routes:
                if route.get_attr("RTA_TABLE") != EXIT_TABLE:
                    continue
                found = True
                with contextlib.suppress(NetlinkError):
                    ipr.route("del", dst=ANY[v], dst_len=0, table=EXIT_TABLE, family=family)
    return found
