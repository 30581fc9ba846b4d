"""`up --dns`: point the node's resolver at the agent, and put the old setting back.

Debian's resolver reads /etc/resolv.conf. `install` keeps a copy of the file as it was
(`resolv.conf.orig` in the state directory, mode 0600) and writes the agent's file (resolv.py)
in place: the same file, never a new one renamed over it, because inside a network namespace
`ip netns exec` bind-mounts /etc/netns/<namespace>/resolv.conf over /etc/resolv.conf, and a mount
point cannot be replaced, only written. `restore` writes the copy back when the agent stops (only
if the file is still the agent's: a file someone else wrote since is left alone). A killed agent
cannot restore: the next start does (`recover`), with or without `--dns`, before it reads what
the node's resolver was.

systemd-resolved is not handled: when it manages /etc/resolv.conf (a link into
/run/systemd/resolve/, or its stub 127.0.0.53 as the only nameserver), `--dns` is refused
(`ResolverManaged`); the operator can point resolved at the agent for the mesh's suffix
(`resolvectl dns <interface> <overlay address>; resolvectl domain <interface> '~<suffix>'`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from .resolv import Resolv, is_ours, parse, render_ours

__all__ = ["BACKUP_FILE", "RESOLV_CONF", "ResolvConf", "ResolverManaged"]

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
BACKUP_FILE = "resolv.conf.orig"
RESOLVED_STUB = "127.0.0.53"


class ResolverManaged(Exception):
    """systemd-resolved manages the resolver: `--dns` does not touch it."""


def _write_in_place(path: Path, text: str) -> None:
    with open(path, "w") as f:  # truncate and write the same inode (it may be a bind mount)
        f.write(text)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class ResolvConf:
    def __init__(self, interface: str, address: str, backup_dir: Path, path: Path = RESOLV_CONF) -> None:
        self.interface = interface
        self.address = address
        self.path = path
        self.backup = backup_dir / BACKUP_FILE
        self.installed = False
        self.suffix: str | None = None

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""

    def recover(self) -> None:
        """A file a killed agent of ours left: put the copy back (or leave it when there is no copy)."""
        text = self._read()
        if not is_ours(text, self.interface):
            with contextlib.suppress(FileNotFoundError):
                self.backup.unlink()  # a copy from a run whose file someone else replaced since
            return
        try:
            old = self.backup.read_text()
        except FileNotFoundError:
            log.error("%s is an earlier run's and its copy (%s) is gone: left as it is", self.path,
                      self.backup)
            return
        _write_in_place(self.path, old)
        self.backup.unlink()
        log.warning("%s: put back what an earlier run of the agent replaced", self.path)

    def previous(self) -> Resolv:
        """What the node's resolver was before the agent (after `recover`)."""
        return parse(self._read())

    def check_managed(self) -> None:
        """Raise ResolverManaged when systemd-resolved owns the file."""
        target = os.path.realpath(self.path)
        if "/run/systemd/resolve/" in target or parse(self._read()).nameservers == (RESOLVED_STUB,):
            raise ResolverManaged(
                f"{self.path} is managed by systemd-resolved, which --dns does not change; point it at "
                f"the agent instead: resolvectl dns {self.interface} {self.address}; resolvectl domain "
                f"{self.interface} '~<network>.mesh'")

    def install(self, suffix: str | None = None) -> None:
        text = self._read()
        if is_ours(text):
            raise OSError(f"{self.path} is another agent's")
        _write_private(self.backup, text)
        _write_in_place(self.path, render_ours(self.interface, self.address, suffix, parse(text)))
        self.installed, self.suffix = True, suffix
        log.info("%s now points at %s (the old file is kept in %s)", self.path, self.address, self.backup)

    def update(self, suffix: str | None) -> None:
        """The mesh's suffix changed: put it first in the search list."""
        if not self.installed or suffix == self.suffix:
            return
        text = self._read()
        if not is_ours(text, self.interface):
            log.warning("%s was replaced by someone else; not updated", self.path)
            return
        try:
            old = parse(self.backup.read_text())
        except FileNotFoundError:
            old = Resolv()
        _write_in_place(self.path, render_ours(self.interface, self.address, suffix, old))
        self.suffix = suffix

    def restore(self) -> None:
        if not self.installed:
            return
        self.installed = False
        text = self._read()
        try:
            old = self.backup.read_text()
        except FileNotFoundError:
            log.error("the copy of %s is gone (%s); the file was not put back", self.path, self.backup)
            return
        if is_ours(text, self.interface):
            _write_in_place(self.path, old)
            log.info("%s put back", self.path)
        else:
            log.warning("%s was replaced by someone else while the agent ran; left as it is", self.path)
        self.backup.unlink()
