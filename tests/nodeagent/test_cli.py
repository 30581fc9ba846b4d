"""shadowmesh-agent command line: keygen, honest refusals, clear errors and exit codes."""

import stat

import pytest

from nodeagent import cli
from nodeagent.identity import IdentityFileError, load_private_key, load_public_key
from nodeagent.protocol.enroll_token import fingerprint_text, make_token
from nodeagent.protocol.identity import peer_id

# a well-formed token (secret '.' CA fingerprint) for a server that is not there
TOKEN = make_token("Ab3_x" + "k" * 38, b"\x01" * 2592)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_a_private_key_only_the_owner_can_read_and_prints_the_peer_id_last(tmp_path, capsys):
    code, out, _ = run(capsys, "keygen", "--out", str(tmp_path / "uk"))
    assert code == 0
    key_mode = stat.S_IMODE((tmp_path / "uk/node.key").stat().st_mode)
    assert key_mode == 0o600
    public = load_public_key(tmp_path / "uk/node.pub")
    assert out.strip().splitlines()[-1] == peer_id(public)
    assert load_private_key(tmp_path / "uk/node.key").public_key == public


def test_keygen_refuses_to_overwrite_an_identity(tmp_path, capsys):
    run(capsys, "keygen", "--out", str(tmp_path))
    code, _, err = run(capsys, "keygen", "--out", str(tmp_path))
    assert code == cli.EXIT_CONFIG and "already exists" in err


def test_a_group_readable_private_key_is_refused_with_the_fix(tmp_path, capsys):
    run(capsys, "keygen", "--out", str(tmp_path))
    (tmp_path / "node.key").chmod(0o640)
    with pytest.raises(IdentityFileError, match=r"chmod 600"):
        load_private_key(tmp_path / "node.key")


def test_a_missing_private_key_is_named(tmp_path):
    with pytest.raises(IdentityFileError, match=r"node\.key: private key file not found"):
        load_private_key(tmp_path / "node.key")


def test_enroll_with_an_unreachable_server_says_so_and_exits_1(tmp_path, capsys):
    # port 9 on loopback: nothing listens there, the connection is refused at once
    code, _, err = run(capsys, "enroll", "--server", "http://127.0.0.1:9", "--token", TOKEN, "--name", "n",
                       "--state-dir", str(tmp_path / "s"))
    assert code == 1 and "cannot reach http://127.0.0.1:9/api/enroll" in err


def test_a_token_that_starts_with_a_dash_is_taken_as_the_token(tmp_path, capsys):
    dashed = "-" + TOKEN
    code, _, err = run(capsys, "enroll", "--server", "http://127.0.0.1:9", "--token", dashed, "--name", "n",
                       "--state-dir", str(tmp_path / "s"))
    assert code == 1 and "cannot reach" in err  # not an argparse usage error (2)


def test_enroll_with_a_bad_endpoint_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(capsys, "enroll", "--server", "http://127.0.0.1:9", "--token", "t", "--name", "n",
                       "--state-dir", str(tmp_path / "s"), "--endpoint", "example.org:8443")
    assert code == 2 and "--endpoint" in err


def test_enroll_with_a_non_http_server_url_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, "enroll", "--server", "ftp://x", "--token", "t", "--name", "n",
                       "--state-dir", str(tmp_path / "s"))
    assert code == 1 and "must be http(s)://host[:port]" in err


@pytest.mark.parametrize("command", ["up", "status"])
def test_a_state_dir_that_was_never_enrolled_is_named_and_exits_3(tmp_path, capsys, command):
    code, _, err = run(capsys, command, "--state-dir", str(tmp_path / "empty"))
    assert code == 3 and "enroll" in err and str(tmp_path / "empty") in err


def write_config(tmp_path, body):
    run_dir = tmp_path / "n"
    cli.main(["keygen", "--out", str(run_dir)])
    path = tmp_path / "n.toml"
    path.write_text(body)
    return path


def test_up_with_a_bad_config_names_file_line_and_key(tmp_path, capsys):
    path = write_config(tmp_path, '[node]\nprivate_key = "n/node.key"\noverlay_ip = "10.10.10.1/24"\n'
                                  'udp_port = 70000\n')
    code, _, err = run(capsys, "up", "--config", str(path))
    assert code == cli.EXIT_CONFIG
    assert f"{path}:4: node.udp_port: port 70000 is outside 1..65535" in err


@pytest.mark.parametrize("flag", [["--dns"], ["--exit-node", "uk"], ["--advertise-exit-node"]])
def test_enrolled_mode_flags_with_a_serverless_config_are_a_usage_error(tmp_path, capsys, flag):
    path = write_config(tmp_path, '[node]\nprivate_key = "n/node.key"\noverlay_ip = "10.10.10.1/24"\n')
    code, _, err = run(capsys, "up", "--config", str(path), *flag)
    assert code == cli.EXIT_USAGE and "--state-dir" in err


def test_up_with_a_missing_key_file_says_which(tmp_path, capsys):
    path = tmp_path / "n.toml"
    path.write_text('[node]\nprivate_key = "gone/node.key"\noverlay_ip = "10.10.10.1/24"\n')
    code, _, err = run(capsys, "up", "--config", str(path))
    assert code == cli.EXIT_CONFIG and "gone/node.key: private key file not found" in err


def test_up_without_net_admin_is_refused_before_touching_the_system(tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path, '[node]\nprivate_key = "n/node.key"\noverlay_ip = "10.10.10.1/24"\n')
    monkeypatch.setattr(cli, "has_net_admin", lambda: False)
    code, _, err = run(capsys, "up", "--config", str(path))
    assert code == cli.EXIT_PERM and "CAP_NET_ADMIN" in err


def test_status_without_a_running_agent_says_so(tmp_path, capsys):
    path = write_config(tmp_path, '[node]\nprivate_key = "n/node.key"\noverlay_ip = "10.10.10.1/24"\n'
                                  f'control_socket = "{tmp_path}/agent.sock"\n')
    code, _, err = run(capsys, "status", "--config", str(path), "--json")
    assert code == cli.EXIT_UNREACHABLE and "no agent socket" in err


def test_status_of_an_enrolled_node_whose_agent_is_not_running_exits_6(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir()
    (state / "server.json").write_text("{}")
    code, _, err = run(capsys, "status", "--state-dir", str(state), "--json")
    assert code == 6 and err


@pytest.mark.parametrize("value", ["localhost:9100", "127.0.0.1", "127.0.0.1:99999", "[::1]", "1.2.3.4:x"])
def test_up_with_a_bad_metrics_address_is_a_usage_error(tmp_path, capsys, value):
    path = write_config(tmp_path, '[node]\nprivate_key = "n/node.key"\noverlay_ip = "10.10.10.1/24"\n')
    code, _, err = run(capsys, "up", "--config", str(path), "--metrics-listen", value)
    assert code == cli.EXIT_USAGE and "--metrics-listen" in err


def test_up_with_an_unknown_log_format_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["up", "--config", str(tmp_path / "n.toml"), "--log-format", "xml"])
    assert exc.value.code == cli.EXIT_USAGE and "--log-format" in capsys.readouterr().err


def test_up_with_a_taken_metrics_port_exits_5_before_creating_anything(tmp_path, capsys, monkeypatch):
    import socket

    ports = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    path = write_config(tmp_path, '[node]\nprivate_key = "n/node.key"\noverlay_ip = "10.10.10.1/24"\n'
                                  f'listen_ip = "127.0.0.1"\nudp_port = {ports[0]}\n'
                                  f'control_port = {ports[1]}\n')
    monkeypatch.setattr(cli, "has_net_admin", lambda: True)
    opened = []
    from nodeagent.tunnel import tun

    monkeypatch.setattr(tun.TunDevice, "open", lambda *a, **k: opened.append(a))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run(capsys, "up", "--config", str(path), "--metrics-listen",
                           f"127.0.0.1:{taken.getsockname()[1]}")
    assert code == cli.EXIT_PORT and "metrics port" in err and "already in use" in err
    assert opened == []  # stopped before the TUN device


def test_a_ca_fingerprint_that_starts_with_a_dash_is_taken_as_the_fingerprint(tmp_path, capsys):
    dashed = fingerprint_text(b"\xf8" + bytes(31))  # URL-safe base64: 0xf8 begins with "-"
    assert dashed.startswith("-")
    code, _, err = run(capsys, "enroll", "--server", "http://127.0.0.1:9", "--token", TOKEN, "--name", "n",
                       "--state-dir", str(tmp_path / "s"), "--ca-fingerprint", dashed)
    assert code != 2 and "expected one argument" not in err, err  # not an argparse usage error
