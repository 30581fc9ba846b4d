"""The serverless configuration file (nodeagent/config.py): TOML an operator writes.

Declared error: ConfigError, whose text names the file and, when the problem sits on a line of
the file, that line (1..number of lines). Input: the file's bytes, written to mesh.toml in a
directory that also holds alpha's and bravo's public keys (so `public_key = "bravo.pub"` loads).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from fuzz import world
    from nodeagent import config
    from nodeagent.config import ConfigError

DIR = Path(tempfile.mkdtemp(prefix="shadowmesh-fuzz-config-"))
(DIR / "alpha.pub").write_bytes(world.A.public_key)
(DIR / "bravo.pub").write_bytes(world.B.public_key)
PATH = DIR / "mesh.toml"


def one_input(data: bytes) -> None:
    PATH.write_bytes(data)
    try:
        cfg = config.load_config(PATH)
    except ConfigError as exc:
        assert str(exc).startswith(f"{PATH}:"), str(exc)
        lines = data.count(b"\n") + 1
        assert exc.line is None or 1 <= exc.line <= lines, (exc.line, lines, str(exc))
        return
    assert cfg.path == PATH
    assert all(len(p.peer_id) == 40 for p in cfg.peers)
    assert 1 <= cfg.control_port <= 65535 and 1 <= cfg.udp_port <= 65535


if __name__ == "__main__":
    from fuzz.harness import run

    run(one_input)
