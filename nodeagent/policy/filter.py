"""A Policy enforced on one agent, statefully: what the data path asks per packet. Pure (`now` is
an argument; nothing here reads a clock or does I/O).

    admit(packet)   inbound, after decryption and the anti-spoofing check: may this packet be
                    written to the TUN? A refused packet is dropped and counted `policy`.
    track(packet)   outbound, before sealing: remember the flows this node starts, so that
                    their replies are admitted.
    tick(now)       forget idle flows (the agent's housekeeping tick).

A TCP connection request (SYN without ACK) is admitted only when a rule allows it: whatever
this node sent on the same ports, nobody opens a connection here that the rules do not let in.
Any other packet is admitted when

  1. it belongs to a flow in the table (one dict probe: an established flow), or
  2. a rule allows it (RuleIndex: its source, destination, protocol, destination port): the flow
     is added, so the rest of it takes step 1, or
  3. it answers a flow this node started that a rule allows from this side (the reply
     direction, as a stateful firewall lets replies in), or
  4. it is a TCP segment other than a connection request (not SYN without ACK) that a rule
     would let this node send the other way (from its port to the sender's): a reply to a
     connection this node may open, even one the table does not hold (started before the node's
     policy began to filter, or forgotten while idle). Such a segment cannot open a connection
     here: the kernel answers a segment of no connection of its own with a reset. Or
  5. it is an ICMP error about a flow of steps 1-4 (unreachable, too big, time exceeded), or
  6. it is an IPv4 or IPv6 fragment other than the first: no transport header to judge; the
     kernel reassembles it only with its first fragment, which was judged (packet.py).

Flows. A flow is keyed by the packet's own bytes, its addresses and ports (TCP, UDP) or its
addresses and protocol (the rest). Every flow is stored twice, under the key its inbound
packets carry and under the key its outbound packets carry, so neither direction builds a
reversed key per packet. The value says why the flow may pass: OUT (this node started it, and a
rule allowed that), IN (a rule allows its inbound packets), or NONE (outbound only: this node
sends packets no rule lets it start, so replies are judged by the rules each time; stored so an
outbound packet costs one probe). Three tables (TCP, UDP, the rest), each in two generations:
new flows and hits go to `cur`, and every FLOW_IDLE_S the table rotates (`old` = `cur`, `cur`
empty); a flow found only in `old` moves back to `cur`. A flow is forgotten FLOW_IDLE_S to twice
that after its last packet, with no time stamp written per packet. At FLOW_LIMIT flows in `cur`
the table rotates early: memory stays bounded whatever a peer sends, at the price of forgetting
flows sooner under a flood of new ones (a forgotten flow is judged again by the rules).

A new policy (`PacketFilter(policy, now, previous=old_filter)`) starts with empty tables but
keeps the OUT flows of the old filter that the new rules still let this node start (checked
once, when it is built: a few microseconds per flow this node started); they wait in `old`. IN
flows are not kept: the new rules judge their next packet. So a rule that is removed cuts the
flows it allowed at their next packet, and a flow this node started survives a change only if
the new policy still lets it start it.

An outbound packet's flow becomes OUT only when a rule lets this node start it; otherwise it is
IN when the rules let the other end start it (this packet is a reply), else NONE. So sending
does not open a way in that the policy does not give: once the rule that let a peer in is
removed, this node's replies on that flow do not keep it open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..protocol.policy import Policy
from .index import RuleIndex
from .packet import NOT_FIRST_FRAGMENT, TCP, UDP, Flow, flow_of, icmp_inner

__all__ = ["FLOW_IDLE_S", "FLOW_LIMIT", "IN", "NONE", "OUT", "FlowTable", "PacketFilter", "flow_key",
           "reverse_key"]

NONE: Final = 0
OUT: Final = 1
IN: Final = 2
FLOW_IDLE_S: Final = {"tcp": 600.0, "udp": 90.0, "other": 30.0}  # tuning: forgotten after 1-2x this
FLOW_LIMIT: Final = {"tcp": 16384, "udp": 16384, "other": 1024}  # tuning: flows per table generation
_SYN, _ACK = 0x02, 0x10


def _is_request(packet: bytes | bytearray | memoryview, transport: int) -> bool:
    """A TCP connection request: SYN without ACK (a segment too short to tell counts as one)."""
    if len(packet) < transport + 14:
        return True
    flags = packet[transport + 13]
    return bool(flags & _SYN and not flags & _ACK)


def flow_key(flow: Flow) -> bytes:
    """The key of a flow as its own packets carry it: src, dst, sport, dport (TCP and UDP), or the
    protocol byte, src, dst (the rest)."""
    if flow.sport is not None and flow.dport is not None:
        return flow.src + flow.dst + flow.sport.to_bytes(2, "big") + flow.dport.to_bytes(2, "big")
    return bytes((flow.proto,)) + flow.src + flow.dst


def reverse_key(key: bytes) -> bytes:
    """The key of the same flow's packets in the other direction."""
    n = len(key)
    if n == 12:
        return key[4:8] + key[0:4] + key[10:12] + key[8:10]
    if n == 36:
        return key[16:32] + key[0:16] + key[34:36] + key[32:34]
    if n == 9:
        return key[0:1] + key[5:9] + key[1:5]
    if n == 33:
        return key[0:1] + key[17:33] + key[1:17]
    raise ValueError(f"not a flow key: {n} bytes")


class FlowTable:
    """The flows of one protocol family in two generations (see the module docstring)."""

    __slots__ = ("born", "cur_in", "cur_out", "idle_s", "limit", "old_in", "old_out", "rotations")

    def __init__(self, idle_s: float, limit: int, now: float) -> None:
        self.idle_s = idle_s
        self.limit = limit
        self.born = now
        self.cur_in: dict[bytes, int] = {}  # inbound key -> OUT or IN
        self.cur_out: dict[bytes, int] = {}  # outbound key -> OUT, IN or NONE
        self.old_in: dict[bytes, int] = {}
        self.old_out: dict[bytes, int] = {}
        self.rotations = 0

    def rotate(self) -> None:
        self.old_in, self.old_out = self.cur_in, self.cur_out
        self.cur_in, self.cur_out = {}, {}
        self.rotations += 1

    def tick(self, now: float) -> None:
        if now - self.born >= self.idle_s:
            self.rotate()
            self.born = now

    def insert(self, key_in: bytes, key_out: bytes, value: int) -> None:
        if len(self.cur_out) >= self.limit:
            self.rotate()  # early: memory stays bounded
        if value != NONE:
            self.cur_in[key_in] = value
        self.cur_out[key_out] = value

    def carry(self, previous: FlowTable, still_ours: Callable[[bytes], bool]) -> None:
        """Take over the OUT flows of `previous` (an earlier policy's table) for which
        `still_ours(inbound key)` holds, into `old`."""
        for generation in (previous.old_in, previous.cur_in):
            for key, value in generation.items():
                if value == OUT and key not in self.old_in and still_ours(key):
                    self.old_in[key] = OUT
                    self.old_out[reverse_key(key)] = OUT


class PacketFilter:
    """One policy (default "deny") compiled, with its flow tables. The data path holds one, or
    None when the policy lets everything in."""

    __slots__ = ("index", "other", "policy", "tcp", "udp")

    def __init__(self, policy: Policy, now: float, previous: PacketFilter | None = None) -> None:
        if not policy.filters:
            raise ValueError("a policy whose default is 'allow' needs no filter")
        self.policy = policy
        self.index = RuleIndex.build(policy.rules)
        self.tcp = FlowTable(FLOW_IDLE_S["tcp"], FLOW_LIMIT["tcp"], now)
        self.udp = FlowTable(FLOW_IDLE_S["udp"], FLOW_LIMIT["udp"], now)
        self.other = FlowTable(FLOW_IDLE_S["other"], FLOW_LIMIT["other"], now)
        if previous is not None:
            self.tcp.carry(previous.tcp, lambda key: self._may_start(TCP, key))
            self.udp.carry(previous.udp, lambda key: self._may_start(UDP, key))
            self.other.carry(previous.other, lambda key: self._may_start(key[0], key))

    def _may_start(self, proto: int, key: bytes) -> bool:
        """Do the rules let this node start the flow whose inbound packets carry `key`?"""
        n = len(key)
        if n == 12:
            return self.index.allows(key[4:8], key[0:4], proto, int.from_bytes(key[8:10], "big"))
        if n == 36:
            return self.index.allows(key[16:32], key[0:16], proto, int.from_bytes(key[32:34], "big"))
        if n == 9:
            return self.index.allows(key[5:9], key[1:5], proto, None)
        return self.index.allows(key[17:33], key[1:17], proto, None)

    def _table(self, proto: int) -> FlowTable:
        return self.tcp if proto == TCP else self.udp if proto == UDP else self.other

    # --- inbound ----------------------------------------------------------------------------
    def admit(self, packet: bytes | bytearray | memoryview) -> bool:
        """May this inbound packet reach the TUN? An established IPv4 TCP/UDP flow: one probe
        (TCP segments with SYN set take the slow path: a request must pass the rules)."""
        if len(packet) >= 40 and packet[0] == 0x45 and not (packet[6] & 0x1F or packet[7]):
            proto = packet[9]
            if proto == 6:
                if not packet[33] & _SYN and packet[12:24] in self.tcp.cur_in:
                    return True
            elif proto == 17 and packet[12:24] in self.udp.cur_in:
                return True
        return self._admit(packet)

    def _admit(self, packet: bytes | bytearray | memoryview) -> bool:
        flow = flow_of(packet)
        if flow is NOT_FIRST_FRAGMENT:
            return True
        if not isinstance(flow, Flow):
            return False  # malformed: nothing to judge it by
        table = self._table(flow.proto)
        key = flow_key(flow)
        request = flow.proto == TCP and _is_request(packet, flow.transport)
        if key in table.cur_in and not request:
            return True
        before = table.old_in.get(key)
        if self.index.allows(flow.src, flow.dst, flow.proto, flow.dport):
            table.insert(key, reverse_key(key), OUT if before == OUT else IN)
            return True
        if request:
            return False  # a connection request passes by the rules only
        if before == OUT:  # this node started it (and, if the policy changed since, may still)
            table.insert(key, reverse_key(key), OUT)
            return True
        if (flow.proto == TCP and len(packet) >= flow.transport + 14
                and self.index.allows(flow.dst, flow.src, TCP, flow.sport)):
            table.insert(key, reverse_key(key), OUT)  # a reply on a connection this node may open
            return True
        inner = icmp_inner(packet, flow)
        if inner is not None and inner.src == flow.dst:  # about a packet this node sent
            return self._related(inner)
        return False

    def _related(self, inner: Flow) -> bool:
        """An ICMP error quoting `inner`, a packet this node sent: admitted if it belongs to a flow
        that may pass (OUT or IN)."""
        table = self._table(inner.proto)
        key = flow_key(inner)  # as this node's packet carried it: the outbound key
        value = table.cur_out.get(key)
        if value is None:
            value = table.old_out.get(key)
        return value == OUT or value == IN

    # --- outbound ---------------------------------------------------------------------------
    def track(self, packet: bytes) -> None:
        """Note an outbound packet's flow (first packet of a flow: judged once by the rules)."""
        if len(packet) >= 24 and packet[0] == 0x45 and not (packet[6] & 0x1F or packet[7]):
            proto = packet[9]
            if proto == 6:
                if packet[12:24] in self.tcp.cur_out:
                    return
            elif proto == 17 and packet[12:24] in self.udp.cur_out:
                return
        self._track(packet)

    def _track(self, packet: bytes) -> None:
        flow = flow_of(packet)
        if not isinstance(flow, Flow):
            return
        table = self._table(flow.proto)
        key = flow_key(flow)
        if key in table.cur_out:
            return
        before = table.old_out.get(key)
        if before is not None:
            value = before
        elif self.index.allows(flow.src, flow.dst, flow.proto, flow.dport):
            value = OUT
        elif self.index.allows(flow.dst, flow.src, flow.proto, flow.sport):
            value = IN  # a reply to a flow the other end may start
        else:
            value = NONE
        table.insert(reverse_key(key), key, value)

    # --- time -------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.tcp.tick(now)
        self.udp.tick(now)
        self.other.tick(now)

    def status(self) -> dict[str, int | str]:
        """For `status --json` node.policy."""
        return {"default": self.policy.default, "rules": self.index.rule_count,
                "flows_tcp": len(self.tcp.cur_out), "flows_udp": len(self.udp.cur_out),
                "flows_other": len(self.other.cur_out)}
