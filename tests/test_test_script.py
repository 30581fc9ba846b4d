"""scripts/test.sh judges each pytest pass by its exit code: 0 passed, 1 some tests failed (they
ran), 5 nothing collected (reported, not fatal), anything else an error. The function is taken
from the script itself and run in bash."""

import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test.sh"


def _judge(rc: int) -> tuple[str, str, str]:
    body = re.search(r"^judge\(\) \{.*?^\}", SCRIPT.read_text(), re.S | re.M)
    assert body, "scripts/test.sh defines judge()"
    code = f"{body.group(0)}\nstatus=0; ran_any=0; judge pass {rc}; echo \"$ran_any $status\""
    done = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=30, check=True)
    ran_any, status = done.stdout.split()[-2:]
    return ran_any, status, done.stdout + done.stderr


@pytest.mark.parametrize("rc, ran_any, status, says", [
    (0, "1", "0", ""),
    (1, "1", "1", "pass failed (exit 1)"),  # tests ran: not "no tests ran at all"
    (5, "0", "0", "pass collected no tests"),
    (2, "0", "1", "pass failed (exit 2)"),
])
def test_each_exit_code_of_a_pass_is_judged(rc, ran_any, status, says):
    got_ran, got_status, output = _judge(rc)
    assert (got_ran, got_status) == (ran_any, status)
    assert says in output
