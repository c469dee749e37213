"""The ``docs`` tier: every command of docs/tutorial.md and of the README's tour, run as a student runs it.

Shell commands run from the repository's top directory (``sudo`` dropped: the tests run as root); the
CLI runs under a pseudo-terminal, as in a student's terminal, and gets the tutorial's ``cdnlab>`` lines one
by one. Each command must succeed (exit 0; no ``***`` error line or traceback the doc does not show), and
its output must show what the doc shows, line by line in order, by pattern and not by exact figures
(:mod:`doc_steps`). All mismatches are collected and reported together, with the doc's line numbers.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from doc_steps import PROMPT, Step, missing_lines, steps

from testbed.net.cli_cmds import CDN_COMMANDS

pytestmark = [pytest.mark.mininet, pytest.mark.docs]
ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
#: commands this tier does not run, and why
NOT_HERE = {
    "sudo make test": "it would run this suite again",
    "sudo make test-vm": "it boots a VM that runs this tier's VM subset (CI runs it after make test)",
    "vagrant up": "needs the Vagrant VM (the VM tier)",
    "vagrant ssh": "needs the Vagrant VM (the VM tier)",
    "cd cdnlab && sudo make demo": "inside the Vagrant VM (the VM tier)",
}
MAX_SILENCE_S = 10  # issue #19's target for a first `make demo | tee log`
#: commands already run by this tier (``make demo`` is in both docs): run once, checked once
_DONE: set[str] = set()


class Session:
    """``cdnlab up`` under a pseudo-terminal: send a line, read until the next prompt."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = pty.openpty()
        self.fd = master
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                                     start_new_session=True, env=dict(os.environ, COLUMNS="120"))
        os.close(slave)
        self.buf = ""

    def read_until(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.buf):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {pattern!r} within {timeout:.0f} s; got: {self.buf[-1500:]}")
            if self.proc.poll() is not None and not select.select([self.fd], [], [], 0)[0]:
                raise EOFError(f"cdnlab up exited ({self.proc.returncode}); got: {self.buf[-1500:]}")
            if select.select([self.fd], [], [], min(left, 0.2))[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # EIO: the CLI's side is closed
                    data = b""
                if not data and self.proc.poll() is not None:
                    raise EOFError(f"cdnlab up exited ({self.proc.returncode}); got: {self.buf[-1500:]}")
                self.buf += ANSI.sub("", data.decode(errors="replace"))
        m = re.search(pattern, self.buf)
        assert m is not None
        out, self.buf = self.buf[:m.start()], self.buf[m.end():]
        return out

    def command(self, line: str, timeout: float = 120) -> str:
        os.write(self.fd, (line + "\n").encode())
        out = self.read_until(re.escape(PROMPT), timeout)
        return out.split("\n", 1)[1] if "\n" in out else ""  # drop the terminal's echo of the line

    def exit(self, timeout: float = 120) -> str:
        """Send ``exit`` and collect everything printed until the CLI's process has ended."""
        os.write(self.fd, b"exit\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # EIO: the CLI's side is closed
                    break
                if not data:
                    break
                self.buf += ANSI.sub("", data.decode(errors="replace"))
            elif self.proc.poll() is not None:
                break
        self.proc.wait(max(1.0, deadline - time.monotonic()))
        out, self.buf = self.buf, ""
        return out.split("\n", 1)[1] if "\n" in out else out

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # cdnlab up stops its network on SIGTERM
            self.proc.wait(60)
        os.close(self.fd)


def _shell(cmd: str) -> list[str]:
    words = cmd.split()
    return words[1:] if words and words[0] == "sudo" else words


def _run_shell(cmd: str, timeout: float = 1200) -> tuple[int, str, float]:
    """Run ``cmd`` as a student types it (bash, in the checkout, the virtualenv's cdnlab on PATH) with its
    output into a pipe, as ``| tee log`` does: (exit status, output, longest silence between lines in s)."""
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    p = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env)
    assert p.stdout is not None
    lines, last, gap, deadline = [], time.monotonic(), 0.0, time.monotonic() + timeout
    for ln in p.stdout:
        now = time.monotonic()
        gap, last = max(gap, now - last), now
        lines.append(ln)
        if now > deadline:
            p.kill()
            break
    return p.wait(60), ANSI.sub("", "".join(lines)), gap


def _service_example(cmd: str) -> bool:
    """``python -m testbed.services.X --config X.yaml``: an example whose config the reader writes."""
    return bool(re.fullmatch(r"python -m testbed\.services\.\w+ --config \w+\.yaml", cmd))


def _problems(step: Step, out: str, where: str) -> list[str]:
    missing = missing_lines(step.expected, out)
    problems = [f"{where}:{step.line}: `{step.command}` should show: {ln.strip()!r}" for ln in missing]
    if missing:
        problems.append(f"    ... it printed: {out.strip()[:1500]!r}")
    # the CDN commands mark their errors with ***; Mininet's own commands use it for headings
    ours = step.kind == "shell" or step.command.split()[0] in CDN_COMMANDS
    shown = [ln for ln in step.expected if ln.lstrip().startswith("***")]
    for ln in out.splitlines():
        if (ours and ln.startswith("***") and not shown) or ln.startswith("Traceback"):
            problems.append(f"{where}:{step.line}: `{step.command}` printed an error the doc does not show: {ln}")
    return problems


def run_doc(doc: Path) -> list[str]:
    """Run every command of ``doc`` in order; the mismatches, one line each."""
    where = str(doc.relative_to(ROOT))
    problems: list[str] = []
    session: Session | None = None
    made: list[Path] = []
    before = set((ROOT / "results").glob("*")) if (ROOT / "results").exists() else set()
    top = set(ROOT.iterdir())  # what a command writes into the checkout (eurozoo.yaml, globe-plan) goes after
    try:
        for step in steps(doc):
            if step.kind == "shell":
                if step.command in NOT_HERE or step.command in _DONE or _service_example(step.command):
                    continue
                if session is not None:  # a shell command: the student left the CLI first
                    out = session.exit()
                    session.close()
                    if session.proc.returncode != 0:
                        problems.append(f"{where}:{step.line}: leaving the CLI before `{step.command}`: "
                                        f"cdnlab up exited {session.proc.returncode}: {out[-800:]}")
                    session = None
                argv = _shell(step.command)
                # a report of a run from the doc's own day: the run this tier just made instead
                for i, a in enumerate(argv):
                    m = re.fullmatch(r"results/(\w+)-\d{8}-\d{6}", a)
                    if m and made:
                        argv[i] = str(next((p for p in reversed(made) if p.name.startswith(m.group(1))), made[-1]))
                if argv[:2] in (["cdnlab", "up"], [".venv/bin/cdnlab", "up"]):
                    session = Session([sys.executable, "-m", "testbed.cli", *argv[1:]])
                    out = session.read_until(re.escape(PROMPT), 300)
                    problems += _problems(step, out, where)
                    continue
                rc, out, gap = _run_shell(" ".join(argv))
                if rc != 0:
                    problems.append(f"{where}:{step.line}: `{step.command}` exited {rc}: {out[-800:]}")
                else:
                    _DONE.add(step.command)
                if "make demo" in step.command and gap > MAX_SILENCE_S:  # `make demo | tee log` shows life
                    problems.append(f"{where}:{step.line}: `{step.command}` was silent for {gap:.0f} s "
                                    f"(at most {MAX_SILENCE_S} s between lines into a pipe)")
                problems += _problems(step, out, where)
                if (ROOT / "results").exists():
                    made += sorted(set((ROOT / "results").glob("*")) - before - set(made))
            else:
                if session is None:
                    problems.append(f"{where}:{step.line}: `{step.command}` with no `cdnlab up` before it")
                    continue
                if step.wait_s:
                    time.sleep(step.wait_s)  # the doc says "... about N s later ..."
                if step.command in ("exit", "quit"):
                    out = session.exit()
                    session.close()
                    session = None
                else:
                    out = session.command(step.command)
                    if not step.expected and not out.strip():
                        problems.append(f"{where}:{step.line}: `{step.command}` printed nothing")
                problems += _problems(step, out, where)
        if session is not None:  # the doc leaves the CLI open: leave it as a student would
            out = session.exit()
            if session.proc.returncode != 0:
                problems.append(f"{where}: `exit` at the end: cdnlab up exited {session.proc.returncode}: {out[-800:]}")
    finally:
        if session is not None:
            session.close()
        for p in made:  # results this tier wrote into the checkout
            shutil.rmtree(p, ignore_errors=True)
        for p in set(ROOT.iterdir()) - top:  # eurozoo.yaml, the plan's directory
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    return problems


@pytest.mark.parametrize("doc", ["docs/tutorial.md", "README.md"])
def test_doc_runs_as_written(doc: str) -> None:
    problems = run_doc(ROOT / doc)
    assert not problems, f"{doc} drifted from what cdnlab does:\n" + "\n".join(problems)
