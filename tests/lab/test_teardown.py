"""Teardown leaves nothing behind: no namespace, host link, nft table, process, file or record, when the
body raises, on SIGINT and SIGTERM; and what a SIGKILLed run left is swept by `python -m lab clean`,
which never touches a run still going."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab import Lab, free_host_subnet, sweep

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]

# a run that builds one of everything, prints what the host should show, then waits to be stopped
CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from lab import Lab
with Lab(record={record!r}) as lab:
    inet = lab.switch("inet")
    box = lab.nat("box", inet, wan="198.18.0.10/24", lan="198.18.10.1/24")
    host = lab.netns("host")
    box.attach(host, "198.18.10.2/24")
    lab.host_bridge("{subnet}.1/24").join(host, "{subnet}.2/24")
    lab.resolv_conf(host, "nameserver 198.18.10.1\\n")
    inner, outer = lab.spawn(host, "sleep", "600"), lab.spawn(None, "sleep", "600")
    print(json.dumps({{"prefix": lab.prefix, "pids": [inner.pid, outer.pid]}}), flush=True)
    time.sleep(600)
"""


def host_view(prefix: str) -> dict:
    """What the host shows of a run: its namespaces, host links and (in its box) nft tables."""
    spaces = [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                          text=True).stdout.splitlines()]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    box = f"{prefix}-box"
    if box in spaces:
        tables += subprocess.run(["ip", "netns", "exec", box, "nft", "list", "tables"], capture_output=True,
                                 text=True).stdout
    return {"netns": [s for s in spaces if s.startswith(prefix)],
            "links": [w for w in links.split() if w.startswith(prefix)],
            "tables": [w for w in tables.split() if w.startswith(prefix)]}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_child(tmp_path: Path) -> tuple[subprocess.Popen, dict, Path]:
    record = tmp_path / "record.json"
    code = CHILD.format(root=str(ROOT), record=str(record), subnet=free_host_subnet())
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    line = child.stdout.readline()
    assert line, f"the child lab did not come up (exit {child.wait()})"
    info = json.loads(line)
    built = host_view(info["prefix"])
    assert len(built["netns"]) == 3 and built["links"] and built["tables"], built
    assert all(alive(p) for p in info["pids"])
    return child, info, record


def assert_nothing_left(info: dict, record: Path) -> None:
    assert host_view(info["prefix"]) == {"netns": [], "links": [], "tables": []}
    assert not Path(f"/etc/netns/{info['prefix']}-host").exists()
    assert not any(alive(p) for p in info["pids"])
    assert not record.exists()


def test_a_body_that_raises_leaves_nothing_behind(tmp_path):
    leftover = tmp_path / "socket"
    with pytest.raises(RuntimeError, match="the test body failed"), Lab(record=tmp_path / "r.json") as lab:
        inet = lab.switch("inet")
        box = lab.nat("box", inet, wan="198.18.0.10/24", lan="198.18.10.1/24", kind="hard")
        host = lab.netns("host")
        box.attach(host, "198.18.10.2/24")
        lab.host_bridge(f"{free_host_subnet()}.1/24")
        pids = [lab.spawn(host, "sleep", "600").pid, lab.spawn(None, "sleep", "600").pid]
        leftover.write_text("")
        lab.remove_on_exit(leftover)
        info = {"prefix": lab.prefix, "pids": pids}
        built = host_view(lab.prefix)
        assert len(built["netns"]) == 3 and built["links"] and built["tables"], built
        raise RuntimeError("the test body failed")
    assert_nothing_left(info, tmp_path / "r.json")
    assert not leftover.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_run_stopped_by_a_signal_leaves_nothing_behind(tmp_path, sig):
    child, info, record = start_child(tmp_path)
    child.send_signal(sig)
    assert child.wait(60) != 0
    assert_nothing_left(info, record)


def test_a_killed_run_is_swept_by_lab_clean(tmp_path):
    child, info, record = start_child(tmp_path)
    child.kill()
    child.wait(10)
    assert len(host_view(info["prefix"])["netns"]) == 3  # SIGKILL: no teardown ran
    out = subprocess.run([sys.executable, "-m", "lab", "clean", str(record)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "removed 3 netns" in out.stdout
    assert_nothing_left(info, record)


def test_the_sweep_leaves_a_run_that_is_still_going_alone(tmp_path):
    record = tmp_path / "live.json"
    with Lab(record=record) as lab:
        lab.netns("a")
        report = sweep(record)
        assert "still going" in report[0]
        assert host_view(lab.prefix)["netns"] == [f"{lab.prefix}-a"]
    assert host_view(lab.prefix)["netns"] == []


def test_a_namespace_reads_its_own_resolv_conf_and_the_host_keeps_its_own(tmp_path):
    host_file = Path("/etc/resolv.conf").read_bytes()
    with Lab(record=tmp_path / "r.json") as lab:
        a = lab.netns("a")
        path = lab.resolv_conf(a, "nameserver 198.18.0.2\n")
        assert path == Path(f"/etc/netns/{a.name}/resolv.conf")
        assert a.run("cat", "/etc/resolv.conf").stdout == "nameserver 198.18.0.2\n"
        a.run("sh", "-c", "echo 'nameserver 198.18.0.3' > /etc/resolv.conf")  # in place, as the agent does
        assert path.read_text() == "nameserver 198.18.0.3\n"
        assert Path("/etc/resolv.conf").read_bytes() == host_file
    assert not path.exists() and not path.parent.exists()
    assert Path("/etc/resolv.conf").read_bytes() == host_file
