"""Per-operation cost of the cryptography ShadowMesh uses, from Python (`cryptography`'s OpenSSL backend).

    .venv/bin/python bench/crypto.py [--quick] [--results DIR]

- per packet: ChaCha20-Poly1305 seal/open (AES-256-GCM alongside for comparison), and, when the
  project's modules import, the agent's own per-packet steps: frames.seal, parse_header + open_frame,
  and the replay-window check;
- per handshake: X25519, ML-KEM-1024 and ML-DSA-87 operations, HKDF-SHA256.
Fast operations are timed as the mean of a tight loop (best of 5 loops); slow ones call by call
(median and p99). Writes DIR/crypto-<stamp>.json (with a markdown table) and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project's modules, when run from a checkout

CONTEXT = b"shadowmesh/handshake/v2"


def loop_us(fn, n: int, repeats: int = 5) -> float:
    """Mean µs per call of `fn(i)` over `n` calls; best of `repeats` loops (least disturbed by others)."""
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def calls_ms(fn, n: int) -> dict:
    """Median and p99 (nearest rank) in ms of `n` separately timed calls."""
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p99_ms": times[max(0, math.ceil(0.99 * n) - 1)], "n": n}


def aead_rows(sizes: list[int], n: int) -> list[dict]:
    rows = []
    aad = bytes(20)
    for label, aead in (
        ("ChaCha20-Poly1305", ChaCha20Poly1305(os.urandom(32))),
        ("AES-256-GCM", AESGCM(os.urandom(32))),
    ):
        for size in sizes:
            data = os.urandom(size)
            nonces = [i.to_bytes(12, "little") for i in range(n)]
            enc, dec = aead.encrypt, aead.decrypt
            ct = enc(nonces[0], data, aad)
            seal = loop_us(lambda i, enc=enc, data=data, nonces=nonces: enc(nonces[i], data, aad), n)
            opn = loop_us(lambda i, dec=dec, ct=ct, nonces=nonces: dec(nonces[0], ct, aad), n)
            rows.append(
                {
                    "op": f"{label} {size} B",
                    "seal_us": seal,
                    "open_us": opn,
                    "seal_gbps": size * 8 / seal / 1e3,
                }
            )
    return rows


def agent_rows(n: int) -> tuple[list[dict], str | None]:
    """The agent's own per-packet steps, if its modules are importable (they are being written)."""
    try:
        from nodeagent.protocol import frames
        from nodeagent.protocol.replay import ReplayWindow
    except ImportError as exc:
        return [], f"nodeagent.protocol not importable: {exc}"
    aead = ChaCha20Poly1305(os.urandom(32))
    payload = os.urandom(1400)
    datagram = frames.seal(aead, frames.FrameType.DATA, 7, 1, 0, payload)
    rows = [
        {
            "op": "frames.seal, 1400 B",
            "us": loop_us(lambda i: frames.seal(aead, frames.FrameType.DATA, 7, i, 0, payload), n),
        },
        {
            "op": "parse_header + open_frame, 1400 B",
            "us": loop_us(lambda i: frames.open_frame(aead, frames.parse_header(datagram), datagram), n),
        },
    ]
    window, counter = ReplayWindow(), itertools.count(1)  # fresh, increasing counters across the repeats
    rows.append(
        {
            "op": "ReplayWindow.check (in order)",
            "us": loop_us(lambda i: window.check(next(counter), 2**60), n),
        }
    )
    return rows, None


def handshake_rows(n: int) -> list[dict]:
    sk = mldsa.MLDSA87PrivateKey.generate()
    pk = sk.public_key()
    msg = os.urandom(4096)  # a transcript-sized message
    sig = sk.sign(msg, CONTEXT)
    kem = mlkem.MLKEM1024PrivateKey.generate()
    kem_pub = kem.public_key()
    _, ct = kem_pub.encapsulate()
    xa, xb = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    xb_pub = xb.public_key()
    ikm = os.urandom(64)

    def hkdf():
        HKDF(hashes.SHA256(), 64, salt=b"s" * 32, info=b"shadowmesh").derive(ikm)

    ops = [
        ("X25519 keygen", x25519.X25519PrivateKey.generate),
        ("X25519 exchange", lambda: xa.exchange(xb_pub)),
        ("ML-KEM-1024 keygen", mlkem.MLKEM1024PrivateKey.generate),
        ("ML-KEM-1024 encapsulate", kem_pub.encapsulate),
        ("ML-KEM-1024 decapsulate", lambda: kem.decapsulate(ct)),
        ("ML-DSA-87 keygen", mldsa.MLDSA87PrivateKey.generate),
        ("ML-DSA-87 sign (4 KiB, context)", lambda: sk.sign(msg, CONTEXT)),
        ("ML-DSA-87 verify (4 KiB, context)", lambda: pk.verify(sig, msg, CONTEXT)),
        ("HKDF-SHA256, 64 B out", hkdf),
    ]
    return [{"op": name, **calls_ms(fn, n)} for name, fn in ops]


def markdown(doc: dict) -> str:
    out = ["| per packet | seal µs | open µs | seal Gbit/s |", "| --- | ---: | ---: | ---: |"]
    out += [
        f"| {r['op']} | {r['seal_us']:.2f} | {r['open_us']:.2f} | {r['seal_gbps']:.1f} |" for r in doc["aead"]
    ]
    if doc["agent"]:
        out += ["", "| agent per-packet step | µs |", "| --- | ---: |"]
        out += [f"| {r['op']} | {r['us']:.2f} |" for r in doc["agent"]]
    elif doc.get("agent_skipped"):
        out += ["", f"Agent per-packet steps not measured: {doc['agent_skipped']}"]
    out += ["", "| per handshake | median ms | p99 ms |", "| --- | ---: | ---: |"]
    out += [f"| {r['op']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} |" for r in doc["handshake"]]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()
    n_pkt, n_hs = (2_000, 20) if args.quick else (50_000, 200)
    import cryptography

    doc: dict = {
        "stamp": time.strftime("%Y%m%d-%H%M%S"),
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "loadavg": os.getloadavg()[0],
    }
    doc["aead"] = aead_rows([64, 1400], n_pkt)
    doc["agent"], doc["agent_skipped"] = agent_rows(n_pkt)
    doc["handshake"] = handshake_rows(n_hs)
    doc["markdown"] = markdown(doc)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"crypto-{doc['stamp']}.json").write_text(json.dumps(doc, indent=2))
    print(f"python {doc['python']}, cryptography {doc['cryptography']}, load average {doc['loadavg']:.2f}\n")
    print(doc["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
