"""Running one command of the lab: `sh()` returns its output or raises `LabError` naming the command."""

from __future__ import annotations

import subprocess


class LabError(RuntimeError):
    """A command that builds or runs the lab failed; the message names the command and its stderr."""


def sh(*argv: str, check: bool = True, timeout: float = 30, env: dict | None = None,
       input: str | None = None) -> subprocess.CompletedProcess:
    """Run `argv`, capture its text output; with `check`, a non-zero exit raises LabError."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from e
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed ({proc.returncode}): {msg}")
    return proc
