"""`make demo` (scripts/demo.py) keeps node keys, logs and the record of what it created in its
state directory: the owner's only, whatever the umask (issue 9). The server it starts secures its
own data directory (tests/meshadmin/project/test_data_dir_modes.py)."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged  # the demo refuses to start without root

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_state_directory_is_0700_with_umask_022(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("privileged test run without root: deselect with -m 'not privileged'")
    state = tmp_path / "nested" / "demo"
    env = {**os.environ, "SHADOWMESH_DEMO_DIR": str(state)}
    # --clean: set the state directory up, sweep what a killed run left (nothing), stop
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--clean"], env=env,
                            capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    # a state directory an older demo left open is closed
    os.chmod(state, 0o755)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--clean"], env=env, check=True,
                   capture_output=True, timeout=120)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
