"""The benchmark's parsing and verdicts, on recorded tool output (no network, no root).

.venv/bin/pytest bench/test_parsers.py
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure
import report

PING_OUTPUT = "\n".join(
    [
        f"64 bytes from 10.10.10.2: icmp_seq={i} ttl=64 time={t} ms"
        for i, t in enumerate([0.3] * 98 + [0.9, 5.0])
    ]
    + ["", "--- 10.10.10.2 ping statistics ---", "100 packets transmitted, 100 received, 0% packet loss"]
)


def test_ping_average_and_nearest_rank_p99_come_from_the_replies():
    avg, p99, n = measure.parse_ping(PING_OUTPUT)
    assert n == 100
    assert math.isclose(avg, (0.3 * 98 + 0.9 + 5.0) / 100)
    assert p99 == 0.9  # 99th of 100 sorted values, not the maximum


def test_ping_without_replies_gives_nan_not_zero():
    avg, p99, n = measure.parse_ping("From 198.19.1.1 icmp_seq=1 Destination Host Unreachable\n")
    assert n == 0 and math.isnan(avg) and math.isnan(p99)


def test_udp_report_separates_sender_rate_receiver_goodput_and_loss():
    doc = {
        "end": {
            "sum_sent": {"bits_per_second": 300e6, "lost_percent": 0},
            "sum_received": {"bits_per_second": 136e6, "lost_percent": 54.4},
            "sum": {"bits_per_second": 300e6, "lost_percent": 54.4},
        }
    }
    assert measure.parse_udp(doc) == (300.0, 136.0, 54.4)


def test_udp_report_of_older_iperf3_derives_goodput_from_the_loss():
    sent, got, loss = measure.parse_udp({"end": {"sum": {"bits_per_second": 300e6, "lost_percent": 10.0}}})
    assert (sent, loss) == (300.0, 10.0)
    assert math.isclose(got, 270.0)


def test_failed_iperf3_run_gives_nan_columns():
    assert all(math.isnan(x) for x in measure.parse_udp({"error": "unable to connect"}))
    assert all(math.isnan(x) for x in measure.parse_tcp({}))


def _net(sm_tcp=None, skipped=None):
    def row(tunnel, tcp, rtt, loss=0.0):
        return {
            "tunnel": tunnel,
            "run": 1,
            "tcp_mbps": tcp,
            "tcp_retr": 0,
            "udp_mbps": 300,
            "udp_sent_mbps": 300,
            "udp_loss_pct": loss,
            "rtt_avg_ms": rtt,
            "rtt_p99_ms": rtt * 2,
            "tun_cpu_tcp": 100,
            "tun_cpu_udp": 50,
            "sys_busy_pct": 90,
            "idle_busy_pct": 5,
            "loadavg1": 1.0,
        }

    rows = [row("wireguard-go", 500, 0.5), row("nebula", 700, 0.4)]
    tunnels = {"wireguard-go": {}, "nebula": {}, "shadowmesh": {"rss_idle_mb": [45.0, 46.0]}}
    if skipped:
        tunnels["shadowmesh"] = {"skipped": skipped}
    else:
        rows.append(row("shadowmesh", sm_tcp, 0.45, loss=0.05))
    return {"knobs": {"udp_rate": "300M"}, "rows": rows, "tunnels": tunnels}


def _verdicts(markdown):
    return [line.rsplit("|", 2)[1].strip() for line in markdown.splitlines()[2:]]


def test_targets_are_judged_against_the_same_run():
    verdicts = _verdicts(report.targets_markdown(_net(sm_tcp=950), None))
    # 950 < 2 x 500 (not met), 950 >= 1.3 x 700 (met), RTT 0.45 > 0.40 (not met), loss 0.05 % (met),
    # no handshake results (not measured), RSS 46 MB (met)
    assert verdicts == ["**not met**", "**met**", "**not met**", "**met**", "not measured", "**met**"]


def test_a_skipped_shadowmesh_leg_is_not_measured_and_says_why():
    text = report.targets_markdown(_net(skipped="no ping reply from 10.10.10.2 within 30 s"), None)
    assert _verdicts(text) == ["not measured"] * 6
    assert "no ping reply" in text


def test_the_100_rule_policy_lets_the_measurement_through_and_nothing_else_of_it(tmp_path):
    """The leg `shadowmesh-policy100`: the agent accepts the generated [policy] (100 rules, default
    deny), and its compiled rules allow a's iperf3 TCP and UDP and its pings to b, and no other port."""
    import ipaddress
    import subprocess

    import tunnels

    from nodeagent.config import load_config
    from nodeagent.policy.index import RuleIndex

    text = tunnels.policy_toml()
    assert text.count("[[policy.rule]]") == tunnels.POLICY_RULES == 100
    agent = tunnels.agent_binary()
    for side in "ab":
        subprocess.run([str(agent), "keygen", "--out", str(tmp_path / side)], check=True, capture_output=True)
    config = tmp_path / "a.toml"
    config.write_text(tunnels._SM_TOML.format(
        me="a", dev="smx", sock=tmp_path / "a.sock", overlay="10.10.10.1", underlay="198.19.0.1", peer="b",
        peer_overlay="10.10.10.2", peer_underlay="198.19.0.2") + "\n" + text)
    policy = load_config(config).policy
    assert policy.default == "deny" and len(policy.rules) == 100
    index = RuleIndex.build(policy.rules)
    a, b = (ipaddress.ip_address(x).packed for x in ("10.10.10.1", "10.10.10.2"))
    assert index.allows(a, b, 6, 5201) and index.allows(a, b, 17, 5201) and index.allows(a, b, 1, None)
    assert not index.allows(a, b, 6, 5202) and not index.allows(a, b, 17, 53)
    assert not index.allows(b, a, 6, 5201)


def test_the_knob_leg_adds_its_variables_after_the_common_ones(monkeypatch):
    """The leg `shadowmesh-knob`: this build with SM_KNOB_ENV on top of SM_AGENT_ENV."""
    import tunnels

    monkeypatch.setenv("SM_AGENT_ENV", "SHADOWMESH_CHUNKS=0 SHADOWMESH_EVENT_LOOP=uvloop")
    monkeypatch.setenv("SM_KNOB_ENV", "SHADOWMESH_EVENT_LOOP=asyncio SHADOWMESH_BUSY_POLL_US=300")
    env = tunnels.agent_env(tunnels.knob_env())
    assert env["SHADOWMESH_CHUNKS"] == "0" and env["SHADOWMESH_BUSY_POLL_US"] == "300"
    assert env["SHADOWMESH_EVENT_LOOP"] == "asyncio"
    assert "SHADOWMESH_BUSY_POLL_US" not in tunnels.agent_env()  # the other legs do not get them
    monkeypatch.delenv("SM_KNOB_ENV")
    try:
        tunnels.knob_env()
    except tunnels.Skip as exc:
        assert "SM_KNOB_ENV is not set" in str(exc)
    else:
        raise AssertionError("no SM_KNOB_ENV: the leg must be skipped")
