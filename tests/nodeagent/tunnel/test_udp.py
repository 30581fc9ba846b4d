"""tunnel/udp.py's scatter-gather GSO send (`send_gso`, chunk mode's way out) on real loopback
sockets: every datagram arrives whole and in order, whatever the count and size, with GSO and
without it."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeagent.tunnel import udp as udp_module
from nodeagent.tunnel.udp import GSO_MAX_SEGMENTS, UdpSocket

ROOT = Path(__file__).resolve().parents[3]


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
        self.gso_sends: list[tuple] = []  # (address, segment size) of every GSO send tried

    def sendmsg(self, buffers, control, flags, address):
        self.gso_sends.append((address, int.from_bytes(control[0][2], "little")))
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


def test_a_path_narrower_than_its_datagrams_gets_them_one_by_one_and_only_that_path():
    """EINVAL: the kernel learned a path MTU below the segment size (EMSGSIZE, the device's own
    MTU, is run for real below). Before, EINVAL turned GSO off for every address, and EMSGSIZE
    counted the whole run as lost."""
    udp = UdpSocket(RefusingSocket(OSError(errno.EINVAL, "segment over the path MTU")), socket.AF_INET, 9443)
    narrow, wide = ("198.18.0.9", 9443), ("198.18.0.10", 9443)
    datagrams, iov = _iov(10, 1400)
    assert udp.send_gso(iov, 1400, 10, narrow) == 0
    assert udp.sock.sent == datagrams
    assert udp.gso is True and udp.narrow == {narrow: 1400}
    assert udp.send_batch(datagrams, narrow) == 0  # the same size to the same path: no GSO tried
    assert udp.sock.gso_sends == [(narrow, 1400)]
    small = [os.urandom(1000) for _ in range(4)]
    udp.send_batch(small, narrow)  # smaller segments to it, and any size elsewhere, still try GSO
    udp.send_batch(datagrams, wide)
    assert udp.sock.gso_sends == [(narrow, 1400), (narrow, 1000), (wide, 1400)]
    assert udp.narrow == {narrow: 1000, wide: 1400}
    assert udp.sock.sent == datagrams * 2 + small + datagrams  # nothing lost on the way


def test_the_narrow_paths_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(udp_module, "NARROW_MAX", 3)
    udp = UdpSocket(RefusingSocket(OSError(errno.EMSGSIZE, "message too long")), socket.AF_INET, 9443)
    datagrams = [os.urandom(1400) for _ in range(2)]
    for host in range(4):
        assert udp.send_batch(datagrams, (f"198.18.0.{host}", 9443)) == 0
    assert list(udp.narrow) == [("198.18.0.3", 9443)]  # the fourth emptied the full table first


NARROW_LOOPBACK = r"""
import json, os, socket, sys
from nodeagent.tunnel.udp import UdpSocket
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
receiver.settimeout(2.0)
to = receiver.getsockname()
sender = UdpSocket.open("127.0.0.1", 0)
out = {}
for name, size in (("big", 1400), ("fits", 1000), ("big_again", 1400)):
    datagrams = [os.urandom(size) for _ in range(10)]
    failed = sender.send_batch(datagrams, to)
    got = [receiver.recv(65536) for _ in range(10 - failed)]
    out[name] = {"failed": failed, "intact": got == datagrams, "narrow": sender.narrow.get(to)}
datagrams = [os.urandom(1400) for _ in range(10)]
iov = [memoryview(p) for d in datagrams for p in (d[:22], d[22:])]
failed = sender.send_gso(iov, 1400, 10, to)
got = [receiver.recv(65536) for _ in range(10 - failed)]
out["gso_list"] = {"failed": failed, "intact": got == datagrams}
out["gso"] = sender.gso
out["path_mtu"] = sender.path_mtus.get(to)
print(json.dumps(out))
"""


@pytest.mark.privileged
def test_datagrams_over_the_devices_mtu_leave_fragmented_by_the_kernel_not_lost():
    """For real: loopback at 1,280 bytes in a network namespace of its own, 1,400-byte datagrams.
    The kernel refuses the GSO send (EMSGSIZE) and fragments each plain send; on the code before,
    all ten were counted as lost (the data path's `queue_full`) and none arrived."""
    script = f"ip link set lo mtu 1280 up && exec {sys.executable} -c '{NARROW_LOOPBACK}'"
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["big"] == {"failed": 0, "intact": True, "narrow": 1400}
    assert out["fits"] == {"failed": 0, "intact": True, "narrow": 1400}  # GSO, the path takes these
    assert out["big_again"] == {"failed": 0, "intact": True, "narrow": 1400}
    assert out["gso_list"] == {"failed": 0, "intact": True}
    assert out["gso"] is True
    assert out["path_mtu"] == 1280  # what the kernel says the route takes, for the data path


def test_narrow_paths_are_forgotten_when_the_kernel_forgets_its_path_mtu():
    udp = UdpSocket(RefusingSocket(OSError(errno.EMSGSIZE, "message too long")), socket.AF_INET, 9443)
    udp.send_batch([os.urandom(1400) for _ in range(2)], ("198.18.0.9", 9443))
    assert ("198.18.0.9", 9443) in udp.narrow
    udp.expire_narrow(time.monotonic() + udp_module.NARROW_TTL_S / 2)
    assert ("198.18.0.9", 9443) in udp.narrow
    udp.path_mtus[("198.18.0.9", 9443)] = 1280
    udp.expire_narrow(time.monotonic() + udp_module.NARROW_TTL_S)
    assert udp.narrow == {} and udp.path_mtus == {}  # GSO is tried again, nothing is answered for it


def test_a_probed_path_mtu_is_enforced_with_the_kernels_the_smaller_winning_and_outlives_its_expiry():
    """paths/plpmtu.py's findings (a black hole the kernel knows nothing of) share `path_mtus`
    with what the kernel learned: the smaller is enforced; the kernel's expiry forgets only its own."""
    udp = UdpSocket(RefusingSocket(OSError(errno.EMSGSIZE, "message too long")), socket.AF_INET, 9443)
    there, other = ("198.18.0.9", 9443), ("198.18.0.10", 9443)
    mtus = udp.path_mtus  # the data path holds this very dict
    udp.set_probed_mtu(there, 1300)
    assert mtus == {there: 1300}
    udp.send_batch([os.urandom(1400) for _ in range(2)], there)  # the kernel refuses: narrow
    udp._kernel_mtus[there] = 1200  # what IP_MTU would say for a real narrower route
    udp._settle(there)
    assert mtus == {there: 1200}
    udp.expire_narrow(time.monotonic() + udp_module.NARROW_TTL_S)
    assert mtus == {there: 1300} and udp.narrow == {}  # the probes' finding stays
    udp.set_probed_mtu(there, None)
    assert mtus == {} and udp.path_mtus is mtus
    udp.set_probed_mtu(other, None)  # nothing known: nothing to forget
    assert mtus == {}


def test_forgetting_every_narrow_path_at_once_keeps_the_probed_ones(monkeypatch):
    monkeypatch.setattr(udp_module, "NARROW_MAX", 2)
    udp = UdpSocket(RefusingSocket(OSError(errno.EMSGSIZE, "message too long")), socket.AF_INET, 9443)
    probed = ("198.18.0.50", 9443)
    udp.set_probed_mtu(probed, 1300)
    for i in range(3):  # the third narrow address clears the table
        udp.send_batch([os.urandom(1400) for _ in range(2)], (f"198.18.0.{i + 1}", 9443))
    assert len(udp.narrow) == 1
    assert udp.path_mtus.get(probed) == 1300
