"""A few relay processes serving every delayed link of a network: one per core, not one per link.

A :class:`RelayProcess` is ``python -m testbed.net.relay --control-fd 0`` started with ``mnexec -n``, so
it owns a fresh network namespace; the link ends it relays (``cdnr<N>a/b``) are moved into that
namespace, and it is told about each link over a Unix stream socket (its stdin), one JSON request and one
JSON answer per line (see :class:`testbed.net.relay.Relay`). Every link keeps its own counters, asked for
with ``counters``; ``remove`` returns a link's final counters.

A :class:`RelayPool` places links on at most ``procs`` processes (default: one per CPU,
``CDNLAB_RELAY_PROCS`` to override), each new link on the process serving the fewest. A process is started
when first needed and stopped when its last link is removed, so a network that stops leaves no relay. As
before, each process dies with the Python process that made it (``PR_SET_PDEATHSIG``), and its namespace
and every veth in it with it.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from testbed.util import stop_process

_REPO_ROOT = Path(__file__).resolve().parents[2]
_numbers = itertools.count(1)


class RelayError(RuntimeError):
    """A relay process could not be started, or refused or did not answer a request."""


def default_procs() -> int:
    """Relay processes per network: ``$CDNLAB_RELAY_PROCS``, else one per CPU this process may use."""
    raw = os.environ.get("CDNLAB_RELAY_PROCS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise RelayError(f"CDNLAB_RELAY_PROCS must be a positive integer, not {raw!r}") from None
        if n < 1:
            raise RelayError(f"CDNLAB_RELAY_PROCS must be a positive integer, not {raw!r}")
        return n
    return max(1, len(os.sched_getaffinity(0)))


class PipeChannel:
    """A relay's control channel through ssh (a relay on another server): its standard input and output,
    with the methods :meth:`RelayProcess.request` uses of a socket."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.timeout: float | None = None

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def sendall(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], self.timeout)
        if not ready:
            raise TimeoutError
        return os.read(fd, n)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()


class RelayProcess:
    """One relay process in its own network namespace, serving links over a control socket; on another
    server (``server``), started over ssh and served through its standard input and output."""

    start_timeout = 15.0
    request_timeout = 10.0

    def __init__(self, log_dir: Path, state: Any = None, server: str | None = None) -> None:
        self.number = next(_numbers)
        self.state = state
        self.server = server
        self.remote_pid: int | None = None  # the relay's PID on its server
        self.links: set[int] = set()
        self.log_path = Path(log_dir) / f"relay-proc-{os.getpid()}-{self.number}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._buf = b""
        if server is not None:
            self._start_remote(server)
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = ["mnexec", "-n", sys.executable, "-m", "testbed.net.relay", "--control-fd", "0",
               "--parent-pid", str(os.getpid())]
        try:
            with open(self.log_path, "wb") as logf:
                self.proc: subprocess.Popen | None = subprocess.Popen(
                    cmd, stdin=theirs.fileno(), stdout=logf, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True, close_fds=True,
                )
        except OSError as e:
            ours.close()
            raise RelayError(f"cannot start a relay process: {e}") from e
        finally:
            theirs.close()
        self.sock = ours
        if state is not None:
            state.add_pid(self.proc.pid, "relay")
        try:
            self._wait_started()
        except BaseException:
            self.stop()
            raise

    def _start_remote(self, server: str) -> None:
        """``mnexec -n`` the relay on ``server`` over ssh (cdnlab at the same path there: docs/cluster.md); it
        dies with its ssh session (PR_SET_PDEATHSIG), so with this process too."""
        from testbed.net.servers import command, module_argv

        argv = module_argv("testbed.net.relay", "--control-stdio", prefix=("mnexec", "-n"))
        try:
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen(command(server, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=logf, start_new_session=True)
        except OSError as e:
            raise RelayError(f"cannot start a relay process on {server}: {e}") from e
        self.sock = PipeChannel(self.proc)  # type: ignore[assignment]
        if self.state is not None:
            self.state.add_pid(self.proc.pid, f"ssh to a relay on {server}")
        try:
            pong = self.request({"op": "ping"}, timeout=self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.remote_pid = int(pong["pid"])
        self.realtime = pong.get("realtime")

    @property
    def pid(self) -> int:
        """The PID of the process this machine started (for a relay on another server, its ssh)."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def ns_pid(self) -> int:
        """A PID in the relay's network namespace, on its server (``mnexec -a``)."""
        return self.remote_pid if self.remote_pid is not None else self.pid

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` as run on the relay's server (this machine, or over ssh)."""
        if self.server is None:
            return argv
        from testbed.net.servers import command

        return command(self.server, argv)

    def run_in_ns(self, script: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run the shell ``script`` in the relay's network namespace."""
        return subprocess.run(self.exec_argv(["mnexec", "-a", str(self.ns_pid), "sh", "-c", script]),
                              capture_output=True, text=True, timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return "(no log)"

    def _wait_started(self) -> None:
        """Until the process answers from a namespace of its own (``mnexec -n`` has made it)."""
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.alive():
                raise RelayError(f"relay process {self.number} exited: {self.log_tail()}")
            try:
                moved = os.readlink(f"/proc/{self.pid}/ns/net") != ours
            except OSError:
                moved = False
            if moved:
                break
            if time.monotonic() > deadline:
                raise RelayError(f"relay process {self.number} got no namespace of its own within "
                                 f"{self.start_timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.001)
        pong = self.request({"op": "ping"}, timeout=max(1.0, deadline - time.monotonic()))
        self.realtime: bool | None = pong.get("realtime")  # whether the kernel granted SCHED_FIFO

    def request(self, req: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return its answer; RelayError if refused, dead or silent past ``timeout``."""
        timeout = self.request_timeout if timeout is None else timeout
        with self._lock:
            if not self.alive():
                raise RelayError(f"relay process {self.number} is not running: {self.log_tail()}")
            seq = next(self._seq)
            deadline = time.monotonic() + timeout
            try:
                self.sock.settimeout(timeout)
                self.sock.sendall(json.dumps({**req, "seq": seq}).encode() + b"\n")
                while True:
                    while b"\n" not in self._buf:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError
                        self.sock.settimeout(left)
                        chunk = self.sock.recv(65536)
                        if not chunk:
                            raise RelayError(f"relay process {self.number} closed its control socket: "
                                             f"{self.log_tail()}")
                        self._buf += chunk
                    line, self._buf = self._buf.split(b"\n", 1)
                    try:
                        answer = json.loads(line)
                    except ValueError:
                        raise RelayError(f"relay process {self.number} answered {line[:200]!r}") from None
                    if answer.get("seq") == seq:
                        break  # older answers belong to requests that timed out
            except TimeoutError:
                raise RelayError(f"relay process {self.number} did not answer {req.get('op')!r} "
                                 f"within {timeout:.1f}s") from None
            except OSError as e:
                raise RelayError(f"relay process {self.number}: {e}") from e
        if not answer.get("ok"):
            raise RelayError(f"relay process {self.number} refused {req.get('op')!r}: {answer.get('error')}")
        return answer

    def stop(self) -> None:
        """Close the control socket (the relay logs every link's final counters and exits), then reap it."""
        p = self.proc
        if p is None:
            return
        try:
            self.sock.close()
        except OSError:
            pass
        stop_process(p, timeout=3, first=None)  # closing the socket told it to stop
        if self.state is not None:
            self.state.forget_pid(p.pid)
        self.proc = None


class RelayPool:
    """At most ``procs`` relay processes for one network's links (on ``server``, over ssh, when given); see
    the module docstring."""

    def __init__(self, log_dir: str | Path, state: Any = None, procs: int | None = None,
                 server: str | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.state = state
        self.server = server
        self.procs_max = default_procs() if procs is None else procs
        if self.procs_max < 1:
            raise RelayError(f"a relay pool needs at least one process, not {procs!r}")
        self.procs: list[RelayProcess] = []
        self._lock = threading.Lock()

    def place(self) -> RelayProcess:
        """The process for a new link: a new one while fewer than ``procs`` serve links, else the least busy."""
        with self._lock:
            self.procs = [p for p in self.procs if p.alive()]
            if len(self.procs) < self.procs_max and all(p.links for p in self.procs):
                self.procs.append(RelayProcess(self.log_dir, self.state, self.server))
            return min(self.procs, key=lambda p: len(p.links))

    def add(self, proc: RelayProcess, link_id: int, **config: Any) -> None:
        """Have ``proc`` relay a link whose interfaces are already in its namespace."""
        proc.request({"op": "add", "id": link_id, **config})
        proc.links.add(link_id)

    def remove(self, proc: RelayProcess, link_id: int) -> dict[str, Any] | None:
        """Stop relaying a link; its final counters (None if the process is gone). Stops an idle process."""
        counters = None
        if link_id in proc.links:
            proc.links.discard(link_id)
            try:
                counters = proc.request({"op": "remove", "id": link_id}).get("counters")
            except RelayError:
                counters = None
        with self._lock:
            if not proc.links:
                proc.stop()
                if proc in self.procs:
                    self.procs.remove(proc)
        return counters

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.alive()]


_pools: dict[tuple[str | None, str], RelayPool] = {}


def shared_pool(log_dir: str | Path, state: Any = None) -> RelayPool:
    """The pool for links made outside a builder that brings its own: one per run state and log directory."""
    key = (getattr(state, "run_id", None), str(log_dir))
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = RelayPool(log_dir, state)
    return pool


def counters_by_process(requests: dict[RelayProcess, list[int]], timeout: float = 10.0
                        ) -> dict[tuple[RelayProcess, int], dict[str, Any]]:
    """Counters so far of many links, one request per process; links of silent processes are left out."""
    got: dict[tuple[RelayProcess, int], dict[str, Any]] = {}
    for proc, ids in requests.items():
        try:
            answer = proc.request({"op": "counters", "ids": ids}, timeout=timeout)
        except RelayError:
            continue
        for key, c in answer.get("counters", {}).items():
            got[(proc, int(key))] = c
    return got
