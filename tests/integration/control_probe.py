"""Probes of an agent's control port, run inside a namespace by test_control_port.py.

    control_probe.py stall HOST PORT            connects, sends nothing: prints "closed after N bytes"
    control_probe.py stranger HOST PORT          sends a well-formed HELLO from an unpinned key
    control_probe.py flood HOST PORT N           holds N silent connections, then tries one more:
                                                 prints "held H extra closed E"
"""

import socket
import sys
import time

from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.control import frame_clear_handshake
from nodeagent.protocol.handshake import Initiator
from nodeagent.protocol.trust import LocalIdentity, PinnedKeys


def drain(sock: socket.socket, timeout: float) -> tuple[int, bool]:
    """(bytes received, closed by the peer) within timeout."""
    sock.settimeout(timeout)
    got = 0
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return got, True
            got += len(data)
    except TimeoutError:
        return got, False
    except ConnectionResetError:
        return got, True


def main() -> int:
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "stall":
        s = socket.create_connection((host, port))
        got, closed = drain(s, 20)
        print(f"closed {closed} after {got} bytes")
    elif cmd == "stranger":
        key = mldsa.MLDSA87PrivateKey.generate()
        ini = Initiator(LocalIdentity.pinned(key), PinnedKeys({}), None, time.time())
        s = socket.create_connection((host, port))
        s.sendall(frame_clear_handshake(ini.create_hello()))
        got, closed = drain(s, 20)
        print(f"closed {closed} after {got} bytes")
    elif cmd == "flood":
        n = int(sys.argv[4])
        held = [socket.create_connection((host, port)) for _ in range(n)]
        time.sleep(0.5)
        extra = socket.create_connection((host, port))
        _got, closed = drain(extra, 2)
        still = sum(not drain(s, 0.01)[1] for s in held)
        print(f"held {still} extra closed {closed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
