"""The devstack's control plane yields the cores to the steps (operators.devstack.set_session_nice)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skyops.operators.devstack import AirflowStack, StackError, set_session_nice

AUTOGROUPS = Path("/proc/self/autogroup").is_file()

# A component stand-in: it starts a "step" in a session of its own, as the local executor does,
# and prints its own group and the step's.
COMPONENT = """
import subprocess, sys
sys.stdin.readline()
own = open('/proc/self/autogroup').read().strip()
step = subprocess.run(['cat', '/proc/self/autogroup'], capture_output=True, text=True,
                      start_new_session=True).stdout.strip()
print(own); print(step)
"""


@pytest.mark.skipif(not AUTOGROUPS, reason="this kernel has no autogroups (/proc/self/autogroup)")
def test_the_component_session_is_niced_and_a_step_it_starts_is_not() -> None:
    proc = subprocess.Popen([sys.executable, "-c", COMPONENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert set_session_nice(proc.pid, 10, "test")
        out, _ = proc.communicate("go\n", timeout=30)
    finally:
        proc.kill()
    own, step = out.splitlines()
    assert own.endswith("nice 10")
    assert step.endswith("nice 0")
    assert own.split()[0] != step.split()[0]  # different groups


def test_a_process_that_is_gone_is_reported_not_raised() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert set_session_nice(proc.pid, 10, "gone") is False


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_nice_value_out_of_range_is_refused(tmp_path: Path, nice: int) -> None:
    with pytest.raises(StackError, match="control_nice"):
        AirflowStack(tmp_path, "postgresql+psycopg2://u@localhost/x", control_nice=nice)
