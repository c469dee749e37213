"""testbed.measure.proctree: who is whose child, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from testbed.measure.proctree import children


def test_a_child_we_start_is_ours():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert p.pid in children().get(os.getpid(), [])
    finally:
        p.kill()
        p.wait()


def test_command_names_with_spaces_and_parentheses(tmp_path):
    for pid, comm, ppid in [(10, "a (b) c", 1), (11, "x)", 10), (12, "plain", 10)]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
    (tmp_path / "self").mkdir()  # not a process directory
    (tmp_path / "13").mkdir()  # gone before its stat could be read
    assert children(tmp_path) == {1: [10], 10: [11, 12]} or children(tmp_path) == {1: [10], 10: [12, 11]}
