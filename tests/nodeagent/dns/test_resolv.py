"""dns/resolv.py (the format, pure) and dns/system.py (install, restore, recover) on files in tmp."""

from __future__ import annotations

import pytest

from nodeagent.dns.resolv import Resolv, is_ours, parse, render_ours
from nodeagent.dns.system import BACKUP_FILE, ResolvConf, ResolverManaged

ORIGINAL = """# made by the admin
nameserver 198.18.0.53
nameserver fe80::1%eth0
nameserver not-an-address
domain old.example
search lab.test corp.example
options timeout:1 attempts:2
; comment
sortlist 10.0.0.0
"""


def test_parse_reads_nameservers_search_and_options():
    r = parse(ORIGINAL)
    assert r == Resolv(("198.18.0.53", "fe80::1"), ("lab.test", "corp.example"),
                       ("options timeout:1 attempts:2",))
    assert parse("") == Resolv()


def test_ours_points_at_the_agent_and_keeps_the_search_list_and_options():
    text = render_ours("sm12345678", "10.10.10.2", "default.mesh", parse(ORIGINAL))
    assert is_ours(text) and is_ours(text, "sm12345678") and not is_ours(text, "sm87654321")
    assert not is_ours(ORIGINAL)
    assert parse(text) == Resolv(("10.10.10.2",), ("default.mesh", "lab.test", "corp.example"),
                                 ("options timeout:1 attempts:2",))
    assert "search" not in render_ours("smx", "10.10.10.2", None, Resolv())


@pytest.fixture
def files(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text(ORIGINAL)
    state = tmp_path / "state"
    state.mkdir()
    return path, state


def test_install_and_restore_write_the_same_file_in_place(files):
    path, state = files
    inode = path.stat().st_ino
    rc = ResolvConf("sm12345678", "10.10.10.2", state, path=path)
    assert rc.previous().nameservers[0] == "198.18.0.53"
    rc.install("default.mesh")
    assert path.stat().st_ino == inode  # in place: a bind mount cannot be replaced, only written
    assert parse(path.read_text()).nameservers == ("10.10.10.2",)
    assert (state / BACKUP_FILE).read_text() == ORIGINAL
    assert (state / BACKUP_FILE).stat().st_mode & 0o777 == 0o600
    rc.update("corp.example")
    assert parse(path.read_text()).search[0] == "corp.example"
    rc.restore()
    assert path.read_text() == ORIGINAL and path.stat().st_ino == inode
    assert not (state / BACKUP_FILE).exists()


def test_a_file_someone_else_wrote_meanwhile_is_left_alone(files):
    path, state = files
    rc = ResolvConf("sm12345678", "10.10.10.2", state, path=path)
    rc.install(None)
    path.write_text("nameserver 198.18.0.99\n")
    rc.update("default.mesh")
    rc.restore()
    assert path.read_text() == "nameserver 198.18.0.99\n"


def test_recover_puts_back_what_a_killed_agent_left(files):
    path, state = files
    ResolvConf("sm12345678", "10.10.10.2", state, path=path).install("default.mesh")  # then killed
    elsewhere = state.parent / "other-state"
    elsewhere.mkdir()
    ResolvConf("sm87654321", "10.10.10.5", elsewhere, path=path).recover()  # another agent's file: left
    assert is_ours(path.read_text())
    assert is_ours(path.read_text())
    ResolvConf("sm12345678", "10.10.10.2", state, path=path).recover()
    assert path.read_text() == ORIGINAL and not (state / BACKUP_FILE).exists()


def test_systemd_resolved_is_refused(tmp_path):
    stub = tmp_path / "run" / "systemd" / "resolve" / "stub-resolv.conf"
    stub.parent.mkdir(parents=True)
    stub.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    link = tmp_path / "resolv.conf"
    link.symlink_to(stub)
    with pytest.raises(ResolverManaged, match=r"resolvectl dns sm1 10\.10\.10\.2"):
        ResolvConf("sm1", "10.10.10.2", tmp_path, path=link).check_managed()
    plain = tmp_path / "plain.conf"
    plain.write_text("nameserver 127.0.0.53\n")
    with pytest.raises(ResolverManaged):
        ResolvConf("sm1", "10.10.10.2", tmp_path, path=plain).check_managed()
    plain.write_text(ORIGINAL)
    ResolvConf("sm1", "10.10.10.2", tmp_path, path=plain).check_managed()
