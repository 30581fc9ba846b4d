"""Signals while a lab is open: SIGTERM and SIGHUP stop the program the way Ctrl-C does.

`arm()` (when the first lab opens) makes SIGTERM and SIGHUP raise KeyboardInterrupt, so a killed
test session, benchmark or demo runs the same teardown as after Ctrl-C: its `with Lab()` block, or
pytest's fixture teardown, exits through the exception. It leaves alone any handler a program has
installed itself and a signal it ignores on purpose (SIGHUP under nohup); SIGINT ignored by a shell
that started us in the background gets Python's default handler back. `disarm()` (when the last lab
closes) restores what was there. `held()` keeps a teardown from being cut short: signals arriving
during it are noted and raised as KeyboardInterrupt once it is done. Only the main thread can
handle signals; elsewhere all three do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading

STOP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_saved: dict[int, object] = {}
_depth = 0


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()


def interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def arm() -> None:
    global _depth
    if not _main():
        return
    if _depth == 0:
        _saved.clear()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                _saved[sig] = signal.signal(sig, interrupt)
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            _saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    _depth += 1


def disarm() -> None:
    global _depth
    if not _main() or _depth == 0:
        return
    _depth -= 1
    if _depth == 0:
        for sig, handler in _saved.items():
            signal.signal(sig, handler)
        _saved.clear()


@contextlib.contextmanager
def held():
    if not _main():
        yield
        return
    noted: list[int] = []
    old = {sig: signal.signal(sig, lambda n, _f: noted.append(n)) for sig in STOP}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    stopping = [n for n in noted if old[n] != signal.SIG_IGN]
    if stopping:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(stopping[0]).name}")
