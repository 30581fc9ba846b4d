"""Enrolled mode's local settings (agent.json) and the netmap peer -> PeerConfig conversion."""

import ipaddress
import json

import pytest

from nodeagent import enrolled
from nodeagent.config import AgentConfig, ConfigError, parse_endpoint
from nodeagent.enrolled import (
    advertised_endpoints,
    enrolled_interface,
    enrolled_settings,
    local_address_towards,
    netmap_peer_config,
)
from nodeagent.protocol import netmap as nm

MAC = "ab" * 20
UK = "cd" * 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.0.8", ("198.18.0.8", 8443)),
        ("198.18.0.8:9000", ("198.18.0.8", 9000)),
        ("[2001:db8::1]:9000", ("2001:db8::1", 9000)),
        ("[2001:db8::1]", ("2001:db8::1", 8443)),
    ],
)
def test_an_endpoint_is_an_address_with_an_optional_port(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["example.org:8443", "198.18.0.8:x", "198.18.0.8:0", "198.18.0.8:70000", ""])
def test_a_bad_endpoint_is_refused(text):
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_settings_default_to_the_standard_ports_when_agent_json_is_absent(tmp_path):
    s = enrolled_settings(tmp_path)
    assert (s["control_port"], s["udp_port"], s["endpoint"]) == (8443, 9443, None)
    assert str(s["listen_ip"]) == "0.0.0.0"


def test_enroll_may_keep_the_exit_node_offer(tmp_path):
    assert enrolled_settings(tmp_path)["advertise_exit_node"] is False
    (tmp_path / "agent.json").write_text(json.dumps({"advertise_exit_node": True}))
    assert enrolled_settings(tmp_path)["advertise_exit_node"] is True


def test_settings_read_the_port_enroll_kept(tmp_path):
    (tmp_path / "agent.json").write_text(json.dumps({"endpoint": "198.18.0.3:8555", "control_port": 8555}))
    s = enrolled_settings(tmp_path)
    assert s["control_port"] == 8555 and s["endpoint"] == "198.18.0.3:8555"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"control_port": true}', "control_port"),
        ('{"udp_port": 0}', "udp_port"),
        ('{"colour": "red"}', "unknown key"),
        ("[1]", "JSON object"),
        ("{", "unreadable"),
        ('{"listen_ip": "nowhere"}', "not an IP address"),
        ('{"advertise_exit_node": "yes"}', "advertise_exit_node"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path, body, message):
    (tmp_path / "agent.json").write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        enrolled_settings(tmp_path)
    assert "agent.json" in str(info.value)


def test_the_interface_name_is_stable_per_state_dir_and_differs_between_them(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert enrolled_interface(a) == enrolled_interface(a)
    assert enrolled_interface(a) != enrolled_interface(b)
    assert len(enrolled_interface(a)) <= 15


def test_a_netmap_peer_becomes_a_peer_config_with_its_routes_and_fallback_relay():
    peer = nm.Peer(peer_id=MAC, name="mac", overlay_ip="10.10.10.4", fingerprint="0" * 64,
                   endpoints=(nm.Endpoint("198.18.0.8", 8443, 9443),), relay=UK)
    routes = (nm.Route("192.168.77.0/24", MAC), nm.Route("192.168.5.0/24", UK))
    pc = netmap_peer_config(peer, routes)
    assert pc.peer_id == MAC and pc.name == "mac" and pc.via == UK
    assert pc.endpoint == ("198.18.0.8", 8443)
    assert pc.allowed_ips == (ipaddress.ip_network("192.168.77.0/24"),)
    assert pc.routed == (ipaddress.ip_network("10.10.10.4/32"), ipaddress.ip_network("192.168.77.0/24"))


def test_a_peer_without_endpoints_is_waited_for():
    peer = nm.Peer(peer_id=MAC, name="mac", overlay_ip="10.10.10.4", fingerprint="0" * 64)
    assert netmap_peer_config(peer, ()).endpoint is None


@pytest.mark.parametrize("ip", ["127.0.0.1", "0.0.0.0", "::", "169.254.169.254", "fe80::1", "224.0.0.251",
                                "ff02::1", "255.255.255.255", "::ffff:127.0.0.1", "0.1.2.3"])
def test_a_netmap_endpoint_no_peer_should_be_sent_to_is_never_dialed(ip):
    """Attack 5 of issue 9: a compromised node (or server) names an address that is not a peer."""
    peer = nm.Peer(peer_id=MAC, name="mac", overlay_ip="10.10.10.4", fingerprint="0" * 64,
                   endpoints=(nm.Endpoint(ip, 8443, 9443),))
    assert netmap_peer_config(peer, ()).endpoint is None
    # a later endpoint that is fine is used instead
    both = nm.Peer(peer_id=MAC, name="mac", overlay_ip="10.10.10.4", fingerprint="0" * 64,
                   endpoints=(nm.Endpoint(ip, 8443, 9443), nm.Endpoint("198.18.0.8", 8443, 9443, "observed")))
    assert netmap_peer_config(both, ()).endpoint == ("198.18.0.8", 8443)


def test_loopback_netmap_endpoints_are_dialed_only_when_allowed():
    peer = nm.Peer(peer_id=MAC, name="mac", overlay_ip="10.10.10.4", fingerprint="0" * 64,
                   endpoints=(nm.Endpoint("127.0.0.1", 8443, 9443),))
    assert netmap_peer_config(peer, ()).endpoint is None
    assert netmap_peer_config(peer, (), allow_loopback=True).endpoint == ("127.0.0.1", 8443)


def _config(tmp_path, listen_ip: str) -> AgentConfig:
    return AgentConfig(path=tmp_path, name="uk", private_key_path=tmp_path / "node.key",
                       overlay=ipaddress.ip_interface("10.10.10.1/24"),
                       listen_ip=ipaddress.ip_address(listen_ip),
                       control_port=8500, udp_port=9500, public=False, interface="smtest", mtu=None,
                       control_socket=tmp_path / "s.sock")


def test_the_advertised_endpoint_is_the_enrolled_one_else_the_listen_address_else_the_way_out(tmp_path,
                                                                                              monkeypatch):
    settings = {"endpoint": "[2001:db8::7]:8500", "control_port": 8500, "udp_port": 9500, "listen_ip": None}
    server = "http://127.0.0.1:8000"
    ep = advertised_endpoints(settings, _config(tmp_path, "0.0.0.0"), server)
    assert ep == (nm.Endpoint("2001:db8::7", 8500, 9500),)
    settings["endpoint"] = None
    assert advertised_endpoints(settings, _config(tmp_path, "198.18.0.5"), server)[0].ip == "198.18.0.5"
    # listening on every address: the source address the kernel picks towards the server...
    assert local_address_towards(server) == "127.0.0.1"
    monkeypatch.setattr(enrolled, "local_address_towards", lambda url: "198.18.0.9")
    assert advertised_endpoints(settings, _config(tmp_path, "0.0.0.0"), server)[0].ip == "198.18.0.9"


def test_an_address_inside_the_overlay_is_never_advertised(tmp_path, monkeypatch):
    """Our own overlay address as the way out (the server's route goes into the tunnel) or as the
    listen address: a peer could reach it only through the tunnel it is meant to set up."""
    settings = {"endpoint": None, "control_port": 8500, "udp_port": 9500, "listen_ip": None}
    monkeypatch.setattr(enrolled, "local_address_towards", lambda url: "10.10.10.1")
    assert advertised_endpoints(settings, _config(tmp_path, "0.0.0.0"), "http://198.18.0.1:8000") == ()
    assert advertised_endpoints(settings, _config(tmp_path, "10.10.10.7"), "http://198.18.0.1:8000") == ()
    monkeypatch.setattr(enrolled, "local_address_towards", lambda url: "10.10.11.1")  # outside the /24
    assert advertised_endpoints(settings, _config(tmp_path, "0.0.0.0"),
                                "http://198.18.0.1:8000")[0].ip == "10.10.11.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "fe80::1"])
def test_an_address_no_peer_can_use_is_not_advertised(tmp_path, monkeypatch, host):
    """A way out over loopback (the server on this host) or a bad --endpoint: nothing is advertised
    rather than an address the server and every peer would refuse."""
    settings = {"endpoint": None, "control_port": 8500, "udp_port": 9500, "listen_ip": None}
    monkeypatch.setattr(enrolled, "local_address_towards", lambda url: host)
    assert advertised_endpoints(settings, _config(tmp_path, "0.0.0.0"), "http://127.0.0.1:8000") == ()
    settings["endpoint"] = f"[{host}]:8500" if ":" in host else f"{host}:8500"
    assert advertised_endpoints(settings, _config(tmp_path, "0.0.0.0"), "http://127.0.0.1:8000") == ()


def test_an_agent_listening_on_loopback_advertises_its_loopback_address(tmp_path):
    settings = {"endpoint": None, "control_port": 8500, "udp_port": 9500, "listen_ip": None}
    ep = advertised_endpoints(settings, _config(tmp_path, "127.0.0.1"), "http://127.0.0.1:8000")
    assert ep == (nm.Endpoint("127.0.0.1", 8500, 9500),)
