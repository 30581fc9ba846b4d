"""The UDP data socket (port 9443): large buffers, GSO batch sends, GRO batch receives.

Contract:
- `UdpSocket.open(host, port)` binds a non-blocking socket. EADDRINUSE becomes `PortInUse`
  naming the port. It is read from raw `loop.add_reader` callbacks by the data path, never
  through `create_datagram_endpoint` (one selector round per datagram: 4x slower,
  docs/architecture.md#design-notes).
- Buffers: SO_RCVBUFFORCE/SO_SNDBUFFORCE of `BUFFER_BYTES` (root may exceed rmem_max); without
  CAP_NET_ADMIN we fall back to SO_RCVBUF/SO_SNDBUF, which the kernel caps at rmem_max.
  `rcvbuf`/`sndbuf` report what the kernel granted. (An earlier prototype lost 90-95 % of its packets
  here: docs/architecture.md#design-notes.)
- Receive: with UDP_GRO on, one `recvmsg_into` may return several datagrams of one flow glued
  together; the control message gives the segment size. `recv_into(buf)` returns
  (nbytes, segment_size, address); the caller cuts `buf[:nbytes]` every `segment_size` bytes.
- Send: `send_batch(datagrams, address)` sends a list with as few syscalls as possible: runs of
  equal-sized datagrams (the last of a run may be shorter) go out in one `sendmsg` with a
  UDP_SEGMENT control message (at most 64 segments / ~64 KB). Without GSO (old kernel, or the
  kernel refused it once) every datagram is its own `sendto`. Returns the number it could not
  send (socket buffer full: the caller counts them as `queue_full`). `send_gso(iov, size, count,
  address)` does the same for datagrams given as one scatter-gather list (header and body
  buffers, chunk mode: tunnel/chunks.py), so they are never joined in Python.
- A path narrower than the datagrams: the kernel refuses a GSO send whose segments exceed the
  route's MTU (EMSGSIZE for the device's MTU, EINVAL for a path MTU it learned from an ICMP
  "fragmentation needed"), while a plain `sendto` of the same datagram goes out fragmented by the
  kernel. Such a run is sent datagram by datagram, and the address is remembered with the
  segment size it refused (`narrow`, at most NARROW_MAX addresses), so later runs of that size or
  larger to it skip GSO; GSO stays on for every other address and for smaller segments. Nothing
  of it is counted as lost. Only EIO, ENOPROTOOPT and EOPNOTSUPP (no GSO on this machine) turn GSO
  off for good. With the address, `path_mtus` keeps the path MTU the kernel knows for it (IP_MTU
  of a connected socket of our own: the route's MTU, or what an ICMP "fragmentation needed"
  taught the kernel), which the data path uses to answer packets too big for that path
  (tunnel/toobig.py). `expire_narrow(now)` forgets both after NARROW_TTL_S, the kernel's own
  lifetime of a learned path MTU: a path that widened is tried with GSO again.
- A path that drops big datagrams without an ICMP (a black hole) teaches the kernel nothing; our
  own probes find its size (paths/plpmtu.py, pathmtu.py), given here with `set_probed_mtu`.
  `path_mtus` holds, per address, the smaller of what the kernel knows and what the probes found.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import time

from ..protocol.endpoints import endpoint_text
from .mark import mark

__all__ = ["BUFFER_BYTES", "PortInUse", "UdpSocket"]

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

BUFFER_BYTES = 8 << 20  # tuning knob: 8 MiB each way
GSO_MAX_SEGMENTS = 64  # kernel UDP_MAX_SEGMENTS
GSO_MAX_BYTES = 65000  # one UDP datagram's payload, minus headroom for the headers
RECV_BUFFER = 65536 + 4096
NARROW_MAX = 4096  # addresses remembered as narrower than our datagrams (then forgotten all at once)
NARROW_TTL_S = 600.0  # net.ipv4.route.mtu_expires: how long the kernel keeps a learned path MTU
IP_MTU = 14  # linux/in.h: the path MTU of a connected socket's route
IPV6_MTU = 24  # linux/in6.h
NO_GSO = (errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)  # this machine cannot do GSO at all
TOO_BIG = (errno.EMSGSIZE, errno.EINVAL)  # the segments exceed the route's MTU or the learned path MTU

log = logging.getLogger(__name__)

_SEG = struct.Struct("=H")
_GRO = struct.Struct("=i")


class PortInUse(OSError):
    """The UDP port is taken by another process."""


class UdpSocket:
    __slots__ = ("_kernel_mtus", "_narrow_at", "family", "gro", "gso", "narrow", "path_mtus", "port",
                 "probed_mtus", "rcvbuf", "sndbuf", "sock")

    def __init__(self, sock: socket.socket, family: int, port: int) -> None:
        self.sock = sock
        self.family = family
        self.port = port
        self.gso = True
        self.gro = False
        self.narrow: dict[tuple, int] = {}  # address -> the smallest segment size GSO refused for it
        # address -> the path MTU to enforce: the smaller of the kernel's (`_kernel_mtus`, for a
        # narrow address) and our probes' (`probed_mtus`); the data path holds this very dict
        self.path_mtus: dict[tuple, int] = {}
        self._kernel_mtus: dict[tuple, int] = {}
        self.probed_mtus: dict[tuple, int] = {}
        self._narrow_at: dict[tuple, float] = {}  # address -> when it went into `narrow`
        self.rcvbuf = self.sndbuf = 0

    @classmethod
    def open(cls, host: str, port: int, buffer_bytes: int = BUFFER_BYTES) -> UdpSocket:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            mark(sock)  # outside any exit node's tunnel (tunnel/mark.py)
            _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, buffer_bytes)
            _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, buffer_bytes)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(exc.errno, f"UDP port {port} on {host} is already in use") from None
                raise
            sock.setblocking(False)
            self = cls(sock, family, sock.getsockname()[1])
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                self.gro = False
            self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            return self
        except BaseException:
            sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    # --- receive ---------------------------------------------------------------------------
    def recv_into(self, buf: bytearray) -> tuple[int, int, tuple]:
        """One recvmsg: (nbytes, segment size, source address). Raises BlockingIOError when empty."""
        nbytes, ancdata, _flags, address = self.sock.recvmsg_into([buf], 64)
        seg = nbytes
        for level, kind, data in ancdata:
            if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
                seg = _GRO.unpack_from(data)[0] or nbytes
        return nbytes, seg, address

    # --- send ------------------------------------------------------------------------------
    def sendto(self, datagram: bytes, address: tuple) -> bool:
        try:
            self.sock.sendto(datagram, address)
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False  # unreachable network etc.: the datagram is lost like on the wire

    def send_batch(self, datagrams: list[bytes], address: tuple) -> int:
        """Send all datagrams to one address; return how many could not be sent."""
        n = len(datagrams)
        if n == 1 or not self.gso:
            return sum(not self.sendto(d, address) for d in datagrams)
        failed = 0
        sendmsg = self.sock.sendmsg
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            total = size
            while (j < n and j - i < GSO_MAX_SEGMENTS and len(datagrams[j]) == size
                   and total + size <= GSO_MAX_BYTES):
                total += size
                j += 1
            # a shorter datagram may close the run
            if (j < n and j - i < GSO_MAX_SEGMENTS and len(datagrams[j]) < size
                    and total + len(datagrams[j]) <= GSO_MAX_BYTES):
                j += 1
            if j - i == 1 or not self._gso_for(address, size):
                failed += sum(not self.sendto(d, address) for d in datagrams[i:j])
            else:
                try:
                    sendmsg(datagrams[i:j], [(SOL_UDP, UDP_SEGMENT, _SEG.pack(size))], 0, address)
                except (BlockingIOError, InterruptedError):
                    failed += j - i
                except OSError as exc:
                    if not self._refused(exc, address, size):
                        failed += j - i
                    else:
                        failed += sum(not self.sendto(d, address) for d in datagrams[i:j])
            i = j
        return failed

    def _gso_for(self, address: tuple, size: int) -> bool:
        """Whether a GSO send of `size`-byte segments to `address` is worth trying: GSO is on and
        that path has not refused segments this large."""
        refused = self.narrow.get(address)
        return self.gso and (refused is None or size < refused)

    def _refused(self, exc: OSError, address: tuple, size: int) -> bool:
        """A GSO send failed with `exc`: True when its datagrams should go out one by one (this
        machine has no GSO: off for good; or the path is narrower than `size`: remembered for
        `address`), False when they are lost (counted by the caller)."""
        if exc.errno in NO_GSO:
            self.gso = False
            return True
        if exc.errno in TOO_BIG:
            if address not in self.narrow:
                if len(self.narrow) >= NARROW_MAX:
                    self.narrow.clear()
                    self._kernel_mtus.clear()
                    self._narrow_at.clear()
                    self.path_mtus.clear()
                    self.path_mtus.update(self.probed_mtus)
                self._narrow_at[address] = time.monotonic()
                log.info("datagrams of %d bytes do not fit the path to %s: they go out one by one, "
                         "fragmented by the kernel (a smaller `mtu` avoids it)", size, endpoint_text(address))
            self.narrow[address] = min(size, self.narrow.get(address, size))
            mtu = self._path_mtu(address)
            if mtu is not None:
                self._kernel_mtus[address] = mtu
                self._settle(address)
            return True
        return False

    def _path_mtu(self, address: tuple) -> int | None:
        """The path MTU the kernel knows for `address` (None if it cannot be read): a socket of
        ours, marked as the data socket is, connected there (nothing is sent) and asked IP_MTU."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            mark(sock)
            sock.connect(address)
            if self.family == socket.AF_INET6:
                return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
            return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
        except OSError:
            return None
        finally:
            sock.close()

    def expire_narrow(self, now: float) -> None:
        """Forget the narrow paths remembered NARROW_TTL_S ago or more (`now`: time.monotonic())."""
        for address, since in list(self._narrow_at.items()):
            if now - since >= NARROW_TTL_S:
                del self._narrow_at[address]
                self.narrow.pop(address, None)
                self._kernel_mtus.pop(address, None)
                self._settle(address)

    def set_probed_mtu(self, address: tuple, mtu: int | None) -> None:
        """The path MTU our probes found for `address`; None: they found nothing narrow (any more)."""
        if mtu is None:
            self.probed_mtus.pop(address, None)
        else:
            self.probed_mtus[address] = mtu
        self._settle(address)

    def _settle(self, address: tuple) -> None:
        known = [m for m in (self._kernel_mtus.get(address), self.probed_mtus.get(address)) if m is not None]
        if known:
            self.path_mtus[address] = min(known)
        else:
            self.path_mtus.pop(address, None)

    def send_gso(self, iov: list, size: int, count: int, address: tuple) -> int:
        """Send `count` datagrams given as one scatter-gather list (`iov`: header, body, header,
        body, ...; two buffers per datagram) of `size` bytes each, the last maybe shorter, in as
        few GSO sends as the kernel's limits allow; the number that could not be sent."""
        per_call = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size)) if self._gso_for(address, size) else 1
        control = [(SOL_UDP, UDP_SEGMENT, _SEG.pack(size))]
        sendmsg = self.sock.sendmsg
        failed = 0
        for i in range(0, count, per_call):
            j = min(count, i + per_call)
            parts = iov[2 * i:2 * j]
            if j - i == 1:
                failed += not self.sendto(b"".join(parts), address)
                continue
            try:
                sendmsg(parts, control, 0, address)
            except (BlockingIOError, InterruptedError):
                failed += j - i
            except OSError as exc:
                if not self._refused(exc, address, size):
                    failed += j - i
                    continue
                # as in send_batch: this run and the rest datagram by datagram
                return failed + sum(not self.sendto(b"".join(iov[k:k + 2]), address)
                                    for k in range(2 * i, 2 * count, 2))
        return failed


def _set_buffer(sock: socket.socket, force_opt: int, plain_opt: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain_opt, size)  # capped at net.core.[rw]mem_max
