"""Serverless TOML config: good files load, bad ones name file, line and key."""

import base64
import ipaddress
import textwrap

import pytest

from nodeagent.config import ConfigError, default_interface, load_config
from nodeagent.identity import generate


@pytest.fixture
def keys(tmp_path):
    """Three identities on disk: this node ("uk") and two peers."""
    return {name: generate(tmp_path / name) for name in ("uk", "mac", "belgium")}


def write(tmp_path, body):
    path = tmp_path / "mesh.toml"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


GOOD = """
[node]
private_key = "uk/node.key"
overlay_ip = "10.10.10.3/24"
listen_ip = "198.18.0.3"
public = true

[[peer]]
public_key = "mac/node.pub"
overlay_ip = "10.10.10.8"
endpoint = "198.18.0.8"
allowed_ips = ["192.168.8.0/24"]

[[peer]]
public_key = "belgium/node.pub"
overlay_ip = "10.10.10.5"
"""


def test_the_design_example_loads_with_defaults(tmp_path, keys):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.private_key_path == tmp_path / "uk/node.key"
    assert cfg.overlay == ipaddress.ip_interface("10.10.10.3/24")
    assert (cfg.control_port, cfg.udp_port, cfg.public) == (8443, 9443, True)
    assert cfg.name == "mesh"
    mac, belgium = cfg.peers
    assert mac.peer_id == keys["mac"].peer_id
    assert mac.endpoint == ("198.18.0.8", 8443)
    assert mac.routed == (ipaddress.ip_network("10.10.10.8/32"), ipaddress.ip_network("192.168.8.0/24"))
    assert belgium.endpoint is None and belgium.via is None
    assert cfg.interface == default_interface(tmp_path / "mesh.toml")
    assert str(cfg.control_socket) == f"/run/shadowmesh/{cfg.interface}.sock"


def test_default_interface_names_differ_per_config_file_and_fit_ifnamsiz(tmp_path):
    a, b = default_interface(tmp_path / "a.toml"), default_interface(tmp_path / "b.toml")
    assert a != b and len(a) <= 15 and a == default_interface(tmp_path / "a.toml")


def test_a_public_key_may_be_given_inline_as_base64(tmp_path, keys):
    inline = base64.b64encode(keys["mac"].public_key).decode()
    body = GOOD.replace('"mac/node.pub"', f'"{inline}"')
    assert load_config(write(tmp_path, body)).peers[0].peer_id == keys["mac"].peer_id


def test_an_endpoint_may_carry_a_port_and_ipv6_brackets(tmp_path, keys):
    body = GOOD.replace('endpoint = "198.18.0.8"', 'endpoint = "[2001:db8::8]:9000"')
    assert load_config(write(tmp_path, body)).peers[0].endpoint == ("2001:db8::8", 9000)


def error_for(tmp_path, body):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, body))
    return info.value


def test_a_syntax_error_names_the_line(tmp_path, keys):
    err = error_for(tmp_path, GOOD.replace('public = true', 'public = = true'))
    assert err.line == 5 and "syntax" in str(err) and "mesh.toml:5" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "words"),
    [
        ('overlay_ip = "10.10.10.3/24"', 'overlay_ip = "10.10.10.3"', 3, "node.overlay_ip", "prefix"),
        ('overlay_ip = "10.10.10.8"', 'overlay_ip = "10.10.10.300"', 9, "peer[0].overlay_ip", "not an IP"),
        ('public = true', 'public = "yes"', 5, "node.public", "true or false"),
        ('public = true', 'publik = true', 5, "node.publik", "unknown key"),
        ('endpoint = "198.18.0.8"', 'endpoint = "example.org"', 10, "peer[0].endpoint", "IP address"),
        ('endpoint = "198.18.0.8"', 'endpoint = "198.18.0.8:99999"', 10, "peer[0].endpoint", "1..65535"),
        ('"192.168.8.0/24"', '"192.168.8.1/24"', 11, "peer[0].allowed_ips", "not a network prefix"),
        ('overlay_ip = "10.10.10.5"', 'overlay_ip = "10.10.10.8"', 15, "peer[1].overlay_ip", "already used"),
        ('overlay_ip = "10.10.10.5"', 'overlay_ip = "10.10.10.5"\nvia = "00"', 16, "peer[1].via", "peer id"),
        ('"belgium/node.pub"', '"nowhere/node.pub"', 14, "peer[1].public_key", "not found"),
    ],
)
def test_a_bad_value_names_its_file_line_and_key(tmp_path, keys, old, new, line, key, words):
    err = error_for(tmp_path, GOOD.replace(old, new))
    assert (err.line, err.key) == (line, key)
    assert words in err.message
    assert str(err).startswith(f"{tmp_path / 'mesh.toml'}:{line}: {key}: ")


def test_a_relay_must_be_a_configured_peer_with_an_endpoint(tmp_path, keys):
    stranger = "ab" * 20
    err = error_for(tmp_path, GOOD + f'via = "{stranger}"\n')
    assert err.key == "peer[1].via" and "not one of the configured peers" in err.message
    belgium_via_self = GOOD + f'via = "{keys["belgium"].peer_id}"\n'
    assert "itself" in error_for(tmp_path, belgium_via_self).message


def test_a_relayed_peer_is_accepted_when_the_relay_has_an_endpoint(tmp_path, keys):
    cfg = load_config(write(tmp_path, GOOD + f'via = "{keys["mac"].peer_id}"\n'))
    assert cfg.peers[1].via == keys["mac"].peer_id


def test_the_same_peer_twice_is_refused(tmp_path, keys):
    body = GOOD + '\n[[peer]]\npublic_key = "mac/node.pub"\noverlay_ip = "10.10.10.9"\n'
    err = error_for(tmp_path, body)
    assert err.key == "peer[2].public_key" and "same key as peer[0]" in err.message


def test_a_missing_node_table_and_a_missing_file_are_reported(tmp_path):
    assert "[node]" in error_for(tmp_path, "[[peer]]\n").message
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_a_too_long_interface_name_is_refused(tmp_path, keys):
    err = error_for(tmp_path, GOOD.replace("public = true", 'public = true\ninterface = "x234567890123456"'))
    assert err.key == "node.interface" and err.line == 6


@pytest.mark.parametrize("example", ["uk.toml", "belgium.toml"])
def test_the_shipped_examples_load_once_their_keys_exist(tmp_path, example):
    from pathlib import Path

    ids = {name: generate(tmp_path / name).peer_id for name in ("uk", "belgium", "starlink", "mac")}
    text = (Path(__file__).parents[2] / "examples" / example).read_text()
    path = tmp_path / example
    path.write_text(text.replace("<peer id of uk, printed by keygen>", ids["uk"]))
    cfg = load_config(path)
    assert cfg.name == example.removesuffix(".toml") and len(cfg.peers) == 3


# Found with the loader's fuzz harness (fuzz/fuzz_config.py, docs/fuzzing.md): the NUL and the bare
# carriage return by the fuzzer itself, the others while writing down what the harness asserts.
# Each escaped as another exception than ConfigError before (or, for the integer route and the
# device, was quietly misread).
@pytest.mark.parametrize(
    ("old", "new", "line", "key", "words"),
    [
        # Path.expanduser raised RuntimeError
        ('"uk/node.key"', '"~no-such-user-here/node.key"', 2, "node.private_key", "no such user"),
        # open() raised ValueError (embedded null byte)
        ('"belgium/node.pub"', '"belgium/node\\u0000.pub"', 14, "peer[1].public_key", "NUL"),
        # int("²") raised ValueError: str.isdigit() is true for digits of other scripts
        ('endpoint = "198.18.0.8"', 'endpoint = "198.18.0.8:\u00b2"', 10, "peer[0].endpoint", "number"),
        # ip_network(5) is 0.0.0.5/32: an integer was taken as a route
        ('"192.168.8.0/24"', '5', 11, "peer[0].allowed_ips", "not a network prefix"),
        # a device read without end, and any other file that is not a key file
        ('"belgium/node.pub"', '"/dev/zero"', 14, "peer[1].public_key", "not a regular file"),
    ],
)
def test_odd_values_found_by_fuzzing_are_config_errors_naming_the_line(tmp_path, keys, old, new, line,
                                                                        key, words):
    err = error_for(tmp_path, GOOD.replace(old, new))
    assert (err.line, err.key) == (line, key)
    assert words in err.message


def test_a_bracketed_endpoint_port_takes_ascii_digits_only(tmp_path, keys):
    arabic_indic_12 = "\u0661\u0662"
    body = GOOD.replace('endpoint = "198.18.0.8"', f'endpoint = "[2001:db8::8]:{arabic_indic_12}"')
    err = error_for(tmp_path, body)
    assert (err.line, err.key) == (10, "peer[0].endpoint")


def test_deeply_nested_values_are_a_syntax_error_not_a_recursion_error(tmp_path, keys):
    err = error_for(tmp_path, GOOD + "x = " + "[" * 5000 + "\n")
    assert "syntax" in str(err) and str(err).startswith(str(tmp_path / "mesh.toml"))


def test_the_file_is_parsed_as_written_a_bare_carriage_return_is_a_syntax_error(tmp_path, keys):
    # read_text() turned a lone CR into a line break, so TOML that the standard refuses loaded,
    # and the lines reported were not the file's
    path = tmp_path / "mesh.toml"
    path.write_bytes(textwrap.dedent(GOOD).lstrip().replace("\n", "\r").encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 1 and "syntax" in str(info.value)
POLICY = GOOD + """
[policy]
default = "deny"

[[policy.rule]]
from = ["10.10.10.8", "192.168.8.0/24"]
to = ["10.10.10.3"]
proto = "tcp"
ports = "22, 8000-8080"

[[policy.rule]]
from = ["10.10.10.3"]
to = ["10.10.10.0/24"]
"""


def test_a_policy_table_loads_into_the_netmap_form(tmp_path, keys):
    cfg = load_config(write(tmp_path, POLICY))
    assert cfg.policy.default == "deny" and cfg.policy.filters
    tcp, anything = sorted(cfg.policy.rules, key=lambda r: r.proto, reverse=True)
    assert tcp.src == ("10.10.10.8/32", "192.168.8.0/24") and tcp.dst == ("10.10.10.3/32",)
    assert tcp.proto == "tcp" and tcp.ports == ((22, 22), (8000, 8080))
    assert anything.proto == "any" and anything.ports == () and anything.dst == ("10.10.10.0/24",)


def test_without_a_policy_table_everything_is_let_in(tmp_path, keys):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.policy.default == "allow" and not cfg.policy.filters and cfg.policy.rules == ()


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "words"),
    [
        ('default = "deny"', 'default = "drop"', 18, "policy.default", "allow"),
        ('default = "deny"', 'default = "allow"', 18, "policy.default", "must be \"deny\""),
        ('proto = "tcp"', 'proto = "sctp"', 23, "policy.rule[0].proto", "must be one of"),
        ('ports = "22, 8000-8080"', 'ports = "22, 80000"', 24, "policy.rule[0].ports", "1..65535"),
        ('to = ["10.10.10.3"]', 'to = ["10.10.10.3/24"]', 22, "policy.rule[0].to", "host bits"),
        ('to = ["10.10.10.3"]', 'to = []', 22, "policy.rule[0].to", "at least one"),
        ('to = ["10.10.10.3"]', 'to = "10.10.10.3"', 22, "policy.rule[0].to", "a list"),
        ('to = ["10.10.10.0/24"]', 'to = ["10.10.10.0/24"]\nports = "22"', 29, "policy.rule[1].ports",
         "only tcp and udp"),
        ('proto = "tcp"', 'proto = "tcp"\ncolor = "red"', 24, "policy.rule[0].color", "unknown key"),
    ],
)
def test_a_bad_policy_names_its_line_and_key(tmp_path, keys, old, new, line, key, words):
    text = textwrap.dedent(POLICY).lstrip()
    assert old in text
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text.replace(old, new, 1)))
    assert err.value.line == line, str(err.value)
    assert err.value.key == key and words in err.value.message, str(err.value)
