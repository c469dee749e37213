"""testbed.measure.proctree: who is whose child, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from testbed.measure.proctree import children, descendants, vm_rss_kb


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


def test_descendants_each_once_roots_first():
    kids = {1: [2, 3], 2: [4], 3: [4], 4: [1], 9: [10]}  # a cycle and a shared child: /proc read while changing
    assert descendants([1], kids) == [1, 2, 4, 3]
    assert descendants([9, 1], kids) == [9, 10, 1, 2, 4, 3]
    assert descendants([5], kids) == [5]


def test_vm_rss_kb():
    assert vm_rss_kb("Name:\tpython3\nVmPeak:\t 9 kB\nVmRSS:\t   15360 kB\nThreads:\t1\n") == 15360
    assert vm_rss_kb("Name:\tkthreadd\nThreads:\t1\n") == 0


def test_our_own_rss_is_read():
    from pathlib import Path

    assert vm_rss_kb(Path(f"/proc/{os.getpid()}/status").read_text()) > 1000
