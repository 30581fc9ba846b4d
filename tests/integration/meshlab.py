"""Enrolled-mode lab: a real meshadmin (Daphne, embedded SQLite in tmp) and enrolled agents in netns.

The server runs in the host namespace and listens on 127.0.0.1 (for the test's admin requests)
and on the host end of a host bridge of the `lab` fixture (198.19.<random>.1/24). Each node is a
namespace of the lab with one veth, `eth0`, on that bridge. Nodes enroll with
`shadowmesh-agent enroll` and one-time tokens from `manage.py createtoken`, then run
`shadowmesh-agent up --state-dir`. The lab's teardown ends the agents and the server and removes
the bridge and the namespaces.

    mesh = Mesh(lab)
    uk = mesh.node("uk", public=True)       -> EnrolledNode (enrolled and running)
    home = mesh.nat("home", "198.18.44.1/24")  a NAT box on the bridge (no route beyond it)
    be = mesh.node("belgium", behind=home, up_args=("--dns",), resolv="nameserver ...\n")
                                               a node behind it, with `up` flags and a resolv.conf
                                               of its own (lab.resolv_conf: never the host's)
    mesh.node("x", endpoint=False)             enrolled without --endpoint: it advertises its address
                                               towards the server, and follows it when it changes
    mesh.move(node)                            a new underlay address for the node (the old one goes)
    node.start(env={"SHADOWMESH_DHT": "0"})     the agent with extra environment
    mesh.revoke(node), mesh.rename(node, name), mesh.exit_node(node, "approve"), mesh.use_exit(a, b)
                                               through the dashboard, as an operator does
    mesh.server.stop() / mesh.server.start()   the same port and database again
    mesh.add_rule("node:a", "node:b", "tcp", "22") / edit_rule / set_policy_default   the policy editor
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lab import NatBox, Netns, free_host_subnet, stop
from tests.integration.agentlab import PYTHON, AgentLab, wait_for
from tests.meshadmin.realtime.live_helpers import DAPHNE, ROOT, Server, _wait_for_port


class MeshServer(Server):
    """live_helpers.Server, also listening on the bridge address the namespaces reach."""

    def __init__(self, lab: AgentLab, host_ip: str, env: dict | None = None) -> None:
        self.lab = lab
        self.host_ip = host_ip
        hosts = {"SHADOWMESH_ALLOWED_HOSTS": f"127.0.0.1,localhost,{host_ip}"}
        super().__init__(lab.tmp, env={**hosts, **(env or {})})
        self.agent_url = f"http://{host_ip}:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [DAPHNE, "-e", f"tcp:port={self.port}:interface=127.0.0.1",
                 "-e", f"tcp:port={self.port}:interface={self.host_ip}", "meshadmin.asgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.lab.track(self.proc)
        _wait_for_port(self.port, self.proc, self.log)


@dataclass
class EnrolledNode:
    lab: AgentLab
    name: str
    ns: Netns
    underlay: str
    state: Path
    log: Path
    peer_id: str = ""
    overlay_ip: str = ""
    proc: subprocess.Popen | None = None
    up_args: tuple[str, ...] = ()

    def status(self) -> dict:
        out = self.ns.run(PYTHON, "-m", "nodeagent", "status", "--state-dir", str(self.state), "--json",
                          check=False)
        if out.returncode != 0:
            raise RuntimeError(f"status of {self.name} failed ({out.returncode}): {out.stderr}")
        return json.loads(out.stdout)

    def peer_ids(self) -> set[str]:
        return {p["peer_id"] for p in self.status()["peers"]}

    def start(self, env: dict | None = None) -> None:
        self.proc = self.lab.spawn(self.ns, PYTHON, "-m", "nodeagent", "up", "--state-dir", str(self.state),
                                   "-v", *self.up_args, log=self.log, cwd=ROOT,
                                   env=None if env is None else {**os.environ, **env})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent {self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()}")
            try:
                self.status()
                return
            except RuntimeError:
                time.sleep(0.1)
        raise RuntimeError(f"agent {self.name} never served its status:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop(self.proc, sig)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Mesh:
    def __init__(self, lab: AgentLab, server_env: dict | None = None) -> None:
        self.lab = lab
        self.subnet = free_host_subnet()
        self.host_ip = f"{self.subnet}.1"
        self.segment = lab.host_bridge(f"{self.host_ip}/24")
        self.nodes: list[EnrolledNode] = []
        self._octet = 10
        self.server = MeshServer(lab, self.host_ip, server_env)
        self.server.start()
        self._admin: urllib.request.OpenerDirector | None = None

    # --- nodes
    def nat(self, role: str, lan: str) -> NatBox:
        """A NAT box on the bridge with `lan` as its LAN address; it has no default route, so its
        nodes reach the bridge's subnet (the server, the other nodes) and nothing else."""
        self._octet += 1
        return self.lab.nat(role, self.segment, wan=f"{self.subnet}.{self._octet}/24", lan=lan)

    def node(self, name: str, public: bool = False, start: bool = True, *, behind: NatBox | None = None,
             lan_addr: str | None = None, up_args: tuple[str, ...] = (), resolv: str | None = None,
             enroll_args: tuple[str, ...] = (), endpoint: bool = True) -> EnrolledNode:
        ns = self.lab.netns(name)
        if resolv is not None:
            self.lab.resolv_conf(ns, resolv)
        if behind is None:
            addr = self._address()
            self.segment.join(ns, f"{addr}/24", dev="eth0")
            advertised: tuple[str, ...] = ("--endpoint", f"{addr}:8443") if endpoint else ()
        else:  # behind a NAT: it dials out, nobody dials it
            assert lan_addr, "a node behind a NAT box needs its LAN address"
            addr = lan_addr
            behind.attach(ns, f"{addr}/24", dev="eth0")
            advertised = ()
        tmp = self.lab.tmp
        node = EnrolledNode(self.lab, name, ns, addr, tmp / f"state-{name}", tmp / f"agent-{name}.log",
                            up_args=up_args)
        self.nodes.append(node)
        token = self.server.token(public=public)
        out = ns.run(PYTHON, "-m", "nodeagent", "enroll", "--server", self.server.agent_url, "--token", token,
                     "--name", name, "--state-dir", str(node.state), *advertised,
                     *(["--public"] if public else []), *enroll_args, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"enroll {name} failed ({out.returncode}): {out.stderr}")
        node.peer_id = re.search(r"peer id:\s+([0-9a-f]{40})", out.stdout).group(1)
        node.overlay_ip = re.search(r"overlay ip:\s+(\S+)", out.stdout).group(1)
        if start:
            node.start()
        return node

    def _address(self) -> str:
        self._octet += 1
        return f"{self.subnet}.{self._octet}"

    def move(self, node: EnrolledNode) -> str:
        """The node's underlay address changes (as when it changes networks): a new one on eth0,
        the old one removed. Returns the new address."""
        new = self._address()
        # the old one first: deleting a primary address also deletes the secondaries of its subnet
        node.ns.run("ip", "addr", "del", f"{node.underlay}/24", "dev", "eth0")
        node.ns.run("ip", "addr", "add", f"{new}/24", "dev", "eth0")
        node.underlay = new
        return new

    def block(self, a: EnrolledNode, b: EnrolledNode) -> None:
        """a and b cannot reach each other's underlay address (they must meet through a relay)."""
        self.lab.block(a.ns, b.underlay)
        self.lab.block(b.ns, a.underlay)

    def ping(self, src: EnrolledNode, dst: EnrolledNode, count: int = 1, timeout: float = 1.0) -> bool:
        out = self.lab.tool(src.ns, "ping", dst.overlay_ip, "--count", str(count), "--timeout", str(timeout))
        return out.returncode == 0

    def wait_ping(self, src: EnrolledNode, dst: EnrolledNode, timeout: float = 20) -> None:
        wait_for(lambda: self.ping(src, dst), timeout, f"ping {src.name} -> {dst.name}")

    # --- operator actions through the dashboard
    def _login(self) -> urllib.request.OpenerDirector:
        if self._admin is None:
            password = self.server.manage("createadmin", "--reset").strip().splitlines()[-1]
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            self._post(opener, "/login/", {"username": "admin", "password": password})
            self._admin = opener
        return self._admin

    def _post(self, opener, path: str, fields: dict, form_page: str | None = None) -> str:
        url = self.server.url + path
        page = opener.open(self.server.url + (form_page or path), timeout=10).read().decode()
        m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert m, f"no CSRF token on {path}"
        body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": m.group(1)}).encode()
        req = urllib.request.Request(url, data=body, headers={"Referer": url})
        return opener.open(req, timeout=10).read().decode()

    def revoke(self, node: EnrolledNode) -> None:
        self._post(self._login(), f"/nodes/{node.peer_id}/revoke", {})

    def rename(self, node: EnrolledNode, name: str) -> None:
        self._post(self._login(), f"/nodes/{node.peer_id}/rename", {"name": name}, f"/nodes/{node.peer_id}/")

    def exit_node(self, node: EnrolledNode, action: str) -> None:
        """`action` is advertise, approve or remove (the node page's exit-node buttons)."""
        page = f"/nodes/{node.peer_id}/"
        self._post(self._login(), f"/nodes/{node.peer_id}/exit", {"action": action}, page)

    def use_exit(self, node: EnrolledNode, exit_node: EnrolledNode | None) -> None:
        self._post(self._login(), f"/nodes/{node.peer_id}/use-exit",
                   {"exit_node": exit_node.peer_id if exit_node else ""}, f"/nodes/{node.peer_id}/")

    def audit_actions(self) -> list[str]:
        code = ("from meshadmin.mesh.models import AuditEvent; "
                "print(','.join(AuditEvent.objects.order_by('id').values_list('action', flat=True)))")
        return self.server.manage("shell", "-c", code).strip().splitlines()[-1].split(",")

    def _pk(self, code: str) -> int:
        return int(self.server.manage("shell", "-c", code).strip().splitlines()[-1])

    def add_route(self, via: EnrolledNode, prefix: str) -> None:
        pk = self._pk("from meshadmin.mesh.models import Node; "
                      f"print(Node.objects.get(peer_id='{via.peer_id}').pk)")
        fields = {"via": str(pk), "prefix": prefix, "approve": "on"}
        self._post(self._login(), "/routes/new", fields, "/routes/")

    def remove_route(self, prefix: str) -> None:
        pk = self._pk("from meshadmin.mesh.models import Route; "
                      f"print(Route.objects.get(prefix='{prefix}').pk)")
        self._post(self._login(), f"/routes/{pk}/reject", {}, "/routes/")

    # --- the access policy, through the dashboard's editor
    def set_policy_default(self, default: str) -> None:
        self._post(self._login(), "/policy/default", {"default": default}, "/policy/")

    def add_rule(self, sources: str, destinations: str, protocol: str = "any", ports: str = "") -> int:
        """Add a rule at the end; returns its id."""
        self._post(self._login(), "/policy/rules/new",
                   {"sources": sources, "destinations": destinations, "protocol": protocol, "ports": ports},
                   "/policy/")
        return self._pk("from meshadmin.mesh.models import AccessRule; "
                        "print(AccessRule.objects.order_by('-pk').first().pk)")

    def edit_rule(self, pk: int, sources: str, destinations: str, protocol: str = "any",
                  ports: str = "") -> None:
        self._post(self._login(), f"/policy/rules/{pk}/",
                   {"sources": sources, "destinations": destinations, "protocol": protocol, "ports": ports})
