"""The server's data directory holds the embedded database (sessions, password hashes, sealed CA
keys, the audit log) and the secret key that unseals the CA keys: directory 0700, files 0600,
whatever the umask (issue 9; attack 28 in docs/threat-model.md). Before, with the usual umask 022,
`data/` was 0755 and `db.sqlite3` 0644."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from meshadmin.datadir import private_dir, private_file

ROOT = Path(__file__).resolve().parents[3]


def _python(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Python in the project with SHADOWMESH_DATA_DIR=data_dir and the usual umask 022."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DJANGO_SETTINGS_MODULE": "meshadmin.settings",
           "SHADOWMESH_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=lambda: os.umask(0o022))


def _manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return _python(data_dir, "manage.py", *args)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(data_dir: Path) -> dict[str, int]:
    return {p.name: _mode(p) for p in data_dir.iterdir()}


def test_migrate_on_a_fresh_data_dir_with_umask_022_leaves_it_0700_and_its_files_0600(tmp_path):
    data = tmp_path / "fresh" / "data"
    result = _manage(data, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    assert _mode(data) == 0o700
    modes = _modes(data)
    assert {"db.sqlite3", "secret_key"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
    # a write in WAL mode (journals get the database file's mode from SQLite)
    code = ("import django; django.setup()\n"
            "from django.db import connection\n"
            "c = connection.cursor(); c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t (x)')\n"
            "import os; print(sorted(os.listdir(os.environ['SHADOWMESH_DATA_DIR'])))\n")
    wal = _python(data, "-c", code)
    assert wal.returncode == 0, wal.stderr
    assert "db.sqlite3-wal" in wal.stdout
    assert set(_modes(data).values()) == {0o600}, _modes(data)


def test_a_data_dir_left_world_readable_by_an_older_version_is_tightened(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    for name, content in (("db.sqlite3", ""), ("secret_key", "k" * 60 + "\n")):
        (data / name).write_text(content)
        os.chmod(data / name, 0o644)
    result = _manage(data, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    assert _mode(data) == 0o700
    assert set(_modes(data).values()) == {0o600}, _modes(data)
    assert (data / "secret_key").read_text() == "k" * 60 + "\n"  # the key itself is kept


def test_a_shared_sticky_directory_or_someone_elses_file_is_not_ours_to_change(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_dir(shared)
    assert _mode(shared) == 0o1777
    mine = private_dir(shared / "mine")
    assert _mode(mine) == 0o700
    if os.geteuid() == 0:  # root can hand a file to someone else: it is left as it is
        theirs = mine / "theirs"
        theirs.write_text("x")
        os.chmod(theirs, 0o644)
        os.chown(theirs, 65534, 65534)
        private_file(theirs)
        assert _mode(theirs) == 0o644


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000, 0o177])
def test_private_files_and_dirs_ignore_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        d = private_dir(tmp_path / "a" / "b")
        f = private_file(d / "db.sqlite3", sqlite=True)
    finally:
        os.umask(old)
    assert (_mode(d), _mode(f)) == (0o700, 0o600)
