"""tunnel/udp.py's scatter-gather GSO send (`send_gso`, chunk mode's way out) on real loopback
sockets: every datagram arrives whole and in order, whatever the count and size, with GSO and
without it."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from nodeagent.tunnel.udp import GSO_MAX_SEGMENTS, UdpSocket


def _receive(sock: socket.socket, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        out.append(sock.recv(65536))
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(65536)  # nothing more
    return out


@pytest.mark.parametrize("gso", [True, False])
@pytest.mark.parametrize(("count", "size", "last"), [
    (1, 700, 700),  # one datagram: a plain send
    (2, 1454, 300),
    (46, 1454, 1100),  # a 64 KB chunk: more bytes than one GSO send takes, so two sends
    (GSO_MAX_SEGMENTS, 200, 200),  # the segment limit, not the byte limit
    (GSO_MAX_SEGMENTS, 1016, 1016),  # both limits at once
])
def test_every_datagram_of_a_scatter_gather_list_arrives_whole_and_in_order(gso, count, size, last):
    sender = UdpSocket.open("127.0.0.1", 0)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no GRO: one datagram per recv
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2.0)
    try:
        sender.gso = gso
        datagrams = [os.urandom(size if i < count - 1 else last) for i in range(count)]
        iov = [memoryview(part) for d in datagrams for part in (d[:22], d[22:])]
        assert sender.send_gso(iov, size, count, receiver.getsockname()) == 0
        assert _receive(receiver, count) == datagrams
    finally:
        sender.close()
        receiver.close()


class RefusingSocket:
    """A socket whose GSO sends fail with `error` (the kernel's answers: EAGAIN when the buffer is
    full, EINVAL/EIO when the path cannot do GSO); plain sends are recorded."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        self.sent: list[bytes] = []

    def sendmsg(self, buffers, control, flags, address):
        raise self.error

    def sendto(self, data, address):
        self.sent.append(bytes(data))
        return len(data)


def _iov(count: int, size: int) -> tuple[list[bytes], list[memoryview]]:
    datagrams = [os.urandom(size) for _ in range(count)]
    return datagrams, [memoryview(part) for d in datagrams for part in (d[:22], d[22:])]


def test_a_full_socket_buffer_counts_every_datagram_that_could_not_leave():
    udp = UdpSocket(RefusingSocket(BlockingIOError(errno.EAGAIN, "full")), socket.AF_INET, 9443)
    _datagrams, iov = _iov(46, 1454)
    assert udp.send_gso(iov, 1454, 46, ("127.0.0.1", 9)) == 46  # two GSO sends (44 + 2), both refused
    assert udp.gso is True and udp.sock.sent == []


def test_a_path_without_gso_turns_it_off_and_sends_datagram_by_datagram():
    udp = UdpSocket(RefusingSocket(OSError(errno.EIO, "no GSO here")), socket.AF_INET, 9443)
    datagrams, iov = _iov(10, 1000)
    assert udp.send_gso(iov, 1000, 10, ("127.0.0.1", 9)) == 0
    assert udp.gso is False and udp.sock.sent == datagrams
    assert udp.send_gso(iov, 1000, 10, ("127.0.0.1", 9)) == 0  # from now on without trying GSO
    assert udp.sock.sent == datagrams * 2
