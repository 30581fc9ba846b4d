"""scripts/containers_config.py: what scripts/containers.py writes for the local container stack
(docs/containers.md), computed without touching the machine."""

import ast
import ipaddress
import re
import socket
import ssl
import sys
import threading
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import containers_config as cfg  # noqa: E402

EXAMPLE = (ROOT / "docker" / ".env.example").read_text()
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _values():
    return cfg.local_env_values(cfg.StackAddresses(250), postgres_password="p" * 20, redis_password="r" * 20,
                                secret_key="s" * 60)


def _env(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


def test_the_module_does_no_io():
    tree = ast.parse((ROOT / "scripts" / "containers_config.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"os", "subprocess", "socket", "shutil", "time", "pathlib", "urllib"}


def test_the_stack_takes_the_first_free_slash_24_and_skips_overlapping_interfaces():
    ip_addr = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
               "5: smab12cdbr    inet 198.19.250.1/24 brd 198.19.250.255 scope global smab12cdbr\n"
               "7: podman9    inet 198.19.251.129/29 brd 198.19.251.135 scope global podman9\n")
    assert cfg.pick_stack_addresses(ip_addr).third_octet == 252
    assert cfg.pick_stack_addresses("").third_octet == 250
    # a wider prefix covering the whole candidate range leaves nothing
    with pytest.raises(ValueError, match="all in use"):
        cfg.pick_stack_addresses("3: big    inet 198.19.0.1/16 scope global big\n")


@pytest.mark.parametrize("n", list(cfg.STACK_THIRD_OCTETS))
def test_the_stack_addresses_are_disjoint_inside_the_underlay_and_the_proxy_is_never_handed_out(n):
    addrs = cfg.StackAddresses(n)
    default, edge = (ipaddress.ip_network(s) for s in addrs.subnets)
    underlay = ipaddress.ip_network(cfg.UNDERLAY)
    assert default.subnet_of(underlay) and edge.subnet_of(underlay) and not default.overlaps(edge)
    proxy, gateway = ipaddress.ip_address(addrs.proxy_ip), ipaddress.ip_address(addrs.edge_gateway)
    dynamic = ipaddress.ip_network(addrs.edge_dynamic_range)
    assert proxy in edge and gateway in edge and dynamic.subnet_of(edge)
    assert proxy not in dynamic and gateway not in dynamic and proxy != gateway
    assert proxy not in (edge.network_address, edge.broadcast_address)
    # the lab picks its host subnets from 198.19.10..249 (lab/links.py free_host_subnet)
    assert not 10 <= n <= 249


def test_the_generated_env_keeps_every_setting_of_the_example_and_fills_in_the_stack():
    text = cfg.render_env(EXAMPLE, _values())
    env, example = _env(text), _env(EXAMPLE)
    assert text.splitlines()[0] == cfg.ENV_MARKER
    assert set(example) <= set(env)
    assert len(text.splitlines()) >= len(EXAMPLE.splitlines())  # comments kept
    assert not [k for k, v in env.items() if "change-me" in v or "example.com" in v]
    addrs = cfg.StackAddresses(250)
    assert env["SHADOWMESH_TRUSTED_PROXIES"] == env["LOCAL_PROXY_IP"] == addrs.proxy_ip
    assert env["SHADOWMESH_PUBLIC_URL"] == f"https://{addrs.proxy_ip}"
    assert set(env["SHADOWMESH_ALLOWED_HOSTS"].split(",")) == {addrs.proxy_ip, "127.0.0.1", "localhost"}
    assert f"https://127.0.0.1:{cfg.HTTPS_PORT}" in env["SHADOWMESH_CSRF_TRUSTED_ORIGINS"].split(",")
    assert env["DATABASE_URL"] == f"postgres://shadowmesh:{env['POSTGRES_PASSWORD']}@postgres:5432/shadowmesh"
    assert env["REDIS_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    assert env["SHADOWMESH_PRODUCTION"] == example["SHADOWMESH_PRODUCTION"] == "1"  # as in production


def test_the_generated_env_refuses_values_that_would_break_it():
    addrs = cfg.StackAddresses(250)
    with pytest.raises(ValueError, match="postgres_password"):
        cfg.local_env_values(addrs, postgres_password="short", redis_password="r" * 20, secret_key="s" * 60)
    with pytest.raises(ValueError, match="redis_password"):
        cfg.local_env_values(addrs, postgres_password="p" * 20, redis_password="a@b" * 8, secret_key="s" * 60)
    with pytest.raises(ValueError, match="secret_key"):
        cfg.local_env_values(addrs, postgres_password="p" * 20, redis_password="r" * 20, secret_key="s" * 49)
    with pytest.raises(ValueError, match="one line"):
        cfg.render_env(EXAMPLE, {"SHADOWMESH_LOG_LEVEL": "INFO\nSHADOWMESH_DEBUG=1"})


def test_podman_runs_with_runc_cgroupfs_and_ulimits_within_roots_hard_limits():
    conf = tomllib.loads(cfg.containers_conf())
    assert conf["engine"] == {"runtime": "runc", "cgroup_manager": "cgroupfs", "events_logger": "file"}
    assert conf["network"]["network_backend"] == "netavark"
    limits = dict(u.split("=") for u in conf["containers"]["default_ulimits"])
    assert set(limits) == {"nofile", "nproc"}
    for value in limits.values():
        soft, hard = (int(v) for v in value.split(":"))
        assert 0 < soft <= hard


def test_the_guard_drops_forwarded_traffic_between_the_stack_and_anything_outside_the_underlay():
    rules = cfg.guard_ruleset("shadowmesh_local", cfg.StackAddresses(251).subnets)
    assert "hook forward" in rules
    assert "ip saddr { 198.19.251.0/25, 198.19.251.128/29 } ip daddr != 198.18.0.0/15 counter drop" in rules
    assert "ip daddr { 198.19.251.0/25, 198.19.251.128/29 } ip saddr != 198.18.0.0/15 counter drop" in rules
    with pytest.raises(ValueError, match="must lie in"):
        cfg.guard_ruleset("shadowmesh_local", ("10.250.0.0/29",))
    with pytest.raises(ValueError, match="table name"):
        cfg.guard_ruleset("x; flush ruleset", cfg.StackAddresses(251).subnets)


def test_the_throwaway_certificate_is_signed_by_its_ca_for_the_given_addresses():
    tls = cfg.throwaway_tls(["198.19.250.134", "127.0.0.1"], ["localhost"], NOW)
    ca = x509.load_pem_x509_certificate(tls.ca_pem)
    leaf, chained_ca = x509.load_pem_x509_certificates(tls.chain_pem)
    assert chained_ca == ca
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"198.19.250.134", "127.0.0.1"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_before_utc <= NOW < leaf.not_valid_after_utc


def test_a_client_trusting_only_the_throwaway_ca_completes_a_tls_handshake_with_its_certificate(tmp_path):
    tls = cfg.throwaway_tls(["127.0.0.1"], ["localhost"], datetime.now(UTC))
    (tmp_path / "chain.pem").write_bytes(tls.chain_pem)
    (tmp_path / "key.pem").write_bytes(tls.key_pem)
    (tmp_path / "ca.pem").write_bytes(tls.ca_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
            tls_conn.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=tmp_path / "ca.pem")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        assert conn.recv(2) == b"ok"
    thread.join(10)
    listener.close()
    # and a client with the system's CAs only refuses it
    with socket.create_server(("127.0.0.1", 0)) as other:
        other.settimeout(10)
        port = other.getsockname()[1]
        thread = threading.Thread(target=lambda: _accept_and_fail(other, server_ctx), daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
        thread.join(10)


def _accept_and_fail(listener, ctx):
    conn, _ = listener.accept()
    try:
        ctx.wrap_socket(conn, server_side=True).close()
    except (ssl.SSLError, OSError):
        conn.close()


def test_the_images_use_the_debian_mirrors_of_the_hosts_apt_sources():
    deb822 = ("Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nEnabled: no\n\n"
              "Types: deb\n# a comment between fields\nURIs: http://mirror.example/debian\n"
              "Suites: bookworm bookworm-updates\nComponents: main\n\n"
              "Types: deb deb-src\nURIs: http://mirror.example/debian-security/\nSuites: bookworm-security\n"
              "Components: main\n")
    other = "deb [arch=amd64 signed-by=/k.gpg] https://vendor.example/apt vendor-bookworm main\n"
    assert cfg.debian_mirrors([other, deb822], "bookworm") == (
        "http://mirror.example/debian", "http://mirror.example/debian-security")
    one_line = ("# deb http://old.example/debian bookworm main\n"
                "deb http://local.example/debian/ bookworm main\n")
    assert cfg.debian_mirrors([one_line], "bookworm") == ("http://local.example/debian", None)
    with pytest.raises(ValueError, match="serves bookworm"):
        cfg.debian_mirrors([other], "bookworm")
    sources = cfg.sources_deb822("trixie", "http://local.example/debian", None)
    assert "Suites: trixie trixie-updates" in sources and "security" not in sources
    assert "URIs: http://mirror.example/debian-security\nSuites: trixie-security" in cfg.sources_deb822(
        "trixie", "http://mirror.example/debian", "http://mirror.example/debian-security")
