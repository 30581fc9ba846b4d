"""The container path on a machine that reaches Debian's and PyPI's registries but no image registry.

As root on Debian 12, from the project root, after `make venv` (docs/containers.md has the record
of a run: commands, times, sizes, what did not work and the way around it):

    .venv/bin/python scripts/containers.py up            # everything below, in order
    .venv/bin/python scripts/containers.py build         # packages + base + images (cached)
    .venv/bin/python scripts/containers.py start         # the compose stack, reachable on 127.0.0.1:18443
    .venv/bin/python scripts/containers.py nodes [--hold]  # two enrolled nodes in namespaces, checked
    .venv/bin/python scripts/containers.py status
    .venv/bin/python scripts/containers.py down [--images] [--all]

build: installs podman, runc, debootstrap, netavark, aardvark-dns (Debian) and podman-compose
(PyPI, in its own virtualenv), makes a Debian base with debootstrap (cached as a tarball in
data/containers/cache/), `podman import`s it, builds the Python, PostgreSQL, Redis and nginx
images from Debian's packages on it (docker/local/) and the server image from docker/Dockerfile
with that Python base (BASE_IMAGE). Builds use the host's network (the package registries); the
running containers get none of it.

start: two podman networks on free 198.19.250-254 subnets (the services' one internal), an nft
table that drops forwarded traffic between them and anything outside 198.18.0.0/15, docker/.env
from docker/.env.example with random passwords and secret key, a throwaway CA and server
certificate in docker/tls/, then docker/compose.yml + docker/compose.local.yml with podman-compose.

nodes: a namespace lab (lab/) with two nodes on a host bridge, routed to the proxy's address;
each enrolls over https (`--server-ca` = the throwaway CA) and runs `shadowmesh-agent up`; the
script signs in to the dashboard through the published port and waits until both are online,
pings one overlay address from the other, then stops them (or waits for Ctrl-C with --hold) and
waits until the dashboard shows them offline.

down: containers, volumes, networks, the nft table, the generated .env, certificates and node
state; IPv4 forwarding back to what it was; --images also the images, --all also the cached base
and podman-compose's virtualenv. The installed Debian packages stay.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lab/
sys.path.insert(0, str(ROOT / "scripts"))

import containers_config as cfg  # noqa: E402

STATE = ROOT / "data" / "containers"
CACHE = STATE / "cache"
LOGS = STATE / "logs"
DOCKER = ROOT / "docker"
SUITE = "trixie"  # Debian 13: python3 3.13 (Django 6 needs >= 3.12; bookworm has 3.11), PostgreSQL 17
LOCAL = "localhost/shadowmesh-local"
BASE_IMAGE = f"{LOCAL}/debian:{SUITE}"
IMAGES = {name: f"{LOCAL}/{name}:{SUITE}" for name in ("python", "postgres", "redis", "nginx")}
SERVER_IMAGE = f"{LOCAL}/server:latest"
LABEL = "shadowmesh.local=1"
PROJECT = "shadowmesh-local"
NETWORKS = {"default": f"{PROJECT}-default", "edge": f"{PROJECT}-edge"}
NFT_TABLE = "shadowmesh_local"
APT_PACKAGES = ("podman", "runc", "debootstrap", "netavark", "aardvark-dns", "nftables", "iptables")
PODMAN_COMPOSE = "podman-compose>=1.6,<2"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TLS_DIR = DOCKER / "tls"
TLS_MARKER = TLS_DIR / "GENERATED-BY-containers.py"
ENV_FILE = DOCKER / ".env"
AGENT = str(ROOT / ".venv" / "bin" / "shadowmesh-agent")
NODE_ROLES = ("a", "b")

PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(STATE / "containers.conf")}
TIMES: list[tuple[str, float]] = []


class Failed(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"containers: {message}")


# ------------------------------------------------------------------ running things


def say(message: str) -> None:
    print(f"containers: {message}", flush=True)


def run(*argv: str | Path, check: bool = True, capture: bool = False, log: Path | None = None,
        timeout: float | None = None, env: dict | None = None,
        quiet: bool = False) -> subprocess.CompletedProcess:
    """Run a command, echoed as `+ ...`; its output goes to `log` (appended), is captured, or is shown."""
    args = [str(a) for a in argv]
    if not quiet:
        print("+ " + " ".join(args), flush=True)
    env = env or PODMAN_ENV
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"\n+ {' '.join(args)}\n")
            out.flush()
            proc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                  env=env)
        if check and proc.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
            raise Failed(f"`{args[0]} {args[1] if len(args) > 1 else ''}` failed ({proc.returncode}); "
                         f"the end of {log}:\n{tail}")
        return proc
    proc = subprocess.run(args, capture_output=capture, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()[-3000:] if capture else ""
        raise Failed(f"`{' '.join(args)}` failed ({proc.returncode}) {detail}")
    return proc


def podman(*args: str, check: bool = True, capture: bool = True,
           quiet: bool = True) -> subprocess.CompletedProcess:
    return run("podman", *args, check=check, capture=capture, quiet=quiet)


def compose(*args: str, check: bool = True, log: Path | None = None) -> subprocess.CompletedProcess:
    exe = STATE / "compose-venv" / "bin" / "podman-compose"
    if not exe.exists():
        raise Failed("podman-compose is not installed yet: run `containers.py build` first")
    # -p: podman-compose 1.6 takes the project name from the first file, not from the override's `name`
    return run(exe, "-p", PROJECT, "-f", DOCKER / "compose.yml", "-f", DOCKER / "compose.local.yml", *args,
               check=check, log=log)


@contextmanager
def phase(name: str):
    say(f"--- {name}")
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    TIMES.append((name, took))
    say(f"--- {name}: {took:.1f} s")


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# ------------------------------------------------------------------ build


def install() -> None:
    missing = [p for p in APT_PACKAGES if run("dpkg-query", "-W", "-f=${Status}", p, check=False,
                                               capture=True, quiet=True).stdout != "install ok installed"]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "update", "-qq", env=env)
        # no recommends: buildah, fuse-overlayfs, slirp4netns, uidmap are for rootless podman
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", *missing, env=env,
            log=LOGS / "apt.log")
    venv = STATE / "compose-venv"
    if not (venv / "bin" / "podman-compose").exists():
        run(sys.executable, "-m", "venv", venv, env=dict(os.environ))
        run(venv / "bin" / "pip", "install", "-q", PODMAN_COMPOSE, env=dict(os.environ), log=LOGS / "pip.log")
    write_private(STATE / "containers.conf", cfg.containers_conf(), 0o644)
    # pip in the server build trusts what this host trusts (a host may reach PyPI through a
    # TLS-inspecting proxy whose CA only the host's bundle holds); mounted for the build only
    write_private(STATE / "pip.conf", f"[global]\ncert = {HOST_CA_BUNDLE}\n", 0o644)


def host_mirrors() -> tuple[str, str | None]:
    """The Debian mirrors this host's apt uses (the images are built from the same)."""
    codename = re.search(r"^VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text(), re.M).group(1)
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    try:
        return cfg.debian_mirrors([f.read_text() for f in files if f.is_file()], codename)
    except ValueError as e:
        raise Failed(f"{e}: the images are built from the host's Debian mirror") from e


def configure_rootfs(rootfs: Path, main: str, security: str | None) -> None:
    """Make the debootstrapped tree an image base: Debian's sources with security updates, no
    service starts from package scripts, no docs or locales in later layers, no apt caches."""
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(cfg.sources_deb822(SUITE, main, security))
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts inside an image build\nexit 101\n")
    policy.chmod(0o755)
    (rootfs / "etc/dpkg/dpkg.cfg.d/excludes").write_text(
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n")
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / sub).glob("*"):
            if entry.is_file():
                entry.unlink()


def base(rebuild: bool) -> None:
    if image_exists(BASE_IMAGE) and not rebuild:
        say(f"{BASE_IMAGE} exists")
        return
    private_dir(CACHE)
    tarball = CACHE / f"debian-{SUITE}-minbase.tar"
    if not tarball.exists():
        rootfs = CACHE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        main, security = host_mirrors()
        with phase("debootstrap"):
            run("debootstrap", "--variant=minbase", SUITE, rootfs, main, log=LOGS / "debootstrap.log",
                env=dict(os.environ))
        configure_rootfs(rootfs, main, security)
        run("tar", "--numeric-owner", "-C", rootfs, "-cf", f"{tarball}.tmp", ".")
        os.replace(f"{tarball}.tmp", tarball)
        shutil.rmtree(rootfs)
    else:
        say(f"base tree cached: {tarball}")
    with phase("podman import"):
        run("podman", "import",
            "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change", "ENV LANG=C.UTF-8", "--change", f"LABEL {LABEL}", "--change", 'CMD ["/bin/bash"]',
            tarball, BASE_IMAGE, log=LOGS / "build.log")


def images(rebuild: bool) -> None:
    for name, tag in IMAGES.items():
        if image_exists(tag) and not rebuild:
            say(f"{tag} exists")
            continue
        with phase(f"image {name}"):
            run("podman", "build", "--network=host", "--label", LABEL, "--build-arg", f"BASE={BASE_IMAGE}",
                "-f", DOCKER / "local" / f"{name}.Containerfile", "-t", tag, DOCKER / "local",
                log=LOGS / "build.log")
    with phase("image server (docker/Dockerfile, cached layers)"):
        # what docker/compose.local.yml's build section says (a test keeps the two the same);
        # podman directly, since compose.yml wants the passwords of .env before any command
        run("podman", "build", "--network=host", "--label", LABEL,
            "--build-arg", f"BASE_IMAGE={IMAGES['python']}",
            f"--volume={HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
            f"--volume={STATE / 'pip.conf'}:/etc/pip.conf:ro",
            "-f", DOCKER / "Dockerfile", "-t", SERVER_IMAGE, ROOT, log=LOGS / "build.log")


def build(rebuild: bool) -> None:
    private_dir(STATE)
    with phase("install packages"):
        install()
    base(rebuild)
    images(rebuild)


# ------------------------------------------------------------------ stack


def load_stack() -> dict | None:
    path = STATE / "stack.json"
    return json.loads(path.read_text()) if path.exists() else None


def addresses(stack: dict) -> cfg.StackAddresses:
    return cfg.StackAddresses(stack["third_octet"])


def container(service: str) -> str:
    out = podman("ps", "-a", "--format", "{{.Names}}",
                 "--filter", f"label=com.docker.compose.project={PROJECT}",
                 "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    if not out:
        raise Failed(f"no container for the service {service!r}: is the stack started?")
    return out[0]


def manage(*args: str) -> str:
    return podman("exec", container("web"), "python", "manage.py", *args).stdout


def generated(path: Path) -> bool:
    """Whether `path` (docker/.env or docker/tls/) is ours to replace or remove."""
    if path == ENV_FILE:
        return path.exists() and path.read_text().startswith(cfg.ENV_MARKER)
    return TLS_MARKER.exists()


def write_env(addrs: cfg.StackAddresses) -> None:
    if ENV_FILE.exists():
        if not generated(ENV_FILE):
            raise Failed(f"{ENV_FILE} exists and was not written by this script: move it away first")
        say(f"{ENV_FILE} kept (generated earlier)")
        return
    values = cfg.local_env_values(addrs, postgres_password=secrets.token_urlsafe(24),
                                  redis_password=secrets.token_urlsafe(24),
                                  secret_key=secrets.token_urlsafe(50))
    write_private(ENV_FILE, cfg.render_env((DOCKER / ".env.example").read_text(), values))
    say(f"wrote {ENV_FILE} (0600, random passwords and secret key)")


def write_tls(addrs: cfg.StackAddresses) -> None:
    if TLS_DIR.exists():
        if not generated(TLS_DIR):
            raise Failed(f"{TLS_DIR} exists and was not written by this script: move it away first")
        say(f"{TLS_DIR} kept (generated earlier)")
        return
    tls = cfg.throwaway_tls([addrs.proxy_ip, "127.0.0.1"], ["localhost"], datetime.now(UTC))
    TLS_DIR.mkdir(mode=0o755)
    write_private(TLS_DIR / "fullchain.pem", tls.chain_pem, 0o644)
    write_private(TLS_DIR / "privkey.pem", tls.key_pem, 0o600)  # read by nginx's master, root
    TLS_MARKER.write_text("written by scripts/containers.py; `containers.py down` removes this directory\n")
    write_private(STATE / "server-ca.pem", tls.ca_pem, 0o644)
    say(f"wrote a throwaway CA ({STATE / 'server-ca.pem'}) and the proxy's certificate for "
        f"{addrs.proxy_ip}, 127.0.0.1, localhost (the CA's key is not kept)")


def networks(addrs: cfg.StackAddresses) -> None:
    existing = set(podman("network", "ls", "--format", "{{.Name}}").stdout.split())
    if NETWORKS["default"] not in existing:
        run("podman", "network", "create", "--internal", "--label", LABEL, "--subnet", addrs.default_subnet,
            NETWORKS["default"])
    if NETWORKS["edge"] not in existing:
        run("podman", "network", "create", "--label", LABEL, "--subnet", addrs.edge_subnet,
            "--gateway", addrs.edge_gateway, "--ip-range", addrs.edge_dynamic_range, NETWORKS["edge"])
    run("nft", "delete", "table", "inet", NFT_TABLE, check=False, capture=True, quiet=True)
    print(f"+ nft -f - <<< (table inet {NFT_TABLE})", flush=True)
    subprocess.run(["nft", "-f", "-"], input=cfg.guard_ruleset(NFT_TABLE, addrs.subnets), text=True,
                   check=True)
    say(f"nft table inet {NFT_TABLE}: forwarded traffic of {', '.join(addrs.subnets)} "
        f"stays within {cfg.UNDERLAY}")


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_healthy(service: str, timeout: float = 120) -> None:
    """podman 4.3 runs health checks from systemd timers, and systemd is not PID 1 here (nor does
    podman-compose wait for service_healthy with podman < 4.6): run the check ourselves."""
    name = container(service)
    deadline = time.monotonic() + timeout
    while podman("healthcheck", "run", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            logs = podman("logs", "--tail", "30", name, check=False)
            raise Failed(f"{service} not healthy after {timeout:.0f} s:\n{logs.stdout}{logs.stderr}")
        time.sleep(1)
    say(f"{service} healthy")


def wait_log(service: str, text: str, timeout: float = 90) -> None:
    name = container(service)
    deadline = time.monotonic() + timeout
    while True:
        logs = podman("logs", name, check=False)
        if text in logs.stdout + logs.stderr:
            say(f"{service}: {text!r} in its log")
            return
        if time.monotonic() > deadline:
            raise Failed(f"{service}: no {text!r} in its log after {timeout:.0f} s:\n{logs.stderr[-2000:]}")
        time.sleep(1)


def https_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(STATE / "server-ca.pem"))


def wait_https(url: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=https_context(), timeout=5) as r:  # noqa: S310 (https)
                return r.status
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return e.code
            err: Exception = e
        except (OSError, ssl.SSLError) as e:
            err = e
        if time.monotonic() > deadline:
            raise Failed(f"{url} did not answer within {timeout:.0f} s: {err}")
        time.sleep(1)


def start() -> None:
    private_dir(STATE)
    if not image_exists(SERVER_IMAGE):
        raise Failed("the images are not built yet: run `containers.py build` first")
    stack = load_stack()
    if stack is None:
        for port in (cfg.HTTPS_PORT, cfg.HTTP_PORT):
            if not port_free(port):
                raise Failed(f"127.0.0.1:{port} is in use (docker/compose.local.yml publishes the "
                             "proxy there)")
        addrs = cfg.pick_stack_addresses(run("ip", "-4", "-o", "addr", capture=True, quiet=True).stdout)
        stack = {"third_octet": addrs.third_octet,
                 "ip_forward_before": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()}
        write_private(STATE / "stack.json", json.dumps(stack, indent=1))
    addrs = addresses(stack)
    write_env(addrs)
    write_tls(addrs)
    with phase("stack start"):
        networks(addrs)
        # compose.yml's order, kept by this script: podman 4.3 cannot wait for service_healthy, and
        # cannot start a container whose dependency (--requires) has dependencies of its own
        # ("not found in input list"), so every step is `up --no-deps` and the waiting is done here
        up = ("up", "-d", "--no-deps")
        compose(*up, "postgres", "redis", log=LOGS / "compose.log")
        wait_healthy("postgres")
        wait_healthy("redis")
        compose(*up, "migrate", log=LOGS / "compose.log")
        code = podman("wait", container("migrate"), check=False).stdout.strip()
        if code != "0":
            logs = podman("logs", "--tail", "40", container("migrate"), check=False)
            raise Failed(f"migrate exited with {code}:\n{logs.stdout}{logs.stderr}")
        say("migrate: done")
        compose(*up, "web", "worker", "beat", log=LOGS / "compose.log")
        wait_log("worker", "ready.")  # celery reached Redis
        compose(*up, "proxy", log=LOGS / "compose.log")
        status = wait_https(f"https://127.0.0.1:{cfg.HTTPS_PORT}/login/")
        say(f"https://127.0.0.1:{cfg.HTTPS_PORT}/login/ answers {status} through the proxy")
    redirect = http_status(f"http://127.0.0.1:{cfg.HTTP_PORT}/login/")
    say(f"http://127.0.0.1:{cfg.HTTP_PORT}/login/ answers {redirect} (redirect to https)")
    password = manage("createadmin", "--viewer", "--username", "viewer", "--reset").strip().splitlines()[-1]
    write_private(STATE / "viewer-password", password + "\n")
    say(f"dashboard: https://127.0.0.1:{cfg.HTTPS_PORT}/ (CA {STATE / 'server-ca.pem'}); read-only user "
        f"`viewer`, password in {STATE / 'viewer-password'}; "
        f"`podman exec {container('web')} python manage.py createadmin` makes an administrator")


def http_status(url: str) -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# ------------------------------------------------------------------ nodes


class Dashboard:
    """A signed-in dashboard session through the published port (the read-only `viewer`)."""

    def __init__(self) -> None:
        self.base = f"https://127.0.0.1:{cfg.HTTPS_PORT}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            urllib.request.HTTPSHandler(context=https_context()))
        page = self.opener.open(f"{self.base}/login/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        password = (STATE / "viewer-password").read_text().strip()
        form = urllib.parse.urlencode({"username": "viewer", "password": password,
                                       "csrfmiddlewaretoken": token}).encode()
        req = urllib.request.Request(f"{self.base}/login/", data=form,  # noqa: S310 (https)
                                     headers={"Referer": f"{self.base}/login/"})
        with self.opener.open(req, timeout=10) as r:
            if "/login/" in r.geturl():
                raise Failed("could not sign in to the dashboard as viewer")

    def graph(self) -> dict:
        with self.opener.open(f"{self.base}/map/graph.json", timeout=10) as r:
            return json.loads(r.read())


def wait_states(dash: Dashboard, names: list[str], want: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        graph = dash.graph()
        states = {n["data"]["label"]: n["data"]["state"] for n in graph["nodes"]}
        if all(states.get(name) == want for name in names):
            return graph
        if time.monotonic() > deadline:
            raise Failed(f"the dashboard does not show {names} {want} after {timeout:.0f} s: {states}")
        time.sleep(1)


def wait_links(dash: Dashboard, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        graph = dash.graph()
        if graph["summary"]["links"] >= 1:
            return graph
        if time.monotonic() > deadline:
            raise Failed(f"the dashboard shows no link between the nodes after {timeout:.0f} s: "
                         f"{graph['summary']}")
        time.sleep(1)


def agent_status(ns, state: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        out = ns.run(AGENT, "status", "--state-dir", str(state), "--json", check=False)
        if out.returncode == 0:
            return json.loads(out.stdout)
        if time.monotonic() > deadline:
            raise Failed(f"no status from the agent in {ns.name}: {out.stderr.strip()}")
        time.sleep(0.5)


def nodes(hold: bool) -> None:
    from lab import Lab, free_host_subnet

    stack = load_stack()
    if stack is None:
        raise Failed("the stack is not started: run `containers.py start` first")
    addrs = addresses(stack)
    proxy = addrs.proxy_ip
    dash = Dashboard()
    node_dir = private_dir(STATE / "nodes")
    with Lab() as lab, phase("two nodes enroll, come online, ping"):
        subnet = free_host_subnet()
        bridge = lab.host_bridge(f"{subnet}.1/24", role="ct")
        names, spaces, states = [], {}, {}
        for i, role in enumerate(NODE_ROLES):
            ns = lab.netns(role)
            addr = f"{subnet}.{10 + i}"
            bridge.join(ns, f"{addr}/24", dev="eth0")
            # the way to the proxy is through the host (no default route: nothing else is reachable)
            ns.run("ip", "route", "add", addrs.edge_subnet, "via", f"{subnet}.1")
            name = f"ct-{role}-{lab.prefix[2:]}"
            state = node_dir / name
            token = manage("createtoken").strip().splitlines()[-1]
            print(f"+ ip netns exec {ns.name} shadowmesh-agent enroll --server https://{proxy} "
                  f"--token ... --name {name} --state-dir {state} --server-ca {STATE / 'server-ca.pem'} "
                  f"--endpoint {addr}:8443")
            ns.run(AGENT, "enroll", "--server", f"https://{proxy}", "--token", token, "--name", name,
                   "--state-dir", str(state), "--server-ca", str(STATE / "server-ca.pem"),
                   "--endpoint", f"{addr}:8443", timeout=60)
            print(f"+ ip netns exec {ns.name} shadowmesh-agent up --state-dir {state}")
            lab.spawn(ns, AGENT, "up", "--state-dir", str(state), log=LOGS / f"{name}.log")
            names.append(name)
            spaces[name], states[name] = ns, state
        graph = wait_states(dash, names, "online")
        say(f"dashboard: both online: {graph['summary']}")
        overlay = {n: agent_status(spaces[n], states[n])["node"]["overlay_ip"] for n in names}
        a, b = names
        target = overlay[b].split("/")[0]
        deadline = time.monotonic() + 30
        while True:  # the first pings may go before the peers' handshake
            ping = spaces[a].run("ping", "-c", "3", "-i", "0.2", "-W", "2", target, check=False)
            if ping.returncode == 0 or time.monotonic() > deadline:
                break
        print(ping.stdout.strip().splitlines()[-1] if ping.stdout.strip() else ping.stderr)
        if ping.returncode != 0:
            raise Failed(f"{a} cannot ping {b} ({target}) over the tunnel; logs in {LOGS}")
        graph = wait_links(dash)
        say(f"dashboard: the link's counters arrived (agent -> websocket -> Redis -> PostgreSQL): "
            f"{graph['summary']}")
        status = agent_status(spaces[a], states[a])
        for peer in (p for p in status["peers"] if p["name"] in names):  # not earlier runs' nodes
            say(f"{a} -> {peer['name']}: path {peer['path']}, endpoint {peer['endpoint']}, "
                f"rtt {peer['rtt_ms']} ms, control {peer['control']}")
        say(f"{a}: server {status['node'].get('server')}")
        if hold:
            where = ", ".join(ns.name for ns in spaces.values())
            say(f"holding: the nodes run in {where}; Ctrl-C stops them")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    graph = wait_states(dash, names, "offline")
    say(f"after the nodes stopped, the dashboard shows them offline: {graph['summary']}")


# ------------------------------------------------------------------ status, down


def sizes() -> None:
    out = podman("images", "--filter", f"label={LABEL}", "--format", "{{.Repository}}:{{.Tag}}\t{{.Size}}",
                 check=False).stdout
    for line in sorted(set(out.splitlines())):
        if not line.startswith("<none>"):
            print(f"  {line}")
    tarball = CACHE / f"debian-{SUITE}-minbase.tar"
    if tarball.exists():
        print(f"  {tarball.relative_to(ROOT)}\t{tarball.stat().st_size / 1e6:.0f} MB")


def status() -> None:
    stack = load_stack()
    if stack is None:
        say("no stack started")
    else:
        addrs = addresses(stack)
        say(f"networks {NETWORKS['default']} {addrs.default_subnet} (internal), {NETWORKS['edge']} "
            f"{addrs.edge_subnet}; proxy {addrs.proxy_ip}, published on 127.0.0.1:{cfg.HTTPS_PORT}")
        compose("ps")
    say("images:")
    sizes()


def down(remove_images: bool, everything: bool) -> None:
    stack = load_stack()
    if (STATE / "compose-venv" / "bin" / "podman-compose").exists() and ENV_FILE.exists():
        compose("down", "-v", "-t", "10", check=False, log=LOGS / "compose.log")
    # whatever compose could not remove (no .env any more, a half-started stack)
    label = f"label=com.docker.compose.project={PROJECT}"
    left = podman("ps", "-a", "-q", "--filter", label, check=False).stdout.split()
    if left:
        podman("rm", "-f", "-t", "5", *left, check=False)
    volumes = podman("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
    if volumes:
        podman("volume", "rm", "-f", *volumes, check=False)
    for name in NETWORKS.values():
        podman("network", "rm", "-f", name, check=False)
    run("nft", "delete", "table", "inet", NFT_TABLE, check=False, capture=True, quiet=True)
    if stack and stack.get("ip_forward_before") == "0":
        others = podman("ps", "-q", check=False).stdout.split()
        if others:
            say("IPv4 forwarding left on: other podman containers are running")
        else:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
            say("IPv4 forwarding back off, as it was before `start`")
    if ENV_FILE.exists() and generated(ENV_FILE):
        ENV_FILE.unlink()
    if TLS_DIR.exists() and generated(TLS_DIR):
        shutil.rmtree(TLS_DIR)
    for path in ("stack.json", "server-ca.pem", "viewer-password"):
        (STATE / path).unlink(missing_ok=True)
    shutil.rmtree(STATE / "nodes", ignore_errors=True)
    if remove_images or everything:
        for tag in (SERVER_IMAGE, *IMAGES.values(), BASE_IMAGE):
            podman("rmi", "-f", tag, check=False)
        podman("image", "prune", "-f", "--filter", f"label={LABEL}", check=False)
    if everything:
        shutil.rmtree(CACHE, ignore_errors=True)
        shutil.rmtree(STATE / "compose-venv", ignore_errors=True)
    say("down: containers, volumes, networks, nft table, generated .env, certificates and node state removed"
        + ("; images too" if remove_images or everything else "")
        + ("; and the cached base and podman-compose" if everything else ""))


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "build"):
        p = sub.add_parser(name)
        p.add_argument("--rebuild", action="store_true", help="build the images again even when they exist")
    sub.choices["up"].add_argument("--hold", action="store_true", help="keep the nodes running until Ctrl-C")
    sub.add_parser("start")
    sub.add_parser("nodes").add_argument("--hold", action="store_true")
    sub.add_parser("status")
    p = sub.add_parser("down")
    p.add_argument("--images", action="store_true", help="also remove the images")
    p.add_argument("--all", action="store_true", help="also the cached base tree and podman-compose")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise Failed("run as root (rootful podman, network namespaces)")
    if not Path(AGENT).exists():
        raise Failed("no .venv: run `make venv` first")
    begin = time.monotonic()
    if args.command in ("up", "build"):
        build(args.rebuild)
    if args.command in ("up", "start"):
        start()
    if args.command in ("up", "nodes"):
        nodes(args.hold)
    if args.command == "status":
        status()
    if args.command == "down":
        down(args.images, args.all)
    if TIMES:
        say("times: " + ", ".join(f"{name} {took:.1f} s" for name, took in TIMES)
            + f"; total {time.monotonic() - begin:.1f} s")
    if args.command in ("up", "build"):
        say("images:")
        sizes()


if __name__ == "__main__":
    main()
