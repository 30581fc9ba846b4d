"""Start-up of both modes: from a config (or a state dir) to a running agent, with one clear message
and exit code per failure.

`run_agent` (serverless) and `run_enrolled` check what they were given (exit 3), then `_run`,
in this order:
  1. bind the UDP data port, the TCP control port and the metrics port, if asked for
     (`--metrics-listen`)                                 (port in use -> exit 5)
  2. create the TUN device, address, MTU, routes         (not permitted -> exit 4)
  3. run the agent's event loop until SIGINT/SIGTERM (agent.py); then it closes the links
     (CLOSE/SHUTDOWN) and unlinks the status socket, and we remove the routes and the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import time
import urllib.parse
from typing import TYPE_CHECKING

from . import evloop
from .agent import Agent, AgentStartError
from .config import AgentConfig, ConfigError
from .enroll import EnrollError, load_state
from .enrolled import advertised_endpoints, enrolled_config, enrolled_settings
from .identity import IdentityFileError, NodeIdentity
from .metrics.http import MetricsServer, bind_metrics
from .protocol.cert import CertificateError, ExpiredCertificate, verify_certificate
from .protocol.frames import FRAME_OVERHEAD, RELAY_OVERHEAD
from .tunnel import tun as tunmod
from .tunnel.mark import mark
from .tunnel.mss import clamp_mss
from .tunnel.udp import PortInUse, UdpSocket

if TYPE_CHECKING:
    from .discovery.service import Discovery

__all__ = [
    "AgentStartError", "bind_control", "choose_mtu", "current_certificate", "run_agent", "run_enrolled",
]

log = logging.getLogger("nodeagent")


def choose_mtu(config: AgentConfig) -> int:
    if config.mtu is not None:
        return config.mtu
    family = config.listen_ip.version
    if config.listen_ip.is_unspecified:
        versions = {ipaddress.ip_address(p.endpoint[0]).version for p in config.peers if p.endpoint}
        family = 6 if 6 in versions else 4
    relayed = any(p.via for p in config.peers)
    return fitted_mtu(family, RELAY_OVERHEAD if relayed else FRAME_OVERHEAD, config.overlay.version,
                      [p.endpoint[0] for p in config.peers if p.endpoint])


def fitted_mtu(family: int, overhead: int, overlay_version: int, destinations) -> int:
    """The overlay MTU whose frames fit the routes to `destinations` and the default routes
    (tun.fitting_mtu), logged when a narrow route lowered it."""
    addresses = []
    for dest in destinations:  # a host name is left to the default routes: no lookup at start
        with contextlib.suppress(ValueError):
            addresses.append(str(ipaddress.ip_address(dest)))
    routes = tunmod.route_mtus([*addresses, "default4", "default6"])
    mtu = tunmod.fitting_mtu(family, overhead, routes, overlay_version)
    if mtu < tunmod.overlay_mtu(family, overhead):
        narrow = {d: m for d, m in routes.items() if m < tunmod.UNDERLAY_MTU}
        log.info("overlay mtu %d, so that frames fit the routes %s (set `mtu` to choose another)", mtu,
                 ", ".join(f"to {d}: mtu {m}" for d, m in sorted(narrow.items())))
    return mtu


def bind_control(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        mark(sock)  # accepted connections answer outside any exit node's tunnel (tunnel/mark.py)
        clamp_mss(sock)  # and cross paths that drop big packets without a word (tunnel/mss.py)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"TCP control port {port} on {host} is already in use") from None
        raise
    return sock


def run_agent(config: AgentConfig, identity: NodeIdentity, *,
              metrics_listen: tuple[str, int] | None = None) -> None:
    """Serverless mode: run in the foreground until SIGINT/SIGTERM. Raises AgentStartError for
    start-up failures. `metrics_listen`: (host, port) for Prometheus metrics (metrics/http.py)."""
    for p in config.peers:
        if p.peer_id == identity.peer_id:
            raise AgentStartError(f"{config.path}: a [[peer]] has this node's own key ({p.peer_id})", 3)
    _run(config, identity, choose_mtu(config), [n for p in config.peers for n in p.routed], {}, None,
         metrics_listen)


def current_certificate(state):
    """Our certificate, checked; an expired one is renewed first when the server can be reached
    (server_link.renew_certificate). Returns (state, parsed certificate); raises AgentStartError."""
    from .server_link import RenewalFailed, renew_certificate  # websockets: enrolled mode only

    try:
        return state, verify_certificate(state.certificate, state.ca_public_key, int(time.time()))
    except ExpiredCertificate:
        log.warning("our certificate is outside its validity period: asking %s for a new one", state.server)
    except CertificateError as exc:
        raise AgentStartError(f"{state.state_dir}: our certificate: {exc} (enroll again)", 3) from None
    try:
        asyncio.run(renew_certificate(state.state_dir))
        state = load_state(state.state_dir)
        cert = verify_certificate(state.certificate, state.ca_public_key, int(time.time()))
    except RenewalFailed as exc:
        raise AgentStartError(f"{state.state_dir}: our certificate has expired and the server did not "
                              f"renew it: {exc} (start again when the server is reachable, or enroll "
                              "again)", 1) from None
    except (EnrollError, IdentityFileError, CertificateError) as exc:
        raise AgentStartError(f"{state.state_dir}: after renewal: {exc}", 3) from None
    log.info("certificate renewed: valid until %d", cert.not_after, extra={"event": "certificate.renewed"})
    return state, cert


def run_enrolled(state_dir, *, dns: bool = False, exit_node: str | None = None,
                 advertise_exit_node: bool = False, metrics_listen: tuple[str, int] | None = None) -> None:
    """Enrolled mode (`up --state-dir`): the tunnel plus the server link, peers from the netmap.
    An expired certificate is renewed first when the server can be reached. The agent answers the
    mesh's names on its overlay address; `dns` points the node's resolver at it (dns/system.py);
    `exit_node` sends the node's internet traffic through that peer (exitnode.py);
    `advertise_exit_node` (or agent.json's `advertise_exit_node`) offers this node as one."""
    from .dns.server import DnsService  # dnspython and websockets: only enrolled mode needs them
    from .dns.system import ResolvConf, ResolverManaged
    from .exitnode import ExitNode
    from .server_link import ServerLink

    try:
        state = load_state(state_dir)
        settings = enrolled_settings(state.state_dir)
    except (EnrollError, IdentityFileError, ConfigError) as exc:
        raise AgentStartError(str(exc), 3) from None
    state, cert = current_certificate(state)
    config = enrolled_config(state, cert, settings)
    endpoints = advertised_endpoints(settings, config, state.server)
    # any peer may fall back to a relay; frames fit the route to the server and the default routes
    server_host = urllib.parse.urlsplit(state.server).hostname or ""
    mtu = fitted_mtu(config.overlay.version, RELAY_OVERHEAD, config.overlay.version, [server_host])
    resolv = ResolvConf(config.interface, str(config.overlay.ip), state.state_dir)
    try:
        resolv.recover()  # a killed run's resolv.conf, with or without --dns
        if dns:
            resolv.check_managed()
    except ResolverManaged as exc:
        raise AgentStartError(str(exc), 3) from None
    except OSError as exc:
        raise AgentStartError(f"{resolv.path}: {exc.strerror or exc}", 1) from None
    exits = ExitNode(config.interface, config.overlay, requested=exit_node)
    exits.recover()  # a killed run's rules, table and forwarding

    def attach(agent: Agent) -> None:
        mode = agent.enrolled
        assert mode is not None  # the agent was given a certificate
        mode.use_state_dir(state.state_dir)

        def renewed(certificate: bytes) -> None:
            agent.handshakes.local.replace_credential(certificate)
            if agent.discovery is not None:  # our DHT record carries the certificate too
                agent.discovery.certificate_renewed(certificate)

        mode.server_link = ServerLink(
            state.state_dir, mode.apply_netmap, agent.stats_report, endpoints=endpoints,
            on_certificate=renewed, advertise_exit=advertise_exit_node or settings["advertise_exit_node"])
        mode.base_endpoints = endpoints
        mode.exit = exits
        mode.dns = DnsService(config.overlay.ip, config.overlay.network, resolv=resolv, manage_resolver=dns)
        if os.environ.get("SHADOWMESH_DHT", "1") != "0":
            agent.attach_discovery(_discovery(state, cert, settings, config, agent))

    _run(config, state.identity, mtu, [], {"certificate": state.certificate,
                                           "ca_public_key": state.ca_public_key}, attach, metrics_listen)


def _discovery(state, cert, settings, config: AgentConfig, agent: Agent) -> Discovery:
    """The DHT of an enrolled agent (discovery/service.py): signs with the node key's sign method,
    publishes the endpoints we advertise (computed again as the addresses change) and our UDP
    candidates, and has enrolled mode report a change of the advertised ones to the server."""
    from .discovery.service import Discovery

    mode = agent.enrolled
    assert mode is not None
    ip = config.listen_ip
    discovery = Discovery(
        state_dir=state.state_dir, sign=state.identity.private_key.sign, certificate=state.certificate,
        ca_public_key=state.ca_public_key,
        endpoints=lambda: advertised_endpoints(settings, config, state.server, warn=False),
        public=cert.is_public, overlay=config.overlay, enrolled=mode, links_up=agent.links.is_up,
        policy_rules=agent.policy_rules, allow_loopback=ip.is_loopback,
        bind_ip=None if ip.is_unspecified else str(ip))
    discovery.on_endpoints = mode.set_base_endpoints
    return discovery


def _run(config: AgentConfig, identity: NodeIdentity, mtu: int, routes, agent_kwargs: dict, attach,
         metrics_listen: tuple[str, int] | None = None) -> None:
    try:
        loop_name = evloop.selected()
    except evloop.EventLoopError as exc:
        raise AgentStartError(str(exc), 3) from None
    host = str(config.listen_ip)
    try:
        udp = UdpSocket.open(host, config.udp_port)
    except PortInUse as exc:
        raise AgentStartError(exc.strerror or str(exc), 5) from None
    except OSError as exc:
        raise AgentStartError(f"UDP {host}:{config.udp_port}: {exc.strerror}") from None
    try:
        control_sock = bind_control(host, config.control_port)
    except PortInUse as exc:
        udp.close()
        raise AgentStartError(exc.strerror or str(exc), 5) from None
    except OSError as exc:
        udp.close()
        raise AgentStartError(f"TCP {host}:{config.control_port}: {exc.strerror}") from None
    metrics_sock = None
    if metrics_listen is not None:
        try:
            metrics_sock = bind_metrics(*metrics_listen)
        except OSError as exc:  # PortInUse (exit 5) is one
            udp.close()
            control_sock.close()
            if isinstance(exc, PortInUse):
                raise AgentStartError(str(exc.strerror), 5) from None
            where = f"metrics {metrics_listen[0]}:{metrics_listen[1]}"
            raise AgentStartError(f"{where}: {exc.strerror or exc}") from None
    try:
        # SHADOWMESH_TUN_VNET=0 turns the userspace GRO path off (for A/B benchmarks)
        tun = tunmod.TunDevice.open(config.interface, vnet=os.environ.get("SHADOWMESH_TUN_VNET", "1") != "0")
    except tunmod.TunError as exc:
        udp.close()
        control_sock.close()
        if metrics_sock is not None:
            metrics_sock.close()
        raise AgentStartError(str(exc), 4 if "permitted" in str(exc) or "root" in str(exc) else 1) from None

    agents: list[Agent] = []

    async def main() -> None:
        agent = Agent(config, identity, tun, udp, control_sock, mtu, **agent_kwargs)
        agents.append(agent)
        if attach is not None:
            attach(agent)
        metrics = None if metrics_sock is None else MetricsServer(metrics_sock, agent.status)
        try:
            if metrics is not None:
                await metrics.start()
            await agent.run()
        finally:
            if metrics is not None:
                metrics.close()

    try:
        tunmod.configure(tun.name, config.overlay, mtu, routes)
        evloop.run(main(), loop_name)  # uvloop when installed (evloop.py)
    except tunmod.TunError as exc:
        raise AgentStartError(str(exc)) from None
    finally:
        for agent in agents:  # exit-node routing and role (enrolled mode), before the device goes
            if agent.enrolled is not None:
                with contextlib.suppress(Exception):
                    agent.enrolled.close()
        with contextlib.suppress(Exception):
            tunmod.teardown(tun.name, config.overlay, routes)
        tun.close()
        udp.close()
        control_sock.close()
        if metrics_sock is not None:
            metrics_sock.close()
        log.info("stopped; %s removed", tun.name, extra={"event": "agent.stopped"})
