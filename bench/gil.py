"""Does `cryptography` release the GIL during the handshake's asymmetric operations and the data
path's ChaCha20-Poly1305 (one 1,400-byte segment, one 64 KB chunk)?

    .venv/bin/python bench/gil.py [--seconds 2] [--results DIR]

For each operation (ML-DSA-87 sign and verify, ML-KEM-1024 keygen, encapsulate and decapsulate,
X25519 exchange), a worker thread calls it in a loop for `seconds` while the main thread spins in
pure Python, with the interpreter's switch interval raised to SWITCH_S (0.25 s). That makes the
answer independent of how busy the machine is:

- an operation that RELEASES the GIL hands it to the spinning main thread at every call; the
  worker then waits a whole switch interval to get it back, so it completes only about
  1 / SWITCH_S calls per second (4/s);
- an operation that HOLDS the GIL runs back to back for whole switch intervals, so the worker
  completes about half of its solo rate.

`share` is the worker's rate beside the spinning main thread divided by its rate alone: near 0
means "releases the GIL", near 0.5 means "holds it". Three reference rows calibrate it: `sleep`
and `SHA-256 of 1 MiB` (hashlib releases the GIL for large inputs) release it, `pure python`
holds it. Writes DIR/gil-<stamp>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

HERE = Path(__file__).resolve().parent
CONTEXT = b"shadowmesh/handshake/v2"
SWITCH_S = 0.25


def operations() -> dict:
    sk = mldsa.MLDSA87PrivateKey.generate()
    pk = sk.public_key()
    message = os.urandom(9000)
    sig = sk.sign(message, CONTEXT)
    kem = mlkem.MLKEM1024PrivateKey.generate()
    ek = kem.public_key()
    _ss, ct = ek.encapsulate()
    xa, xb = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate().public_key()
    blob = os.urandom(1 << 20)
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce, aad = bytes(12), bytes(20)
    segment, chunk = os.urandom(1400), os.urandom(65000)
    sealed_segment, sealed_chunk = aead.encrypt(nonce, segment, aad), aead.encrypt(nonce, chunk, aad)

    def pure_python() -> None:
        x = 0
        for i in range(20000):
            x += i

    return {
        "sleep 1 ms (reference: releases)": lambda: time.sleep(0.001),
        "SHA-256 of 1 MiB (reference: releases)": lambda: hashlib.sha256(blob),
        "pure Python loop (reference: holds)": pure_python,
        "ML-DSA-87 sign (9 KB, context)": lambda: sk.sign(message, CONTEXT),
        "ML-DSA-87 verify (9 KB, context)": lambda: pk.verify(sig, message, CONTEXT),
        "ML-KEM-1024 keygen": mlkem.MLKEM1024PrivateKey.generate,
        "ML-KEM-1024 encapsulate": ek.encapsulate,
        "ML-KEM-1024 decapsulate": lambda: kem.decapsulate(ct),
        "X25519 exchange": lambda: xa.exchange(xb),
        "ChaCha20-Poly1305 seal, 1,400 B (one segment)": lambda: aead.encrypt(nonce, segment, aad),
        "ChaCha20-Poly1305 open, 1,400 B": lambda: aead.decrypt(nonce, sealed_segment, aad),
        "ChaCha20-Poly1305 seal, 65,000 B (one chunk)": lambda: aead.encrypt(nonce, chunk, aad),
        "ChaCha20-Poly1305 open, 65,000 B": lambda: aead.decrypt(nonce, sealed_chunk, aad),
    }


def solo_rate(op, seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        op()
        n += 1
    return n / (time.perf_counter() - start)


def beside_spinner(op, seconds: float) -> float:
    """The worker's calls per second while the main thread spins in pure Python."""
    stop = threading.Event()
    calls = 0

    def worker() -> None:
        nonlocal calls
        while not stop.is_set():
            op()
            calls += 1

    t = threading.Thread(target=worker, daemon=True)
    start = time.perf_counter()
    t.start()
    end = start + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1
    stop.set()
    t.join()
    return calls / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()
    import cryptography

    doc = {"stamp": time.strftime("%Y%m%d-%H%M%S"), "loadavg": os.getloadavg()[0],
           "python": sys.version.split()[0], "cryptography": cryptography.__version__,
           "switch_interval_s": SWITCH_S, "results": {}}
    default = sys.getswitchinterval()
    for name, op in operations().items():
        alone = solo_rate(op, args.seconds)
        sys.setswitchinterval(SWITCH_S)
        try:
            together = beside_spinner(op, args.seconds)
        finally:
            sys.setswitchinterval(default)
        share = together / alone
        doc["results"][name] = {"alone_per_s": alone, "beside_spinner_per_s": together, "share": share,
                                "gil": "released" if share < 0.2 else "held" if share > 0.3 else "unclear"}
    lines = ["| operation (worker thread) | calls/s alone | calls/s beside a spinning thread | share | GIL |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name, r in doc["results"].items():
        lines.append(f"| {name} | {r['alone_per_s']:.0f} | {r['beside_spinner_per_s']:.1f} "
                     f"| {r['share']:.3f} "
                     f"| {r['gil']} |")
    doc["markdown"] = "\n".join(lines)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"gil-{doc['stamp']}.json").write_text(json.dumps(doc, indent=2))
    print(f"python {doc['python']}, cryptography {doc['cryptography']}, switch interval {SWITCH_S} s, "
          f"load average {doc['loadavg']:.2f}\n")
    print(doc["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
