"""Time a full ShadowMesh post-quantum handshake (HELLO → CHALLENGE → CONFIRM, hybrid X25519 +
ML-KEM-1024, both sides signing with ML-DSA-87: handshake version 2, the initiator signs its HELLO
and its CONFIRM), median and p99.

    .venv/bin/python bench/handshake.py [-n 200] [--results DIR]

Legs:
- door: what one HELLO costs the responder: refusing one that claims a known peer but was signed
  by another key, against checking and answering a genuine one (and the CHALLENGE alone, which
  is what any HELLO naming a known peer cost before handshake version 2).
- in_process: both parties of `nodeagent.protocol.handshake` in one Python process, pinned keys
  (serverless mode) and with mesh certificates (enrolled mode: two more ML-DSA verifies).
- loopback_tcp: the agent's own control channel, initiator and responder in two processes over
  127.0.0.1, from connect() until both sides hold the session keys, with the cryptography on the
  agent's worker threads (control/crypto.py), if `nodeagent.control` offers it;
  otherwise the same three protocol messages over a loopback TCP connection with a 4-byte length
  prefix (labelled "bench framing"), which adds the socket and process hop but not the agent's
  control-channel code.
- primitive floor: the cryptographic operations of one handshake called directly, as a lower bound.
A leg whose code does not exist yet is reported as skipped with the import error.
Writes DIR/handshake-<stamp>.json (with a markdown table) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CONTEXT = b"shadowmesh/handshake/v2"
_LEN = struct.Struct("!I")


def stats(times_ms: list[float], label: str) -> dict:
    s = sorted(times_ms)
    return {
        "label": label,
        "n": len(s),
        "median_ms": statistics.median(s),
        "p99_ms": s[max(0, math.ceil(0.99 * len(s)) - 1)],
        "min_ms": s[0],
        "max_ms": s[-1],
    }


# ------------------------------------------------------------------ in-process, the project's protocol
def _parties(hs, with_certs: bool):
    """(make_initiator, make_responder) for two fresh identities; certificates when asked."""
    from nodeagent.protocol.identity import peer_id
    from nodeagent.protocol.trust import LocalIdentity, MeshCA, PinnedKeys

    sk_i, sk_r = mldsa.MLDSA87PrivateKey.generate(), mldsa.MLDSA87PrivateKey.generate()
    pk_i, pk_r = (k.public_key().public_bytes_raw() for k in (sk_i, sk_r))
    if with_certs:
        from nodeagent.protocol.cert import issue_certificate

        ca = mldsa.MLDSA87PrivateKey.generate()
        now = int(time.time())

        def cert(pk, name, ip):
            return issue_certificate(
                ca,
                public_key=pk,
                name=name,
                network="bench",
                overlay_ip=ip,
                prefix_len=24,
                flags=0,
                not_before=now - 60,
                not_after=now + 86400,
            )

        local_i = LocalIdentity(sk_i, cert(pk_i, "i", "10.10.10.1"))
        local_r = LocalIdentity(sk_r, cert(pk_r, "r", "10.10.10.2"))
        ca_pub = ca.public_key().public_bytes_raw()
        trust_i, trust_r = MeshCA(ca_pub), MeshCA(ca_pub)
    else:
        local_i, local_r = LocalIdentity.pinned(sk_i), LocalIdentity.pinned(sk_r)
        trust_i, trust_r = PinnedKeys([pk_r]), PinnedKeys([pk_i])
    pid_r = peer_id(pk_r)
    return (
        lambda now: hs.Initiator(local_i, trust_i, pid_r, now),
        lambda now: hs.Responder(local_r, trust_r, now),
    )


def one_handshake(make_i, make_r) -> float:
    """ms for one complete handshake, both parties in this process."""
    t = time.perf_counter()
    now = time.time()
    ini, resp = make_i(now), make_r(now)
    resp.consume_hello(ini.create_hello(), now)
    ini.consume_challenge(resp.create_challenge(), now)
    result_r = resp.consume_confirm(ini.create_confirm(), now)
    dt = (time.perf_counter() - t) * 1e3
    assert result_r.keypair.key_bytes() == ini.result.keypair.key_bytes()[::-1]
    return dt


def in_process(n: int) -> dict:
    from nodeagent.protocol import handshake as hs

    out = {}
    for key, certs, label in (
        ("in_process", False, "in process, pinned keys (serverless)"),
        ("in_process_certs", True, "in process, mesh certificates (enrolled)"),
    ):
        make_i, make_r = _parties(hs, certs)
        one_handshake(make_i, make_r)  # warm-up
        out[key] = stats([one_handshake(make_i, make_r) for _ in range(n)], label)
    return out


# ------------------------------------------------------------------ what a HELLO costs the responder
def door_costs(n: int) -> dict:
    """The responder's CPU per HELLO: refusing one that claims a known peer but is signed by another
    key (what a stranger can make it spend), against answering a genuine one. In enrolled mode the
    stranger presents the peer's real certificate, already verified once (the cheapest case for the
    responder is also the one a stranger can always produce)."""
    from nodeagent.protocol import handshake as hs
    from nodeagent.protocol.handshake_errors import HandshakeError
    from nodeagent.protocol.identity import peer_id

    out = {}
    for key, certs, mode in (("pinned", False, "pinned keys"), ("certs", True, "certificates")):
        make_i, make_r = _parties(hs, certs)
        probe = make_i(time.time())
        local_i = probe.local
        liar = type(local_i).pinned(mldsa.MLDSA87PrivateKey.generate())
        liar.credential, liar.public_key = local_i.credential, local_i.public_key
        liar.peer_id = local_i.peer_id

        def spoofed(liar=liar, probe=probe):
            return hs.Initiator(liar, probe.trust, probe.expected_peer_id, time.time()).create_hello()

        refuse, answer, answer_v1 = [], [], []
        make_r(time.time()).consume_hello(make_i(time.time()).create_hello(), time.time())  # warm the cache
        for _ in range(n):
            hello = spoofed()
            res = make_r(time.time())
            t = time.perf_counter()
            try:
                res.consume_hello(hello, time.time())
            except HandshakeError:
                pass
            refuse.append((time.perf_counter() - t) * 1e3)
            hello = make_i(time.time()).create_hello()
            res = make_r(time.time())
            t = time.perf_counter()
            res.consume_hello(hello, time.time())
            t_hello = time.perf_counter()
            res.create_challenge()
            t_end = time.perf_counter()
            answer.append((t_end - t) * 1e3)
            answer_v1.append((t_end - t_hello) * 1e3)
        assert peer_id(local_i.public_key) == local_i.peer_id
        out[f"door_refuse_{key}"] = stats(refuse, f"responder: refuse a HELLO that claims a peer but is "
                                                  f"not its ({mode})")
        out[f"door_answer_{key}"] = stats(answer, f"responder: check and answer a genuine HELLO ({mode})")
        out[f"door_challenge_{key}"] = stats(
            answer_v1, f"responder: the CHALLENGE alone, ML-KEM + ML-DSA sign (what any HELLO of a known id "
                       f"cost before version 2; {mode})")
    return out


# ------------------------------------------------------------------ loopback TCP, bench framing
def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv(sock: socket.socket) -> bytes:
    def exact(k: int) -> bytes:
        buf = bytearray()
        while len(buf) < k:
            chunk = sock.recv(k - len(buf))
            if not chunk:
                raise ConnectionError("peer closed")
            buf += chunk
        return bytes(buf)

    return exact(_LEN.unpack(exact(4))[0])


def _responder_loop(listener: socket.socket, sk_raw: bytes, pk_i: bytes, n: int) -> None:
    from nodeagent.protocol import handshake as hs
    from nodeagent.protocol.trust import LocalIdentity, PinnedKeys

    local = LocalIdentity.pinned(mldsa.MLDSA87PrivateKey.from_seed_bytes(sk_raw))
    trust = PinnedKeys([pk_i])
    for _ in range(n):
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            now = time.time()
            resp = hs.Responder(local, trust, now)
            resp.consume_hello(_recv(conn), now)
            _send(conn, resp.create_challenge())
            resp.consume_confirm(_recv(conn), time.time())
            _send(conn, b"\x01")  # both sides now hold the keys


def loopback_bench_framing(n: int) -> dict:
    from nodeagent.protocol import handshake as hs
    from nodeagent.protocol.identity import peer_id
    from nodeagent.protocol.trust import LocalIdentity, PinnedKeys

    seed_i, seed_r = os.urandom(32), os.urandom(32)
    sk_i = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed_i)
    sk_r = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed_r)
    pk_i, pk_r = (k.public_key().public_bytes_raw() for k in (sk_i, sk_r))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    total = n + 1
    child = mp.get_context("fork").Process(
        target=_responder_loop, args=(listener, seed_r, pk_i, total), daemon=True
    )
    child.start()
    local, trust, pid_r = LocalIdentity.pinned(sk_i), PinnedKeys([pk_r]), peer_id(pk_r)
    times = []
    try:
        for i in range(total):
            t = time.perf_counter()
            with socket.create_connection(listener.getsockname(), timeout=10) as conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ini = hs.Initiator(local, trust, pid_r, time.time())
                _send(conn, ini.create_hello())
                ini.consume_challenge(_recv(conn), time.time())
                _send(conn, ini.create_confirm())
                if _recv(conn) != b"\x01":
                    raise ConnectionError("responder did not confirm")
            if i:  # the first one is a warm-up
                times.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.025)  # the responder refuses HELLOs from one peer closer than 20 ms apart
    finally:
        listener.close()
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
    return stats(times, "loopback TCP, 2 processes, protocol messages with bench framing")


def _control_server(conn, seed_r: bytes, pk_i: bytes) -> None:
    """Child process: the agent's ControlServer on 127.0.0.1; answers each handshake with a sealed
    KEEPALIVE once it holds the keys (so the dialer knows both sides are done)."""
    import asyncio

    from nodeagent.control.admission import Buckets
    from nodeagent.control.crypto import CryptoWorkers
    from nodeagent.control.server import ControlServer
    from nodeagent.protocol import handshake as hs
    from nodeagent.protocol.control import Keepalive
    from nodeagent.protocol.hello_guard import HelloGuard
    from nodeagent.protocol.trust import LocalIdentity, PinnedKeys

    local = LocalIdentity.pinned(mldsa.MLDSA87PrivateKey.from_seed_bytes(seed_r))
    trust = PinnedKeys([pk_i])

    def established(reader, writer, channel, result, pending) -> None:
        writer.write(channel.seal(Keepalive(int(time.time() * 1000))))
        writer.close()

    async def serve() -> None:
        guard = HelloGuard()
        server = ControlServer(
            lambda: hs.Responder(local, trust, time.time(), guard=guard), lambda _pid: True, established,
            CryptoWorkers(),
        )
        server.sources = Buckets(rate=1e6, burst=1e6)  # one dialer, 40 handshakes/s: time them, not limits
        await server.start("127.0.0.1", 0)
        conn.send(server.server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()  # until the parent terminates us

    asyncio.run(serve())


def loopback_control_channel(n: int) -> dict:
    """The agent's own control channel: client.dial() against control.server.ControlServer in another
    process, from connect() until the dialer opens the responder's first sealed message."""
    import asyncio

    from nodeagent.control.client import dial
    from nodeagent.control.crypto import CryptoWorkers
    from nodeagent.control.server import ControlServer  # noqa: F401 - fail here, not in the child
    from nodeagent.protocol import handshake as hs
    from nodeagent.protocol.control import ControlChannel, Keepalive  # noqa: F401
    from nodeagent.protocol.identity import peer_id
    from nodeagent.protocol.trust import LocalIdentity, PinnedKeys

    seed_i, seed_r = os.urandom(32), os.urandom(32)
    sk_i = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed_i)
    pk_i = sk_i.public_key().public_bytes_raw()
    pk_r = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed_r).public_key().public_bytes_raw()
    ctx = mp.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_control_server, args=(child_end, seed_r, pk_i), daemon=True)
    child.start()
    local, trust, pid_r = LocalIdentity.pinned(sk_i), PinnedKeys([pk_r]), peer_id(pk_r)

    workers = CryptoWorkers()  # as in the agent: the dialer's cryptography on a worker thread

    async def run() -> list[float]:
        if not parent_end.poll(30):
            raise RuntimeError("the control server did not start")
        port = parent_end.recv()
        times = []
        for i in range(n + 1):
            t = time.perf_counter()
            got = await dial("127.0.0.1", port, lambda: hs.Initiator(local, trust, pid_r, time.time()),
                             workers.run_peers)
            if got is None:
                raise RuntimeError("dial() failed (see the agent's log messages)")
            reader, writer, channel, _result = got
            opened = []
            while not opened:
                data = await asyncio.wait_for(reader.read(65536), 5)
                if not data:
                    raise RuntimeError("responder closed before its first sealed message")
                opened = channel.feed(data)
            writer.close()
            if i:  # the first one is a warm-up
                times.append((time.perf_counter() - t) * 1e3)
            await asyncio.sleep(0.025)  # the responder refuses HELLOs from one peer < 20 ms apart
        return times

    try:
        times = asyncio.run(run())
    finally:
        workers.close()
        child.terminate()
        child.join(timeout=5)
    return stats(times, "loopback TCP, 2 processes, agent control channel (dial + ControlServer)")


# ------------------------------------------------------------------ primitive floor
def primitive_floor(n: int) -> dict:
    sk_i, sk_r = mldsa.MLDSA87PrivateKey.generate(), mldsa.MLDSA87PrivateKey.generate()
    transcript = os.urandom(6000)

    def once() -> float:
        t = time.perf_counter()
        xi, kem = x25519.X25519PrivateKey.generate(), mlkem.MLKEM1024PrivateKey.generate()  # initiator
        sig_h = sk_i.sign(transcript, CONTEXT)  # the signed HELLO (handshake version 2)
        sk_i.public_key().verify(sig_h, transcript, CONTEXT)  # responder
        xr = x25519.X25519PrivateKey.generate()
        ss_kem, ct = kem.public_key().encapsulate()
        ikm = ss_kem + xr.exchange(xi.public_key())
        HKDF(hashes.SHA256(), 192, salt=None, info=CONTEXT).derive(ikm)
        sig_r = sk_r.sign(transcript, CONTEXT)
        kem.decapsulate(ct)  # initiator
        xi.exchange(xr.public_key())
        HKDF(hashes.SHA256(), 192, salt=None, info=CONTEXT).derive(ikm)
        sk_r.public_key().verify(sig_r, transcript, CONTEXT)
        sig_i = sk_i.sign(transcript, CONTEXT)
        sk_i.public_key().verify(sig_i, transcript, CONTEXT)  # responder
        return (time.perf_counter() - t) * 1e3

    once()
    return stats([once() for _ in range(n)], "primitive floor (crypto calls only, one process)")


def markdown(doc: dict) -> str:
    out = ["| handshake | n | median ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in doc["results"].values():
        out.append(
            f"| {r['label']} | {r['n']} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} |"
        )
    out += [f"| {k}: skipped | | {v} | | |" for k, v in doc["skipped"].items()]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="handshakes per leg (default 200)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()
    doc: dict = {
        "stamp": time.strftime("%Y%m%d-%H%M%S"),
        "loadavg": os.getloadavg()[0],
        "results": {},
        "skipped": {},
    }
    try:
        doc["results"].update(in_process(args.n))
    except (ImportError, AttributeError, TypeError) as exc:
        doc["skipped"]["in_process"] = f"{type(exc).__name__}: {exc}"
    try:
        doc["results"].update(door_costs(args.n))
    except (ImportError, AttributeError, TypeError) as exc:
        doc["skipped"]["door"] = f"{type(exc).__name__}: {exc}"
    try:
        doc["results"]["loopback_tcp"] = loopback_control_channel(args.n)
    except Exception as exc:  # the control channel is young; any failure falls back to bench framing
        try:
            doc["results"]["loopback_tcp"] = loopback_bench_framing(args.n)
            doc["notes"] = f"agent control channel not used: {exc}"
        except (ImportError, AttributeError, TypeError) as exc2:
            doc["skipped"]["loopback_tcp"] = f"{type(exc2).__name__}: {exc2}"
    doc["results"]["floor"] = primitive_floor(args.n)
    doc["markdown"] = markdown(doc)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"handshake-{doc['stamp']}.json").write_text(json.dumps(doc, indent=2))
    print(f"load average {doc['loadavg']:.2f}" + (f"; {doc['notes']}" if doc.get("notes") else "") + "\n")
    print(doc["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
