"""A network namespace: its name, and running commands inside it (`ip netns exec`)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from lab.cmd import sh


@dataclass(frozen=True)
class Netns:
    name: str

    def argv(self, *cmd: str) -> list[str]:
        """`cmd` as run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run `cmd` inside; with `check`, a non-zero exit raises LabError."""
        return sh(*self.argv(*cmd), check=check, timeout=timeout, env=env, input=input)

    def popen(self, *cmd: str, **kw) -> subprocess.Popen:
        """Start `cmd` inside and return at once (the caller owns the process)."""
        return subprocess.Popen(self.argv(*cmd), **kw)

    def pids(self) -> list[int]:
        """Every process living in this namespace, whoever started it."""
        out = sh("ip", "netns", "pids", self.name, check=False).stdout
        return sorted({int(p) for p in out.split() if p.isdigit()})

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")


def add(name: str) -> None:
    """A new namespace (one command: it exists afterwards, or nothing was made)."""
    sh("ip", "netns", "add", name)


def delete(name: str) -> None:
    """Delete a namespace (its devices go with it); a missing one is not an error."""
    sh("ip", "netns", "del", name, check=False)


def existing() -> set[str]:
    return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()}
