"""``make test-vm``: the Mininet tier on the platform students run, netem links and OVS's kernel datapath.

This machine's kernel may lack both (``sch_netem``, ``openvswitch``), so the tier runs inside a VM of
Debian's own kernel (``linux-image-amd64``), booted with virtme-ng (``vng``) under QEMU: KVM when a KVM
guest boots here, else TCG emulation (nested KVM often does not boot). The guest sees this machine's
files, so the project and its venv are the ones under test; ``tests/vm/guest.sh`` loads the modules,
starts Open vSwitch on the kernel datapath and runs ``pytest -m vm --links netem --datapath kernel``.

The last line printed is one JSON object: ``kernel``, ``netem`` (true), ``datapath`` ("kernel"),
``passed``, ``failed``, ``skipped``, ``errors``, ``seconds`` (plus ``accel``, ``boot`` and, when the
guest could not run the tier, ``problem``). Exit status 0 only when the guest had netem and the kernel
datapath, at least one test passed, and none failed or errored.

Usage: ``python tests/vm/run.py [--accel auto|kvm|tcg] [--memory 3G] [--cpus 2] [--timeout 2400]
[-- PYTEST_ARGS...]``.

``--exec CMD`` runs one shell command in the same guest instead of the tier (``make vm-exec CMD=...``): a
benchmark or a grader on netem and the kernel datapath, e.g. ``cdnlab bench links --links netem --json``.
The command runs as root in the checkout with the venv on ``PATH``; its output streams as the tier's
does. The last line is then ``kernel``, ``netem``, ``datapath``, ``exec``, ``exit`` (its status),
``seconds``, ``accel``, ``boot``; exit status 0 only when the guest had both and the command exited 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-artifacts" / "vm"
BOOT_MARK = "CDNLAB_VM_BOOTED"


def kernel_image() -> Path:
    """The newest Debian kernel image in /boot (``linux-image-amd64``); its modules are under /lib/modules."""
    images = sorted(glob.glob("/boot/vmlinuz-*"), key=lambda p: [int(x) if x.isdigit() else x
                                                                for x in re.split(r"(\d+)", p)])
    images = [p for p in images if Path("/lib/modules", p.removeprefix("/boot/vmlinuz-")).is_dir()]
    if not images:
        raise SystemExit("test-vm: no kernel in /boot with its modules: `make test-vm` installs "
                         "linux-image-amd64 (apt)")
    return Path(images[-1])


def vng_command(kernel: Path, accel: str, memory: str, cpus: int, script: list[str]) -> list[str]:
    """The virtme-ng command line that boots ``kernel`` and runs ``script`` as root in the guest."""
    vng = shutil.which("vng", path=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    if vng is None:
        raise SystemExit("test-vm: vng (virtme-ng) is not installed: run `make test-vm`, which installs it")
    cmd = [vng, "--run", str(kernel), "--memory", memory, "--cpus", str(cpus), "--user", "root",
           "--overlay-rwdir", "/etc", "--overlay-rwdir", "/var", "--rwdir", str(ROOT)]
    if accel == "tcg":
        cmd.append("--disable-kvm")
    return [*cmd, "--exec", " ".join(script)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"  # vng runs virtme-run from its own venv
    return env


def kvm_boots(kernel: Path, timeout: float = 60) -> bool:
    """True if a KVM guest boots here (a failing or hanging KVM falls back to TCG in a few seconds)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cmd = vng_command(kernel, "kvm", "1G", 1, ["echo", BOOT_MARK])
    # its own session: on a timeout the whole group goes, QEMU included (vng runs it as a grandchild, which
    # subprocess.run's kill would leave spinning a CPU for the rest of the tier)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return BOOT_MARK in out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def junit_counts(path: Path) -> dict[str, int]:
    """passed/failed/skipped/errors from pytest's junit XML (``errors`` counts setup/teardown errors)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    return {"passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"], "failed": n["failures"],
            "skipped": n["skipped"], "errors": n["errors"]}


def guest_problem(guest: dict[str, Any]) -> str | None:
    """What kept the guest from being the platform under test (a failed start, no netem or no kernel
    datapath); None when it was."""
    if guest.get("failed_step"):
        return f"the guest could not start: {guest['failed_step']}"
    if guest.get("netem") is not True or guest.get("datapath") != "kernel":
        return f"the guest lacks netem or the kernel datapath: {guest}"
    return None


def verdict(guest: dict[str, Any], counts: dict[str, int] | None) -> str | None:
    """None when the VM tier passed, else what is wrong."""
    if problem := guest_problem(guest):
        return problem
    if counts is None:
        return "the guest ran no tests (no junit.xml)"
    if counts["failed"] or counts["errors"]:
        return f"{counts['failed']} failed, {counts['errors']} errors"
    if counts["passed"] < 1:
        return "no test passed"
    return None


def exec_verdict(guest: dict[str, Any], rc: int | None) -> str | None:
    """``--exec``: None when the guest had netem and the kernel datapath and the command exited 0."""
    if problem := guest_problem(guest):
        return problem
    if rc is None:
        return "the command did not finish (no exit status)"
    if rc != 0:
        return f"the command exited {rc}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make test-vm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("CDNLAB_VM_ACCEL", "auto"))
    ap.add_argument("--memory", default="3G")
    ap.add_argument("--cpus", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--timeout", type=float, default=2400, help="seconds before the VM is stopped")
    ap.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                    help="run this shell command in the guest instead of the tier (a benchmark, a grader)")
    ap.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments (e.g. -k links)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("test-vm: needs root (sudo make test-vm)")
    t0 = time.monotonic()
    kernel = kernel_image()
    accel = a.accel
    if accel == "auto":
        accel = "kvm" if kvm_boots(kernel) else "tcg"
    print(f"test-vm: booting {kernel.name} under QEMU ({accel}), {a.cpus} CPUs, {a.memory}", flush=True)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    script = [str(ROOT / "tests" / "vm" / "guest.sh"), str(ROOT), accel, *a.pytest_args]
    if a.exec_cmd:  # a file the guest reads: the command line needs no quoting through vng and the shell
        if a.pytest_args:
            raise SystemExit("test-vm: --exec runs a command instead of the tier: no pytest arguments with it")
        (OUT / "exec.sh").write_text(a.exec_cmd + "\n")
        script = [str(ROOT / "tests" / "vm" / "guest.sh"), str(ROOT), accel, "--exec", str(OUT / "exec.sh")]
    cmd = vng_command(kernel, accel, a.memory, a.cpus, script)
    problem = None
    with open(OUT / "console.log", "w") as console:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                stdin=subprocess.DEVNULL, start_new_session=True)
        assert proc.stdout is not None
        timed_out = threading.Event()

        def stop_vm() -> None:  # a guest that hangs prints nothing: a timer, not the output loop, stops it
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(a.timeout, stop_vm)
        timer.start()
        try:
            for line in proc.stdout:  # the guest's pytest output, live
                sys.stdout.write(line)
                console.write(line)
                console.flush()
            proc.wait()
        finally:
            timer.cancel()
        if timed_out.is_set():
            problem = f"the VM ran past --timeout {a.timeout:g} s and was stopped"
    guest_file, junit = OUT / "guest.json", OUT / "junit.xml"
    guest = json.loads(guest_file.read_text()) if guest_file.exists() else {"failed_step": "boot"}
    if a.exec_cmd:
        rc_file = OUT / "exec.rc"
        rc = int(rc_file.read_text()) if rc_file.exists() else None
        problem = problem or exec_verdict(guest, rc)
        return _report({"kernel": guest.get("kernel"), "netem": guest.get("netem", False),
                        "datapath": guest.get("datapath"), "exec": a.exec_cmd, "exit": rc,
                        "seconds": round(time.monotonic() - t0, 1), "accel": accel, "boot": kernel.name}, problem)
    counts = junit_counts(junit) if junit.exists() else None
    problem = problem or verdict(guest, counts)
    result: dict[str, Any] = {
        "kernel": guest.get("kernel"), "netem": guest.get("netem", False), "datapath": guest.get("datapath"),
        **(counts or {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}),
        "seconds": round(time.monotonic() - t0, 1), "accel": accel, "boot": kernel.name,
    }
    return _report(result, problem)


def _report(result: dict[str, Any], problem: str | None) -> int:
    """Print (and keep in result.json) the last line; 1 when there is a problem."""
    if problem:
        result["problem"] = problem
        print(f"test-vm: FAILED: {problem} (console: {OUT / 'console.log'})", flush=True)
    (OUT / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
