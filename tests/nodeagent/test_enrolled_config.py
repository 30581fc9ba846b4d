"""Enrolled mode's local settings (agent.json) and the netmap peer -> PeerConfig conversion."""

import ipaddress
import json

import pytest

from nodeagent.config import (
    ConfigError,
    enrolled_interface,
    enrolled_settings,
    netmap_peer_config,
    parse_endpoint,
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
