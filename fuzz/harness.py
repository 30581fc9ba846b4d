"""What every harness shares: the libFuzzer runner, byte-level edits of a live message, and the
check that only a parser's declared errors escape.

A harness is a module with `one_input(data: bytes)` that calls `run(one_input)` when it is the
main module. It catches exactly the errors its parser declares; anything else (an IndexError, a
TypeError, an AssertionError from a round-trip check) escapes, and atheris reports it as a
crash with its traceback and the input that caused it.
"""

from __future__ import annotations

import sys

__all__ = ["edit", "run"]


def run(one_input) -> None:
    """Hand `one_input` to libFuzzer with this process's command line (libFuzzer's flags)."""
    import atheris

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def edit(base: bytes, fdp) -> bytes:
    """`base` with up to 8 edits chosen by the fuzzer: set, xor, insert, append or delete bytes,
    truncate.

    The harnesses use it on messages made live with the right keys, so a short input reaches
    the checks behind the parse (MACs, signatures, key confirmation) with nearly valid bytes."""
    out = bytearray(base)
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        if not fdp.remaining_bytes():
            break
        op = fdp.ConsumeIntInRange(0, 5)
        if op == 5:  # append: trailing bytes after a valid message
            out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
            continue
        at = fdp.ConsumeIntInRange(0, max(len(out) - 1, 0))
        if op == 0 and out:
            out[at] = fdp.ConsumeInt(1) & 0xFF
        elif op == 1 and out:
            out[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif op == 2:
            out[at:at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
        elif op == 3:
            del out[at : at + fdp.ConsumeIntInRange(1, 64)]
        else:
            del out[at:]
    return bytes(out)


HARNESSES = ("frames", "disco", "handshake", "control", "messages", "cert", "dht", "config")
DICTS = {"messages": "msgpack.dict", "dht": "msgpack.dict", "config": "toml.dict"}


def command(python: str, name: str, runs: int, workdir: str, *, seed: int = 1,
            extra: tuple = ()) -> list[str]:
    """The libFuzzer command line of one harness: `runs` inputs, from the committed seed corpus
    (read only: new inputs go to `workdir`, crashes to `workdir/crash-*`), with the harness's
    dictionary. Run it from the repository root."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    argv = [python, "-m", f"fuzz.fuzz_{name}", f"-runs={runs}", f"-seed={seed}", "-print_final_stats=1",
            f"-artifact_prefix={workdir}/", "-rss_limit_mb=1024", "-timeout=30", *extra]
    if name in DICTS:
        argv.append(f"-dict={here / 'dict' / DICTS[name]}")
    return [*argv, workdir, str(here / "corpus" / name)]
