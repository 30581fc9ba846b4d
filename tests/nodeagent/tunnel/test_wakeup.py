"""The data path's event-loop callbacks (`tun_ready`, `udp_ready`): the TUN drained right after a
write that may have made the kernel answer, and the optional busy-poll after a wake-up. Real
sockets, socketpairs standing in for TUN devices; the callbacks are driven by hand."""

import pytest

from nodeagent.tunnel.datapath import _busy_poll_s
from nodeagent.tunnel.gro import VNET_HDR_SIZE

from .test_datapath import Node, ipv4_packet, pair

PLAIN = bytes(VNET_HDR_SIZE)  # virtio_net_hdr of a complete packet (no offload)


def icmp(src: str, dst: str) -> bytes:
    pkt = ipv4_packet(src, dst, b"\x08\x00" + bytes(62))
    return pkt[:9] + b"\x01" + pkt[10:]  # protocol ICMP


@pytest.fixture
def vmesh():
    a, b = Node("a", "10.10.10.1"), Node("b", "10.10.10.2")
    a.know(b)
    b.know(a)
    a.start(vnet=True)
    b.start(vnet=True)
    pair(a, b)
    yield a, b
    for n in (a, b):
        n.dp.close()
        n.udp.close()
        n.tun.close()
        n.tun_app.close()


def test_a_reply_the_kernel_queued_during_the_tun_write_leaves_in_the_same_callback(vmesh):
    a, b = vmesh
    request, reply = icmp("10.10.10.1", "10.10.10.2"), icmp("10.10.10.2", "10.10.10.1")
    a.tun_app.send(PLAIN + request)
    a.dp.tun_ready()
    b.tun_app.send(PLAIN + reply)  # what B's kernel queues on its TUN while B writes the request
    b.dp.udp_ready()
    assert b.delivered() == [PLAIN + request]
    assert b.peers["a"].stats.tx_frames == 1  # the reply was read and sealed in the same callback
    a.dp.on_udp()
    assert a.delivered() == [PLAIN + reply]


def test_a_drain_that_wrote_nothing_to_the_tun_leaves_the_tun_to_its_own_callback(vmesh):
    a, b = vmesh
    b.tun_app.send(PLAIN + icmp("10.10.10.2", "10.10.10.1"))
    a.udp.sendto(b"\x01" + bytes(40), b.addr)  # a datagram that fails to parse: nothing written
    b.dp.udp_ready()
    assert b.dp.drops.malformed == 1
    assert b.peers["a"].stats.tx_frames == 0  # the TUN was not read
    b.dp.tun_ready()
    assert b.peers["a"].stats.tx_frames == 1


def test_without_busy_poll_a_tun_wake_up_does_not_read_the_socket(vmesh):
    a, b = vmesh
    b.tun_app.send(PLAIN + icmp("10.10.10.2", "10.10.10.1"))
    b.dp.tun_ready()  # B's frame is now queued on A's socket
    a.tun_app.send(PLAIN + icmp("10.10.10.1", "10.10.10.2"))
    a.dp.tun_ready()
    assert a.delivered() == []


def test_busy_poll_handles_what_arrives_after_the_wake_up_without_another_callback(vmesh):
    a, b = vmesh
    reply = icmp("10.10.10.2", "10.10.10.1")
    b.tun_app.send(PLAIN + reply)
    b.dp.tun_ready()  # B's frame is on A's socket (as if it arrived while A lingered)
    a.dp.busy_poll_s = 1e-6  # one polling round at least, whatever the clock says
    a.tun_app.send(PLAIN + icmp("10.10.10.1", "10.10.10.2"))
    a.dp.tun_ready()
    assert a.peers["b"].stats.tx_frames == 1
    assert a.delivered() == [PLAIN + reply]  # the UDP frame was opened and written by the linger
    assert a.peers["b"].stats.rx_frames == 1


@pytest.mark.timeout(60)
def test_busy_poll_stops_as_soon_as_a_datagram_was_handled(vmesh):
    a, b = vmesh
    b.tun_app.send(PLAIN + icmp("10.10.10.2", "10.10.10.1"))
    b.dp.tun_ready()
    a.dp.busy_poll_s = 3600.0  # an hour: only the arrival can end it within the test's timeout
    a.tun_app.send(PLAIN + icmp("10.10.10.1", "10.10.10.2"))
    a.dp.tun_ready()
    assert len(a.delivered()) == 1


def test_busy_poll_reads_a_tun_packet_that_comes_while_it_lingers(vmesh):
    a, b = vmesh
    b.dp.busy_poll_s = 1e-6
    b.tun_app.send(PLAIN + icmp("10.10.10.2", "10.10.10.1"))
    b.dp._linger()  # as after any wake-up: the TUN is readable now
    assert b.peers["a"].stats.tx_frames == 1
    a.dp.on_udp()
    assert len(a.delivered()) == 1


def test_a_udp_wake_up_does_not_linger(vmesh):
    a, b = vmesh
    b.dp.busy_poll_s = 1.0  # would poll for a second, and read the TUN, if it lingered
    b.tun_app.send(PLAIN + icmp("10.10.10.2", "10.10.10.1"))
    a.udp.sendto(b"\x01" + bytes(40), b.addr)  # nothing is written to B's TUN
    b.dp.udp_ready()
    assert b.dp.drops.malformed == 1 and b.peers["a"].stats.tx_frames == 0


def test_close_releases_the_busy_poll_epoll_and_a_later_linger_opens_a_new_one(vmesh):
    a, _b = vmesh
    a.dp.busy_poll_s = 1e-6
    a.dp.tun_ready()
    poller = a.dp._poller
    assert poller is not None and not poller.closed
    a.dp.close()
    assert poller.closed and a.dp._poller is None
    a.dp.tun_ready()
    assert a.dp._poller is not None and not a.dp._poller.closed



@pytest.mark.parametrize(("raw", "seconds"), [("0", 0.0), ("250", 0.00025), ("1000", 0.001)])
def test_the_busy_poll_setting_is_read_in_microseconds(raw, seconds):
    assert _busy_poll_s(raw) == seconds


@pytest.mark.parametrize("raw", ["-5", "0.5", "abc", ""])
def test_a_bad_busy_poll_setting_is_ignored_with_a_warning_naming_it(raw, caplog):
    assert _busy_poll_s(raw) == 0.0
    assert f"SHADOWMESH_BUSY_POLL_US={raw!r}" in caplog.text
