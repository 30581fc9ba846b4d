"""`shadowmesh-agent` command line (argparse only; the work happens elsewhere).

    shadowmesh-agent keygen --out DIR
    shadowmesh-agent enroll --server URL --token TOKEN --name NAME --state-dir DIR
                            [--endpoint HOST:PORT] [--public] [--server-ca FILE]
                            [--ca-fingerprint FP] [--advertise-exit-node]
                                                                (prints peer id and overlay IP)
    shadowmesh-agent up --config FILE.toml | --state-dir DIR    (foreground; logs to stderr;
                        [--metrics-listen HOST:PORT]             SIGINT/SIGTERM stop it)
                        [--log-format text|json]
                        [--dns] [--exit-node NAME] [--advertise-exit-node]   (enrolled mode)
    shadowmesh-agent status --config FILE.toml | --state-dir DIR [--json]

Exit codes: 0 ok; 1 runtime failure (also: enrollment refused or server unreachable); 2 usage
error; 3 bad config, key file or state directory; 4 not permitted (not root / no CAP_NET_ADMIN);
5 port already in use; 6 agent not reachable (status).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .logs import FORMATS, TEXT_FORMAT, JsonFormatter

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG, EXIT_PERM, EXIT_PORT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5, 6
CAP_NET_ADMIN = 12


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadowmesh-agent", description="ShadowMesh node agent")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kg = sub.add_parser("keygen", help="create a new ML-DSA-87 identity (DIR/node.key, DIR/node.pub)")
    kg.add_argument("--out", required=True, type=Path, metavar="DIR")

    en = sub.add_parser("enroll", help="enroll with a meshadmin server using a one-time token")
    en.add_argument("--server", required=True, metavar="URL", help="http(s)://host[:port] of meshadmin")
    en.add_argument("--token", required=True, help="one-time enrollment token (manage.py createtoken)")
    en.add_argument("--name", required=True, help="this node's name in the mesh")
    en.add_argument("--state-dir", required=True, type=Path, metavar="DIR",
                    help="where the key, certificate and server details are kept (mode 0600)")
    en.add_argument("--endpoint", metavar="HOST:PORT",
                    help="address peers dial (TCP control port; the agent listens on this port)")
    en.add_argument("--public", action="store_true", help="a public node that may relay for others")
    en.add_argument("--server-ca", type=Path, metavar="FILE",
                    help="PEM file of the CA that signed the server's TLS certificate (https only; "
                         "kept in the state dir for `up`); default: the system's CAs")
    en.add_argument("--ca-fingerprint", metavar="FP",
                    help="the network CA's fingerprint, for a token that does not carry one")
    en.add_argument("--advertise-exit-node", action="store_true",
                    help="offer this node as an exit node each time it starts (an operator approves it)")

    up = sub.add_parser("up", help="run the agent in the foreground")
    g = up.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", type=Path, metavar="FILE.toml", help="serverless mode")
    g.add_argument("--state-dir", type=Path, metavar="DIR", help="enrolled mode")
    up.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    up.add_argument("--dns", action="store_true",
                    help="enrolled mode: point this node's resolver (/etc/resolv.conf) at the agent, which "
                         "answers <name>.<network>.mesh; the old file comes back when the agent stops")
    up.add_argument("--exit-node", metavar="NAME",
                    help="enrolled mode: send this node's internet traffic through that peer (its name or "
                         "peer id), an approved exit node; overrides the dashboard's choice")
    up.add_argument("--advertise-exit-node", action="store_true",
                    help="enrolled mode: offer this node as an exit node (an operator approves it)")
    up.add_argument("--metrics-listen", metavar="HOST:PORT",
                    help="serve Prometheus metrics at http://HOST:PORT/metrics (off by default; "
                         "docs/operations.md#agent-metrics)")
    up.add_argument("--log-format", choices=FORMATS, default="text",
                    help="text (default) or json: one JSON object per line (docs/operations.md#log-format)")

    st = sub.add_parser("status", help="show the running agent's status")
    g = st.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", type=Path, metavar="FILE.toml")
    g.add_argument("--state-dir", type=Path, metavar="DIR")
    st.add_argument("--json", action="store_true",
                    help="machine-readable output (docs/operations.md#status-document)")
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


def cmd_enroll(args) -> int:
    from .config import parse_endpoint
    from .enroll import EnrollError, enroll, write_private_file
    from .enrolled import AGENT_FILE, REVOKED_FILE
    from .identity import IdentityFileError
    from .protocol.dnsname import is_label
    from .protocol.enroll_token import TokenFormatError, parse_fingerprint

    settings: dict = {}
    if args.endpoint:
        try:
            host, port = parse_endpoint(args.endpoint)
        except ValueError as exc:
            _err(f"--endpoint: {exc} (want HOST:PORT with an IP address)")
            return EXIT_USAGE
        args.endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        settings = {"endpoint": args.endpoint, "control_port": port}
    if args.advertise_exit_node:
        settings["advertise_exit_node"] = True
    if not 1 <= len(args.name) <= 63 or any(ord(c) < 32 for c in args.name):
        _err("--name must be 1..63 printable characters")
        return EXIT_USAGE
    fingerprint = None
    if args.ca_fingerprint is not None:
        try:
            fingerprint = parse_fingerprint(args.ca_fingerprint)
        except TokenFormatError as exc:
            _err(f"--ca-fingerprint: {exc}")
            return EXIT_USAGE
    try:
        result = enroll(args.server, args.token, args.name, args.state_dir, args.endpoint, args.public,
                        server_ca=args.server_ca, ca_fingerprint=fingerprint)
        write_private_file(args.state_dir / AGENT_FILE, json.dumps(settings, indent=2).encode() + b"\n")
        (args.state_dir / REVOKED_FILE).unlink(missing_ok=True)  # the marker of a former revocation
    except IdentityFileError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except EnrollError as exc:
        _err(str(exc))
        return EXIT_FAIL
    except OSError as exc:
        _err(f"{args.state_dir}: {exc.strerror or exc}")
        return EXIT_FAIL
    for warning in result.warnings:
        print(f"shadowmesh-agent: warning: {warning}", file=sys.stderr)
    if result.name != args.name:
        print(f"shadowmesh-agent: warning: another node of the network is called {args.name}: this one is "
              f"{result.name}", file=sys.stderr)
    if not is_label(result.name):
        print(f"shadowmesh-agent: warning: {result.name!r} is not a DNS label (letters, digits, hyphens): "
              "this node gets no DNS name until an operator renames it", file=sys.stderr)
    print(f"enrolled {result.name} in network {result.network}; state in {result.state_dir}")
    print(f"overlay ip: {result.overlay_ip}")
    print(f"peer id:    {result.peer_id}")
    print(f"next: shadowmesh-agent up --state-dir {result.state_dir}")
    return EXIT_OK


def _setup_logging(verbose: bool, log_format: str = "text", node: str | None = None) -> None:
    """Logs go to stderr: the human format, or (json) one object per line naming this `node`."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(static={"node": node} if node else None))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("websockets").setLevel(logging.INFO if verbose else logging.WARNING)


def cmd_up(args) -> int:
    """Check the state dir or config (exit 3) and privileges (exit 4) before touching anything."""
    from .config import ConfigError, load_config, parse_endpoint
    from .enroll import EnrollError, load_state
    from .identity import IdentityFileError, load_private_key

    config = identity = None
    if args.state_dir is None and (args.dns or args.exit_node or args.advertise_exit_node):
        _err("--dns, --exit-node and --advertise-exit-node need an enrolled node (--state-dir)")
        return EXIT_USAGE
    metrics_listen = None
    if args.metrics_listen is not None:
        try:
            metrics_listen = parse_endpoint(args.metrics_listen, default_port=0)
        except ValueError as exc:
            _err(f"--metrics-listen: {exc} (want HOST:PORT with an IP address)")
            return EXIT_USAGE
        if metrics_listen[1] == 0:
            _err("--metrics-listen: give a port (HOST:PORT)")
            return EXIT_USAGE
    try:
        if args.state_dir is not None:
            name = load_state(args.state_dir).name
        else:
            config = load_config(args.config)
            identity = load_private_key(config.private_key_path)
            name = config.name
    except (ConfigError, EnrollError, IdentityFileError) as exc:
        _err(str(exc))
        return EXIT_CONFIG
    if not has_net_admin():
        _err("`up` needs root or CAP_NET_ADMIN (it creates a TUN device and routes)")
        return EXIT_PERM
    _setup_logging(args.verbose, args.log_format, name)
    from .startup import AgentStartError, run_agent, run_enrolled

    try:
        if config is None:
            run_enrolled(args.state_dir, dns=args.dns, exit_node=args.exit_node,
                         advertise_exit_node=args.advertise_exit_node, metrics_listen=metrics_listen)
        else:
            assert identity is not None  # loaded with the config
            run_agent(config, identity, metrics_listen=metrics_listen)
    except AgentStartError as exc:
        _err(str(exc))
        return exc.exit_code
    return EXIT_OK


def cmd_status(args) -> int:
    from .config import ConfigError, default_socket, load_config
    from .control.local import LocalSocketError, query_status
    from .enrolled import enrolled_interface

    if args.state_dir is not None:
        if not (args.state_dir / "server.json").exists():
            _err(f"{args.state_dir}: not an enrolled state directory (run `shadowmesh-agent enroll`)")
            return EXIT_CONFIG
        sock = default_socket(enrolled_interface(args.state_dir))
    else:
        try:
            sock = load_config(args.config).control_socket
        except ConfigError as exc:
            _err(str(exc))
            return EXIT_CONFIG
    try:
        doc = query_status(sock)
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
             f"drops: {drops}"]
    if node.get("mode") == "enrolled":
        lines.append(f"server: {node['server']}, netmap serial {node['serial']}")
        ex, dns = node.get("exit_node") or {}, node.get("dns") or {}
        if ex.get("using"):
            lines.append(f"exit node: {ex['using_name']} ({ex['source']})")
        elif ex.get("problem"):
            lines.append(f"exit node: none ({ex['problem']})")
        if ex.get("serving"):
            lines.append("exit node for others: yes (forwarding, masquerading)")
        if dns.get("listening"):
            lines.append(f"dns: {dns['listening']}, {dns['names']} names under {dns['suffix'] or '-'}, "
                         f"resolver {dns['resolver']}")
    lines.append("")
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


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# enroll's options whose values are URL-safe base64, which may start with "-"
_BASE64_OPTIONS = ("--token", "--ca-fingerprint")


def _attach_values(argv: list[str]) -> list[str]:
    """`--token VALUE` -> `--token=VALUE` (and `--ca-fingerprint`): tokens and CA fingerprints are
    URL-safe base64 and may start with "-", which argparse would take for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _BASE64_OPTIONS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["enroll"]:
        argv = _attach_values(argv)
    args = _parser().parse_args(argv)
    handler = {"keygen": cmd_keygen, "enroll": cmd_enroll, "up": cmd_up, "status": cmd_status}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
