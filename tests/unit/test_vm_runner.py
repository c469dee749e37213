"""``make test-vm``'s host side (tests/vm/run.py), its pure parts: counting junit XML, the verdict, vng's
command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("vm_run", ROOT / "tests" / "vm" / "run.py")
assert _spec is not None and _spec.loader is not None
vm_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vm_run)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="2"
 skipped="3" tests="20" time="361.8"></testsuite></testsuites>"""
GUEST_OK = {"kernel": "6.1.0-57-amd64", "netem": True, "datapath": "kernel", "failed_step": ""}


def test_junit_counts_separate_passed_failed_skipped_and_errors(tmp_path):
    f = tmp_path / "junit.xml"
    f.write_text(JUNIT)
    assert vm_run.junit_counts(f) == {"passed": 14, "failed": 2, "skipped": 3, "errors": 1}


@pytest.mark.parametrize(
    ("guest", "counts", "word"),
    [
        (GUEST_OK, {"passed": 19, "failed": 0, "skipped": 0, "errors": 0}, None),
        (GUEST_OK, {"passed": 19, "failed": 1, "skipped": 0, "errors": 0}, "1 failed"),
        (GUEST_OK, {"passed": 0, "failed": 0, "skipped": 5, "errors": 0}, "no test passed"),
        (GUEST_OK, None, "ran no tests"),
        ({**GUEST_OK, "netem": False}, {"passed": 19, "failed": 0, "skipped": 0, "errors": 0}, "lacks netem"),
        ({"failed_step": "boot"}, None, "could not start: boot"),
    ],
)
def test_the_verdict_fails_an_empty_or_wrong_run(guest, counts, word):
    got = vm_run.verdict(guest, counts)
    assert (got is None) if word is None else (word in got)


@pytest.mark.parametrize(
    ("guest", "rc", "word"),
    [
        (GUEST_OK, 0, None),
        (GUEST_OK, 1, "exited 1"),
        (GUEST_OK, None, "did not finish"),
        ({**GUEST_OK, "datapath": "none"}, 0, "lacks netem or the kernel datapath"),
        ({"failed_step": "boot"}, None, "could not start: boot"),
    ],
)
def test_an_exec_run_passes_only_when_the_command_exits_0_on_netem_and_the_kernel_datapath(guest, rc, word):
    got = vm_run.exec_verdict(guest, rc)
    assert (got is None) if word is None else (word in got)


def test_exec_takes_no_pytest_arguments(monkeypatch, tmp_path):
    monkeypatch.setattr(vm_run, "OUT", tmp_path / "vm")
    monkeypatch.setattr(vm_run.os, "geteuid", lambda: 0)
    monkeypatch.setattr(vm_run, "kernel_image", lambda: Path("/boot/vmlinuz-x"))
    with pytest.raises(SystemExit, match="no pytest arguments"):
        vm_run.main(["--accel", "tcg", "--exec", "true", "--", "-k", "links"])


def test_vng_boots_debians_kernel_with_the_checkout_writable(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    (tmp_path / "vng").write_text("#!/bin/sh\n")
    (tmp_path / "vng").chmod(0o755)
    cmd = vm_run.vng_command(Path("/boot/vmlinuz-6.1.0-57-amd64"), "tcg", "3G", 2, ["guest.sh", "/repo", "tcg"])
    assert "--disable-kvm" in cmd and cmd[cmd.index("--rwdir") + 1] == str(ROOT)
    assert cmd[cmd.index("--run") + 1] == "/boot/vmlinuz-6.1.0-57-amd64"
    assert cmd[-2:] == ["--exec", "guest.sh /repo tcg"]
    assert "--disable-kvm" not in vm_run.vng_command(Path("/boot/x"), "kvm", "1G", 1, ["true"])
