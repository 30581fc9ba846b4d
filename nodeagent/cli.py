"""`shadowmesh-agent` command line (argparse only; the work happens elsewhere).

    shadowmesh-agent keygen --out DIR
    shadowmesh-agent up --config FILE.toml          (foreground; logs to stderr; SIGINT/SIGTERM stop it)
    shadowmesh-agent status --config FILE.toml [--json]
    shadowmesh-agent enroll ... / up --state-dir / status --state-dir: not implemented yet (issue 4)

Exit codes: 0 ok; 1 runtime failure; 2 usage error or not implemented; 3 bad config or key file;
4 not permitted (not root / no CAP_NET_ADMIN); 5 port already in use; 6 agent not reachable (status).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG, EXIT_PERM, EXIT_PORT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5, 6
NOT_IMPLEMENTED = "not implemented yet: needs the server link (issue 4)"
CAP_NET_ADMIN = 12


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadowmesh-agent", description="ShadowMesh node agent")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kg = sub.add_parser("keygen", help="create a new ML-DSA-87 identity (DIR/node.key, DIR/node.pub)")
    kg.add_argument("--out", required=True, type=Path, metavar="DIR")

    en = sub.add_parser("enroll", help="enroll with a meshadmin server (not implemented yet)")
    en.add_argument("--server")
    en.add_argument("--token")
    en.add_argument("--name")
    en.add_argument("--state-dir", type=Path)
    en.add_argument("--endpoint")
    en.add_argument("--public", action="store_true")

    up = sub.add_parser("up", help="run the agent in the foreground")
    g = up.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", type=Path, metavar="FILE.toml", help="serverless mode")
    g.add_argument("--state-dir", type=Path, metavar="DIR", help="enrolled mode (not implemented yet)")
    up.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    st = sub.add_parser("status", help="show the running agent's status")
    g = st.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", type=Path, metavar="FILE.toml")
    g.add_argument("--state-dir", type=Path, metavar="DIR")
    st.add_argument("--json", action="store_true", help="machine-readable output (DESIGN.md shape)")
    return p


def _err(message: str) -> None:
    print(f"shadowmesh-agent: error: {message}", file=sys.stderr)


def has_net_admin() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << CAP_NET_ADMIN))
    except OSError:
        pass
    return False


def cmd_keygen(args) -> int:
    from .identity import IdentityFileError, generate

    try:
        ident = generate(args.out)
    except IdentityFileError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except OSError as exc:
        _err(f"{args.out}: {exc.strerror or exc}")
        return EXIT_FAIL
    print(f"private key: {args.out / 'node.key'} (mode 0600, keep it on this node)")
    print(f"public key:  {args.out / 'node.pub'}")
    print(ident.peer_id)
    return EXIT_OK


def cmd_up(args) -> int:
    if args.state_dir is not None:
        _err(NOT_IMPLEMENTED)
        return EXIT_USAGE
    from .config import ConfigError, load_config
    from .identity import IdentityFileError, load_private_key

    try:
        config = load_config(args.config)
        identity = load_private_key(config.private_key_path)
    except (ConfigError, IdentityFileError) as exc:
        _err(str(exc))
        return EXIT_CONFIG
    if not has_net_admin():
        _err("`up` needs root or CAP_NET_ADMIN (it creates a TUN device and routes)")
        return EXIT_PERM
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .agent import AgentStartError, run_agent

    try:
        run_agent(config, identity)
    except AgentStartError as exc:
        _err(str(exc))
        return exc.exit_code
    return EXIT_OK


def cmd_status(args) -> int:
    if args.state_dir is not None:
        _err(NOT_IMPLEMENTED)
        return EXIT_USAGE
    from .config import ConfigError, load_config
    from .control.local import LocalSocketError, query_status

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    try:
        doc = query_status(config.control_socket)
    except LocalSocketError as exc:
        _err(str(exc))
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_status(doc))
    return EXIT_OK


def format_status(doc: dict) -> str:
    node = doc["node"]
    drops = ", ".join(f"{k} {v}" for k, v in node["drops"].items() if v) or "none"
    lines = [f"node {node['name']} {node['peer_id']} {node['overlay_ip']} up {node['uptime_s']:.0f} s",
             f"drops: {drops}", ""]
    header = f"{'peer':<12} {'overlay ip':<16} {'path':<18} {'endpoint':<22} {'rtt ms':>7} " \
             f"{'tx':>9} {'rx':>9} {'lost':>6} {'handshake':>10}"
    lines.append(header)
    for p in doc["peers"]:
        path = p["path"] if p["path"] == "direct" else "relay:" + p["path"][6:14]
        rtt = "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.2f}"
        hs = "-" if p["last_handshake_s"] is None else f"{p['last_handshake_s']:.0f} s ago"
        lines.append(f"{p['name'][:12]:<12} {p['overlay_ip']:<16} {path:<18} {p['endpoint'] or '-':<22} "
                     f"{rtt:>7} {_size(p['tx_bytes']):>9} {_size(p['rx_bytes']):>9} {p['lost_frames']:>6} "
                     f"{hs:>10}")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "enroll":
        _err(NOT_IMPLEMENTED)
        return EXIT_USAGE
    handler = {"keygen": cmd_keygen, "up": cmd_up, "status": cmd_status}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
