"""The lab's NAT boxes behave as Linux NATs do, observed from outside: a UDP echo on two public hubs
answers every datagram with the source address and port it saw."""

import pytest

pytestmark = pytest.mark.privileged

HUB1, HUB2, ECHO = "198.18.0.1", "198.18.0.2", 7000


class Talk:
    """One UDP socket on `port` inside `ns` (lab/nettools.py udp-talk), driven line by line."""

    def __init__(self, lab, ns, port: int) -> None:
        self.proc = lab.tool_bg(ns, "udp-talk", str(port))
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()

    def _say(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def send(self, ip: str, port: int) -> None:
        assert self._say(f"send {ip} {port}") == "sent"

    def recv(self, timeout: float = 2.0) -> str | None:
        """"IP:PORT TEXT" of the next datagram (the echo's TEXT is the source it saw), or None."""
        out = self._say(f"recv {timeout}")
        return None if out == "none" else out.removeprefix("from ")

    def ask(self, ip: str, port: int = ECHO) -> str:
        """The source address:port the echo at ip:port saw for our datagram."""
        self.send(ip, port)
        reply = self.recv()
        assert reply is not None, f"no answer from {ip}:{port}"
        sender, seen = reply.split()
        assert sender == f"{ip}:{port}"
        return seen


@pytest.fixture
def inet(lab):
    """The public segment, with a UDP echo on HUB1 and HUB2."""
    inet = lab.switch("inet")
    for role, ip in (("hub1", HUB1), ("hub2", HUB2)):
        hub = lab.netns(role)
        inet.join(hub, f"{ip}/24")
        echo = lab.tool_bg(hub, "udp-echo", str(ECHO))
        assert echo.stdout.readline().strip() == "ready"
    return inet


def hub1(inet):
    return next(ns for ns, ip in inet.members.items() if ip == HUB1)


def test_an_easy_nat_keeps_the_source_port_for_every_destination(lab, inet):
    box = lab.nat("home", inet, wan="198.18.0.10/24", lan="198.18.10.1/24", kind="easy")
    host = lab.netns("host")
    box.attach(host, "198.18.10.2/24")
    talk = Talk(lab, host, 9443)
    assert talk.ask(HUB1) == "198.18.0.10:9443"
    assert talk.ask(HUB2) == "198.18.0.10:9443"


def test_a_hard_nat_gives_a_new_port_per_destination(lab, inet):
    box = lab.nat("home", inet, wan="198.18.0.11/24", lan="198.18.11.1/24", kind="hard")
    host = lab.netns("host")
    box.attach(host, "198.18.11.2/24")
    talk = Talk(lab, host, 9443)
    seen1, seen2 = talk.ask(HUB1), talk.ask(HUB2)
    (ip1, port1), (ip2, port2) = seen1.split(":"), seen2.split(":")
    assert ip1 == ip2 == "198.18.0.11"
    assert port1 != port2
    assert talk.ask(HUB1) == seen1  # the mapping to one destination stays while it is in use


@pytest.mark.parametrize("kind", ["easy", "firewall"])
def test_inbound_is_dropped_until_the_inside_has_sent_to_that_address_and_port(lab, inet, kind):
    box = lab.nat("box", inet, wan="198.18.0.12/24", lan="198.18.12.1/24", kind=kind)
    host = lab.netns("host")
    box.attach(host, "198.18.12.2/24")
    # the outside aims at the NAT's public address, or straight at the firewalled host's own
    public = "198.18.0.12" if kind == "easy" else "198.18.12.2"
    inside = Talk(lab, host, 9443)
    hub, other = Talk(lab, hub1(inet), 7100), Talk(lab, hub1(inet), 7101)
    hub.send(public, 9443)
    assert inside.recv(1.0) is None  # unsolicited: dropped
    inside.send(HUB1, 7100)
    assert hub.recv() == f"{public}:9443 hello"  # the firewall does not translate, the NAT does
    hub.send(public, 9443)
    assert inside.recv() == f"{HUB1}:7100 hello"  # now it is a reply
    other.send(public, 9443)
    assert inside.recv(1.0) is None  # but only from the ip:port the inside sent to


@pytest.mark.parametrize("bare", [False, True])
def test_an_unsolicited_probe_to_the_nat_leaves_no_entry_that_moves_the_inside_off_its_port(lab, inet, bare):
    """The stale-conntrack deadlock (lab/nat.py): only a box without the inbound drop remaps."""
    box = lab.nat("box", inet, wan="198.18.0.13/24", lan="198.18.13.1/24", kind="easy", bare=bare)
    host = lab.netns("host")
    box.attach(host, "198.18.13.2/24")
    peer = Talk(lab, hub1(inet), 7200)
    peer.send("198.18.0.13", 9443)  # the peer's probe reaches the NAT before the inside has sent
    inside = Talk(lab, host, 9443)
    inside.send(HUB1, 7200)
    seen = peer.recv()
    assert seen is not None
    ip, port = seen.split()[0].split(":")
    assert ip == "198.18.0.13"
    if bare:
        assert port != "9443"  # the stale entry from the probe holds NAT:9443 <-> HUB1:7200
    else:
        assert port == "9443"


def test_two_hosts_behind_one_nat_reach_each_other_on_the_lan_and_share_its_address(lab, inet):
    box = lab.nat("home", inet, wan="198.18.0.14/24", lan="198.18.14.1/24", kind="easy")
    a, b = lab.netns("a"), lab.netns("b")
    box.attach(a, "198.18.14.2/24")
    box.attach(b, "198.18.14.3/24")
    ta, tb = Talk(lab, a, 9443), Talk(lab, b, 9443)
    ta.send("198.18.14.3", 9443)
    assert tb.recv() == "198.18.14.2:9443 hello"  # on the LAN: untranslated
    tb.send("198.18.14.2", 9443)
    assert ta.recv() == "198.18.14.3:9443 hello"
    assert ta.ask(HUB1) == "198.18.0.14:9443"
    ip, port = tb.ask(HUB1).split(":")  # the same public address; the port is taken, so another one
    assert ip == "198.18.0.14" and port != "9443"


def test_a_cgnat_chain_of_two_easy_nats_works_end_to_end_and_keeps_the_port(lab, inet):
    cgn = lab.nat("cgn", inet, wan="198.18.0.20/24", lan="198.18.20.1/24", kind="easy")
    home = lab.nat("home", cgn, wan="198.18.20.2/24", lan="198.18.21.1/24", kind="easy")
    host = lab.netns("host")
    home.attach(host, "198.18.21.2/24")
    talk = Talk(lab, host, 9443)
    assert talk.ask(HUB1) == "198.18.0.20:9443"  # the CGN's address: both NATs kept the port
    assert talk.ask(HUB2) == "198.18.0.20:9443"
    assert "198.18.0.20" not in host.run("ip", "-o", "addr").stdout  # the host never held it itself
