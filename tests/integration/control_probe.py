"""Probes of an agent's control port, run inside a namespace by the integration tests.

    control_probe.py stall HOST PORT            connects, sends nothing: prints "closed after N bytes"
    control_probe.py stranger HOST PORT          sends a well-formed HELLO from an unpinned key
    control_probe.py flood HOST PORT N           holds N silent connections, then tries one more:
                                                 prints "held H extra closed E"
    control_probe.py hold HOST PORT N SECONDS SRC[,SRC...]
                                                 keeps N idle connections open from each source,
                                                 reopening at once any the agent closes, for SECONDS;
                                                 prints "ready", then "max_per_source M opened O"
    control_probe.py spoof HOST PORT SECONDS CLAIMED.pub RESPONDER.pub SRC[,SRC...]
                                                 every source sends HELLOs that claim CLAIMED's peer id
                                                 (presenting its public key) but are made with a fresh
                                                 key of its own and stamped a minute ahead, one
                                                 connection after another, for
                                                 SECONDS; prints "ready", then "sent N answered B"
                                                 (B: bytes that came back, over all connections)
"""

import socket
import sys
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.control import frame_clear_handshake
from nodeagent.protocol.handshake import Initiator
from nodeagent.protocol.identity import peer_id
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


def is_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def connect_from(source: str, host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect((host, port))
    return s


def hold(host: str, port: int, n: int, seconds: float, sources: list[str]) -> None:
    held = {src: [connect_from(src, host, port) for _ in range(n)] for src in sources}
    opened = n * len(sources)
    print("ready", flush=True)
    most = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for src, socks in held.items():
            alive = [s for s in socks if is_open(s)]
            most = max(most, len(alive))
            for s in socks:
                if s not in alive:
                    s.close()
            while len(alive) < n:  # renewed at once
                alive.append(connect_from(src, host, port))
                opened += 1
            held[src] = alive
        time.sleep(0.005)
    print(f"max_per_source {most} opened {opened}")


def spoofed_hello(claimed_pub: bytes, responder_pub: bytes) -> bytes:
    """Stamped a minute ahead: newer than any HELLO the claimed peer sends during a test, so no
    replay rule refuses it before its signature is checked."""
    liar = LocalIdentity.pinned(mldsa.MLDSA87PrivateKey.generate())
    liar.credential = liar.public_key = claimed_pub
    liar.peer_id = peer_id(claimed_pub)
    ini = Initiator(liar, PinnedKeys([responder_pub]), peer_id(responder_pub), time.time() + 60)
    return ini.create_hello()


def spoof(host: str, port: int, seconds: float, claimed_pub: bytes, responder_pub: bytes,
          sources: list[str]) -> None:
    hellos = [frame_clear_handshake(spoofed_hello(claimed_pub, responder_pub)) for _ in range(8)]
    print("ready", flush=True)
    totals = {"sent": 0, "answered": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def one_source(src: str) -> None:
        i = 0
        while time.monotonic() < end:
            try:
                s = connect_from(src, host, port)
            except OSError:
                time.sleep(0.01)
                continue
            with s:
                try:
                    s.sendall(hellos[i % len(hellos)])
                except OSError:
                    pass
                got, _closed = drain(s, 0.2)
            i += 1
            with lock:
                totals["sent"] += 1
                totals["answered"] += got

    threads = [threading.Thread(target=one_source, args=(src,)) for src in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"sent {totals['sent']} answered {totals['answered']}")


def main() -> int:
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "stall":
        s = socket.create_connection((host, port))
        got, closed = drain(s, 20)
        print(f"closed {closed} after {got} bytes")
    elif cmd == "stranger":
        key = mldsa.MLDSA87PrivateKey.generate()
        responder = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else None
        ini = Initiator(LocalIdentity.pinned(key), PinnedKeys({}), responder.hex() if responder else None,
                        time.time())
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
    elif cmd == "hold":
        hold(host, port, int(sys.argv[4]), float(sys.argv[5]), sys.argv[6].split(","))
    elif cmd == "spoof":
        spoof(host, port, float(sys.argv[4]), Path(sys.argv[5]).read_bytes(), Path(sys.argv[6]).read_bytes(),
              sys.argv[7].split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
