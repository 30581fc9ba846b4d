"""The server's data directory is private: the directory 0700, the files the server keeps there
0600, whatever the umask (the embedded SQLite database holds sessions, password hashes, sealed
CA keys and the audit log; `secret_key` unseals the CA keys).

Called from settings, so every entry point (daphne, manage.py migrate, celery, the demo) secures
the directory before anything is written to it. A directory or file we own that is open to group
or others is tightened; one we do not own, or a shared sticky directory such as /tmp, is left
alone (it is not ours to change).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["private_dir", "private_file", "write_private_file"]

# SQLite's companions of a database file (they get the database file's mode from SQLite itself)
SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")


def _tighten(path: Path, keep: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~keep:
        os.chmod(path, mode & keep)


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) with the directory itself 0700, or tighten it to 0700."""
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # exactly: the umask could have narrowed it
        except FileExistsError:  # another process made it first
            pass
    _tighten(path, 0o700)
    return path


def private_file(path: Path, *, sqlite: bool = False) -> Path:
    """Create `path` empty with mode 0600 if it is missing (SQLite then keeps that mode for the
    database and its journals), or tighten it to 0600; with `sqlite`, its companions too."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, 0o600)  # exactly: the umask could have narrowed it
        os.close(fd)
    for target in [path, *([Path(f"{path}{suffix}") for suffix in SQLITE_COMPANIONS] if sqlite else [])]:
        _tighten(target, 0o600)
    return path


def write_private_file(path: Path, data: bytes) -> bool:
    """Write `data` to a new file of mode 0600; False (nothing written) if it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True
