"""Serverless agent configuration: a TOML file (docs/operations.md#serverless-configuration) -> AgentConfig.

Every error is a ConfigError naming the file, the line and the key, e.g.
``mesh.toml:7: peer[1].overlay_ip: '10.10.10.300' is not an IP address``.
tomllib reports the position of syntax errors; for errors in values we find the key's line
ourselves by scanning the text for the table and key (`_KeyLines`).

Keys (unknown keys are errors, so a typo never silently falls back to a default):

[node]
  private_key     path to node.key, relative to the config file            (required)
  overlay_ip      this node's overlay address with prefix, "10.10.10.3/24" (required)
  listen_ip       underlay address to bind, default "0.0.0.0" ("::" for IPv6)
  control_port    TCP control channel, default 8443
  udp_port        UDP data, default 9443
  public          may relay for others, default false
  name            display name, default the config file's stem
  interface       TUN name (<= 15 chars), default "sm" + 8 hex of a hash of the config's absolute
                  path: stable for one file (so `status --config` finds the agent), distinct for two
  mtu             overlay MTU; default computed from the real overhead (see nodeagent.tunnel.tun)
  control_socket  local status socket, default /run/shadowmesh/<interface>.sock
  rekey_after_s   start a new handshake after this many seconds (default: the protocol's 120 s;
                  tests lower it); keepalive_s (default 10); relay_rate_pps (hub's per-peer cap)

[policy]          optional: the access policy this node enforces on what reaches it
  default         "allow" (every packet in, the default) or "deny" (only what a rule allows,
                  and the replies to what this node starts: nodeagent/policy/filter.py)

[[policy.rule]]   each allows packets from -> to (rules only allow; order does not matter)
  from, to        lists of addresses or prefixes, ["10.10.10.1", "192.168.5.0/24"]     (required)
  proto           "any" (default), "tcp", "udp" or "icmp"
  ports           destination ports of tcp/udp, "22, 8000-8080"; default every port

The rules are the same for every node of a mesh (paste the same [policy] into each file): an
agent uses those whose `to` holds its packets' destination for what may come in, and those
whose `from` holds its own address for what it may start (whose replies it lets in).

[[peer]]
  public_key      path (relative to the config file) to node.pub, or the key in base64  (required)
  overlay_ip      the peer's overlay address (a single address)                          (required)
  endpoint        "host" or "host:port" of its control channel (port default 8443); optional:
                  without it we wait for the peer to call us
  via             peer id of a public peer that relays for this one; optional
  allowed_ips     extra prefixes routed to this peer, ["192.168.5.0/24"]; optional
  name            display name; optional
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .identity import IdentityFileError, decode_public_key, load_public_key
from .protocol.constants import DEFAULT_CONTROL_PORT, DEFAULT_UDP_PORT, KEEPALIVE_S
from .protocol.identity import PEER_ID_RE, peer_id
from .protocol.policy import (
    ALLOW_ALL,
    DEFAULTS,
    DENY,
    PORT_PROTOCOLS,
    PROTOCOLS,
    Policy,
    Rule,
    check_policy,
    check_rule,
    parse_ports,
)

__all__ = ["AgentConfig", "ConfigError", "PeerConfig", "default_interface", "default_socket", "load_config",
           "parse_endpoint"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
DEFAULT_RELAY_RATE_PPS = 20_000


class ConfigError(Exception):
    """A configuration file that cannot be used. str() names file, line and key."""

    def __init__(self, path: Path, line: int | None, key: str | None, message: str) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True)
class PeerConfig:
    public_key: bytes
    peer_id: str
    overlay_ip: IPAddress
    name: str
    endpoint: tuple[str, int] | None = None
    via: str | None = None
    allowed_ips: tuple[IPNetwork, ...] = ()
    # UDP candidates the netmap lists (enrolled mode): (source, ip, port), source "reported",
    # "observed", "local" or "reflexive" (traversal.py)
    candidates: tuple[tuple[str, str, int], ...] = ()

    @property
    def routed(self) -> tuple[IPNetwork, ...]:
        """Every prefix whose packets go to (and may come from) this peer."""
        return (ipaddress.ip_network(self.overlay_ip), *self.allowed_ips)


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    name: str
    private_key_path: Path
    overlay: IPInterface
    listen_ip: IPAddress
    control_port: int
    udp_port: int
    public: bool
    interface: str
    mtu: int | None
    control_socket: Path
    peers: tuple[PeerConfig, ...] = field(default=())
    rekey_after_s: float | None = None
    keepalive_s: float = KEEPALIVE_S
    relay_rate_pps: int = DEFAULT_RELAY_RATE_PPS
    policy: Policy = ALLOW_ALL  # [policy]: what may reach this node (nodeagent/policy/)

    def peer(self, pid: str) -> PeerConfig | None:
        return next((p for p in self.peers if p.peer_id == pid), None)


def default_interface(config_path: Path) -> str:
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()
    return "sm" + digest[:8]


def default_socket(interface: str) -> Path:
    return Path("/run/shadowmesh") / f"{interface}.sock"


class _KeyLines:
    """Find the line of `key` inside `[table]` or the n-th `[[table]]` of a TOML text."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()

    def find(self, table: str, index: int | None, key: str | None) -> int | None:
        current: tuple[str, int | None] | None = None
        counts: dict[str, int] = {}
        header_line = None
        key_re = re.compile(rf"^\s*{re.escape(key)}\s*=") if key else None
        for number, line in enumerate(self._lines, 1):
            m = self._HEADER.match(line)
            if m:
                name = m.group(2)
                if m.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    current = (name, counts[name])
                else:
                    current = (name, None)
                if current == (table, index):
                    header_line = number
                continue
            if current == (table, index) and key_re is not None and key_re.match(line):
                return number
        return header_line


class _Loader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.base = path.parent
        self.lines = _KeyLines(text)

    def error(self, table: str, index: int | None, key: str | None, message: str) -> ConfigError:
        label = table if index is None else f"{table}[{index}]"
        return ConfigError(self.path, self.lines.find(table, index, key), f"{label}.{key}" if key else label,
                           message)

    # --- typed getters ---------------------------------------------------------------------
    def get(self, data: dict, table: str, index: int | None, key: str, kind: type | tuple,
            default: Any = ..., what: str = "") -> Any:
        if key not in data:
            if default is ...:
                raise self.error(table, index, key, "is required")
            return default
        value = data[key]
        # bool is an int subclass: never accept true for a port
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(table, index, key, f"must be {what or _kind_name(kind)}, not {value!r}")
        return value

    def port(self, data: dict, table: str, index: int | None, key: str, default: int) -> int:
        value = self.get(data, table, index, key, int, default, "an integer port")
        if not 1 <= value <= 65535:
            raise self.error(table, index, key, f"port {value} is outside 1..65535")
        return value

    def unknown(self, data: dict, table: str, index: int | None, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                raise self.error(table, index, key, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def path_value(self, value: str, table: str, index: int | None, key: str) -> Path:
        if "\0" in value:
            raise self.error(table, index, key, "a path cannot contain a NUL character")
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # "~user/..." naming a user this system does not have
            raise self.error(table, index, key, f"{value!r}: no such user's home directory") from None
        return p if p.is_absolute() else self.base / p

    # --- tables ----------------------------------------------------------------------------
    def node(self, doc: dict) -> dict[str, Any]:
        node = doc.get("node")
        if not isinstance(node, dict):
            raise ConfigError(self.path, None, "node", "a [node] table is required")
        allowed = {"private_key", "overlay_ip", "listen_ip", "control_port", "udp_port", "public", "name",
                   "interface", "mtu", "control_socket", "rekey_after_s", "keepalive_s", "relay_rate_pps"}
        self.unknown(node, "node", None, allowed)
        out: dict[str, Any] = {}
        out["private_key_path"] = self.path_value(self.get(node, "node", None, "private_key", str),
                                                  "node", None, "private_key")
        overlay_text = self.get(node, "node", None, "overlay_ip", str)
        if "/" not in overlay_text:
            raise self.error("node", None, "overlay_ip",
                             f"{overlay_text!r} needs a prefix, e.g. 10.10.10.3/24")
        try:
            out["overlay"] = ipaddress.ip_interface(overlay_text)
        except ValueError:
            raise self.error("node", None, "overlay_ip",
                             f"{overlay_text!r} is not an address/prefix") from None
        listen = self.get(node, "node", None, "listen_ip", str, "0.0.0.0")  # noqa: S104
        try:
            out["listen_ip"] = ipaddress.ip_address(listen)
        except ValueError:
            raise self.error("node", None, "listen_ip", f"{listen!r} is not an IP address") from None
        out["control_port"] = self.port(node, "node", None, "control_port", DEFAULT_CONTROL_PORT)
        out["udp_port"] = self.port(node, "node", None, "udp_port", DEFAULT_UDP_PORT)
        out["public"] = self.get(node, "node", None, "public", bool, False, "true or false")
        out["name"] = self.get(node, "node", None, "name", str, self.path.stem)
        if not 1 <= len(out["name"]) <= 63 or any(ord(c) < 32 for c in out["name"]):
            raise self.error("node", None, "name", "must be 1..63 printable characters")
        iface = self.get(node, "node", None, "interface", str, default_interface(self.path))
        if not _IFNAME_RE.match(iface):
            raise self.error("node", None, "interface", f"{iface!r} is not a valid interface name "
                                                        "(1..15 of letters, digits, '_', '.', '-')")
        out["interface"] = iface
        mtu = self.get(node, "node", None, "mtu", int, None, "an integer")
        if mtu is not None and not 1280 <= mtu <= 65535:
            raise self.error("node", None, "mtu", f"{mtu} is outside 1280..65535")
        out["mtu"] = mtu
        sock = self.get(node, "node", None, "control_socket", str, None)
        out["control_socket"] = (self.path_value(sock, "node", None, "control_socket") if sock
                                 else default_socket(iface))
        rekey = self.get(node, "node", None, "rekey_after_s", (int, float), None, "a number of seconds")
        if rekey is not None and not 1 <= rekey <= 120:
            raise self.error("node", None, "rekey_after_s", "must be between 1 and 120 seconds")
        out["rekey_after_s"] = None if rekey is None else float(rekey)
        keepalive = self.get(node, "node", None, "keepalive_s", (int, float), KEEPALIVE_S,
                             "a number of seconds")
        if not 0.1 <= keepalive <= 3600:
            raise self.error("node", None, "keepalive_s", "must be between 0.1 and 3600 seconds")
        out["keepalive_s"] = float(keepalive)
        rate = self.get(node, "node", None, "relay_rate_pps", int, DEFAULT_RELAY_RATE_PPS, "an integer")
        if rate < 1:
            raise self.error("node", None, "relay_rate_pps", "must be at least 1")
        out["relay_rate_pps"] = rate
        return out

    def peer(self, raw: Any, index: int) -> PeerConfig:
        if not isinstance(raw, dict):
            raise self.error("peer", index, None, "must be a table ([[peer]])")
        self.unknown(raw, "peer", index,
                     {"public_key", "overlay_ip", "endpoint", "via", "allowed_ips", "name"})
        key_text = self.get(raw, "peer", index, "public_key", str)
        public_key = decode_public_key(key_text) if len(key_text) > 256 else None
        if public_key is None:
            try:
                public_key = load_public_key(self.path_value(key_text, "peer", index, "public_key"))
            except IdentityFileError as exc:
                raise self.error("peer", index, "public_key", str(exc)) from None
        pid = peer_id(public_key)
        ip_text = self.get(raw, "peer", index, "overlay_ip", str)
        try:
            ip = ipaddress.ip_interface(ip_text)
        except ValueError:
            raise self.error("peer", index, "overlay_ip", f"{ip_text!r} is not an IP address") from None
        if ip.network.prefixlen != ip.max_prefixlen:
            raise self.error("peer", index, "overlay_ip", "a peer's overlay_ip is a single address "
                                                           "(use allowed_ips for prefixes)")
        endpoint = None
        if "endpoint" in raw:
            endpoint = self.endpoint(self.get(raw, "peer", index, "endpoint", str), index)
        via = self.get(raw, "peer", index, "via", str, None)
        if via is not None and not PEER_ID_RE.match(via):
            raise self.error("peer", index, "via", "must be a peer id (40 lowercase hex characters)")
        allowed = self.get(raw, "peer", index, "allowed_ips", list, [], "a list of prefixes")
        nets = []
        for item in allowed:
            try:
                if not isinstance(item, str):  # ip_network would take the integer 5 as 0.0.0.5/32
                    raise TypeError
                nets.append(ipaddress.ip_network(item, strict=True))
            except (ValueError, TypeError):
                raise self.error("peer", index, "allowed_ips", f"{item!r} is not a network prefix") from None
        name = self.get(raw, "peer", index, "name", str, pid[:8])
        return PeerConfig(public_key, pid, ip.ip, name, endpoint, via, tuple(nets))

    def policy(self, raw: Any) -> Policy:
        if not isinstance(raw, dict):
            raise ConfigError(self.path, self.lines.find("policy", None, None), "policy",
                              "must be a table ([policy])")
        self.unknown(raw, "policy", None, {"default", "rule"})
        default = self.get(raw, "policy", None, "default", str, "allow", "\"allow\" or \"deny\"")
        if default not in DEFAULTS:
            raise self.error("policy", None, "default", f"{default!r}: must be \"allow\" or \"deny\"")
        raw_rules = raw.get("rule", [])
        if not isinstance(raw_rules, list):
            raise self.error("policy", None, "rule", "use [[policy.rule]] tables")
        rules = [self.rule(r, i) for i, r in enumerate(raw_rules)]
        if rules and default != DENY:
            raise self.error("policy", None, "default",
                             "rules only allow: with rules, the default must be \"deny\"")
        return check_policy(default, rules)

    def rule(self, raw: Any, index: int) -> Rule:
        table = "policy.rule"
        if not isinstance(raw, dict):
            raise self.error(table, index, None, "must be a table ([[policy.rule]])")
        self.unknown(raw, table, index, {"from", "to", "proto", "ports"})
        ends: dict[str, list[str]] = {}
        for key in ("from", "to"):
            items = self.get(raw, table, index, key, list, what="a list of addresses or prefixes")
            try:
                ends[key] = [str(ipaddress.ip_network(item, strict=True)) for item in items]
            except (ValueError, TypeError) as exc:
                raise self.error(table, index, key, f"{exc}" if isinstance(exc, ValueError)
                                 else "must hold strings") from None
            if not ends[key]:
                raise self.error(table, index, key, "must name at least one address or prefix")
        proto = self.get(raw, table, index, "proto", str, "any")
        if proto not in PROTOCOLS:
            raise self.error(table, index, "proto", f"{proto!r}: must be one of {', '.join(PROTOCOLS)}")
        text = self.get(raw, table, index, "ports", str, "", "a string like \"22, 8000-8080\"")
        try:
            ports = parse_ports(text)
        except ValueError as exc:
            raise self.error(table, index, "ports", str(exc)) from None
        if ports and proto not in PORT_PROTOCOLS:
            raise self.error(table, index, "ports", "only tcp and udp rules name ports")
        return check_rule(ends["from"], ends["to"], proto, list(ports))

    def endpoint(self, text: str, index: int) -> tuple[str, int]:
        host, port = text, DEFAULT_CONTROL_PORT
        m = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?$", text)
        if m:
            host, port = m.group(1), int(m.group(2) or port)
        elif text.count(":") == 1:
            host, _, p = text.partition(":")
            if not (p.isascii() and p.isdigit()):  # int() takes other scripts' digits
                raise self.error("peer", index, "endpoint", f"{text!r}: port must be a number")
            port = int(p)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise self.error("peer", index, "endpoint",
                             f"{text!r}: host must be an IP address (\"198.18.0.8\" or \"198.18.0.8:8443\")"
                             ) from None
        if not 1 <= port <= 65535:
            raise self.error("peer", index, "endpoint", f"port {port} is outside 1..65535")
        return host, port


def _kind_name(kind: type | tuple) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", float: "a number"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def load_config(path: str | Path) -> AgentConfig:
    path = Path(path)
    try:
        # bytes, then UTF-8 without newline translation: tomllib must see the file as written
        # (read_text would turn a bare CR, which TOML refuses, into a line break)
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, None, "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, None, f"cannot read config file: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(path, None, None, "TOML syntax error: values nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        # Python >= 3.14 has exc.lineno/exc.msg; before, the position is only in the text
        line = getattr(exc, "lineno", None)
        msg = getattr(exc, "msg", None) or str(exc)
        m = re.search(r"\s*\(at line (\d+), column \d+\)$", msg)
        if m:
            line = line or int(m.group(1))
            msg = msg[: m.start()]
        raise ConfigError(path, line, None, f"TOML syntax error: {msg}") from None
    loader = _Loader(path, text)
    for key in doc:
        if key not in ("node", "peer", "policy"):
            raise ConfigError(path, loader.lines.find(key, None, None), key,
                              "unknown table (allowed: [node], [[peer]], [policy])")
    node = loader.node(doc)
    raw_peers = doc.get("peer", [])
    if not isinstance(raw_peers, list):
        raise ConfigError(path, loader.lines.find("peer", None, None), "peer", "use [[peer]] tables")
    peers = [loader.peer(raw, i) for i, raw in enumerate(raw_peers)]
    _check_peers(loader, node, peers)
    policy = loader.policy(doc["policy"]) if "policy" in doc else ALLOW_ALL
    return AgentConfig(path=path, peers=tuple(peers), policy=policy, **node)


def _check_peers(loader: _Loader, node: dict[str, Any], peers: list[PeerConfig]) -> None:
    ids: dict[str, int] = {}
    prefixes: dict[IPNetwork, int] = {ipaddress.ip_network(node["overlay"].ip): -1}
    for i, p in enumerate(peers):
        if p.peer_id in ids:
            raise loader.error("peer", i, "public_key", f"same key as peer[{ids[p.peer_id]}] ({p.peer_id})")
        ids[p.peer_id] = i
        if p.overlay_ip.version != node["overlay"].version and not p.allowed_ips:
            raise loader.error("peer", i, "overlay_ip", "IP version differs from [node] overlay_ip")
        for net in p.routed:
            if net in prefixes:
                owner = "[node]" if prefixes[net] < 0 else f"peer[{prefixes[net]}]"
                key = "overlay_ip" if net.prefixlen == net.max_prefixlen else "allowed_ips"
                raise loader.error("peer", i, key, f"{net} is already used by {owner}")
            prefixes[net] = i
    for i, p in enumerate(peers):
        if p.via is None:
            continue
        hub = ids.get(p.via)
        if hub is None:
            raise loader.error("peer", i, "via", f"{p.via} is not one of the configured peers")
        if hub == i:
            raise loader.error("peer", i, "via", "a peer cannot relay for itself")
        if peers[hub].via is not None:
            raise loader.error("peer", i, "via", "relays do not chain: the relay itself has a `via`")
        if peers[hub].endpoint is None:
            raise loader.error("peer", i, "via", f"relay peer[{hub}] needs an endpoint")


# --- shared by both modes (enrolled mode: nodeagent.enrolled) --------------------------------


def parse_endpoint(text: str, default_port: int = DEFAULT_CONTROL_PORT) -> tuple[str, int]:
    """"host", "host:port" or "[v6]:port" with an IP address host -> (host, port); ValueError if bad."""
    host, port = text, default_port
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?$", text)
    if m:
        host, port = m.group(1), int(m.group(2) or port)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not (p.isascii() and p.isdigit()):  # int() takes other scripts' digits
            raise ValueError(f"{text!r}: port must be a number")
        port = int(p)
    ipaddress.ip_address(host)  # ValueError when not an address
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return host, port
