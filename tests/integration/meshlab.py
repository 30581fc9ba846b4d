"""Enrolled-mode lab: a real meshadmin (Daphne, embedded SQLite in tmp) and enrolled agents in netns.

The server runs in the host namespace and listens on 127.0.0.1 (for the test's admin requests)
and on the host end of a bridge this module creates (198.19.<random>.1/24, name "<prefix>br").
Each node is a namespace from the `lab` fixture with one veth on that bridge. Nodes enroll with
`shadowmesh-agent enroll` and one-time tokens from `manage.py createtoken`, then run
`shadowmesh-agent up --state-dir`. `cleanup()` stops the agents and the server and deletes the
bridge and the host ends of the veths (the namespaces themselves go with the lab).

    mesh = Mesh(lab)
    uk = mesh.node("uk", public=True)       -> EnrolledNode (enrolled and running)
    mesh.revoke(node)                          through the dashboard, as an operator does
    mesh.server.stop() / mesh.server.start()   the same port and database again
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from live_helpers import DAPHNE, ROOT, Server, _wait_for_port
from netlab import PYTHON, Lab, Netns, sh, wait_for


def _free_subnet() -> str:
    """A 198.19.N.0/24 no host interface uses yet: two bridges with one subnet would split the
    replies between them (a run killed before its teardown leaves its bridge behind)."""
    used = sh("ip", "-4", "-o", "addr").stdout
    for _ in range(100):
        subnet = f"198.19.{secrets.randbelow(240) + 10}"
        if f" {subnet}." not in used:
            return subnet
    raise RuntimeError("no free 198.19.N.0/24 on this host")


class MeshServer(Server):
    """live_helpers.Server, also listening on the bridge address the namespaces reach."""

    def __init__(self, tmp: Path, host_ip: str) -> None:
        self.host_ip = host_ip
        super().__init__(tmp, env={"SHADOWMESH_ALLOWED_HOSTS": f"127.0.0.1,localhost,{host_ip}"})
        self.agent_url = f"http://{host_ip}:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [DAPHNE, "-e", f"tcp:port={self.port}:interface=127.0.0.1",
                 "-e", f"tcp:port={self.port}:interface={self.host_ip}", "meshadmin.asgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self.proc, self.log)


@dataclass
class EnrolledNode:
    name: str
    ns: Netns
    underlay: str
    state: Path
    log: Path
    peer_id: str = ""
    overlay_ip: str = ""
    proc: subprocess.Popen | None = None

    def status(self) -> dict:
        out = self.ns.run(PYTHON, "-m", "nodeagent", "status", "--state-dir", str(self.state), "--json",
                          check=False)
        if out.returncode != 0:
            raise RuntimeError(f"status of {self.name} failed ({out.returncode}): {out.stderr}")
        return json.loads(out.stdout)

    def peer_ids(self) -> set[str]:
        return {p["peer_id"] for p in self.status()["peers"]}

    def start(self) -> None:
        with self.log.open("ab") as f:
            self.proc = self.ns.popen(PYTHON, "-m", "nodeagent", "up", "--state-dir", str(self.state), "-v",
                                      stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
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
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Mesh:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.subnet = _free_subnet()
        self.host_ip = f"{self.subnet}.1"
        self.bridge = f"{lab.prefix}br"
        self.host_links: list[str] = [self.bridge]
        self.nodes: list[EnrolledNode] = []
        self._octet = 10
        # a fixed (locally administered) MAC: otherwise the bridge takes the lowest MAC of its ports
        # and changes it as nodes are added, and a node that cached the old one is cut off from the
        # server until its ARP entry goes stale (the frames arrive as "for another host")
        mac = "02:" + ":".join(secrets.token_hex(1) for _ in range(5))
        sh("ip", "link", "add", self.bridge, "address", mac, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        self.server = MeshServer(lab.tmp, self.host_ip)
        self.server.start()
        self._admin: urllib.request.OpenerDirector | None = None

    # --- nodes
    def node(self, name: str, public: bool = False, start: bool = True) -> EnrolledNode:
        ns = self.lab.netns(name)
        self._octet += 1
        addr = f"{self.subnet}.{self._octet}"
        host_end = f"{self.lab.prefix}h{self._octet}"
        self.host_links.append(host_end)
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        sh("ip", "link", "set", host_end, "master", self.bridge, "up")
        ns.run("ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        tmp = self.lab.tmp
        node = EnrolledNode(name, ns, addr, tmp / f"state-{name}", tmp / f"agent-{name}.log")
        self.nodes.append(node)
        token = self.server.token(public=public)
        out = ns.run(PYTHON, "-m", "nodeagent", "enroll", "--server", self.server.agent_url, "--token", token,
                     "--name", name, "--state-dir", str(node.state), "--endpoint", f"{addr}:8443",
                     *(["--public"] if public else []), check=False)
        if out.returncode != 0:
            raise RuntimeError(f"enroll {name} failed ({out.returncode}): {out.stderr}")
        node.peer_id = re.search(r"peer id:\s+([0-9a-f]{40})", out.stdout).group(1)
        node.overlay_ip = re.search(r"overlay ip:\s+(\S+)", out.stdout).group(1)
        if start:
            node.start()
        return node

    def block(self, a: EnrolledNode, b: EnrolledNode) -> None:
        """a and b cannot reach each other's underlay address (they must meet through a relay)."""
        for ns, other in ((a.ns, b.underlay), (b.ns, a.underlay)):
            ns.run("iptables", "-A", "INPUT", "-s", other, "-j", "DROP")
            ns.run("iptables", "-A", "OUTPUT", "-d", other, "-j", "DROP")

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

    # --- teardown
    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        self.server.stop()
        for link in reversed(self.host_links):
            sh("ip", "link", "del", link, check=False)
