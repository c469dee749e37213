"""testbed.net.nsclient against a network namespace of our own (``unshare --net``), never an emulated subnet.

The child process serves HTTP and DNS on 127.0.0.1 inside its fresh namespace; the TCP port is held bound
(not listening) in the root namespace during the tests, so a connect there is refused: an answer proves the
request was sent from inside the child's namespace.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.rcode
import dns.rdatatype
import pytest

from testbed.net import nsclient

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: joining a network namespace (setns) needs CAP_SYS_ADMIN"
    ),
    pytest.mark.skipif(
        shutil.which("unshare") is None or shutil.which("ip") is None,
        reason="needs util-linux unshare and iproute2 ip",
    ),
]

SIOCGSKNS = 0x894C  # <linux/sockios.h>: an fd of the network namespace of a socket
TOKEN = "Bearer s3cret-token"
NAME = "www.example.test."
A_ADDR = "10.9.8.7"
# the namespace of the test thread when this module is imported, before any nsclient call
START_NETNS = os.readlink("/proc/thread-self/ns/net")

CHILD = textwrap.dedent(
    """
    import json, socket, sys, threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import dns.message, dns.rrset

    http_port, dns_port = int(sys.argv[1]), int(sys.argv[2])

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", dns_port))

    def dns_loop():
        while True:
            wire, peer = udp.recvfrom(65535)
            q = dns.message.from_wire(wire)
            r = dns.message.make_response(q)
            qn = q.question[0]
            if qn.name.to_text() == %(name)r and qn.rdtype == 1:
                r.answer.append(dns.rrset.from_text(qn.name, 60, "IN", "A", %(addr)r))
            else:
                r.set_rcode(3)
            udp.sendto(r.to_wire(), peer)

    threading.Thread(target=dns_loop, daemon=True).start()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, status, ctype, body, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/stats":
                body = json.dumps({"auth": self.headers.get("Authorization"), "netns": "child"}).encode()
                self.send(200, "application/json", body)
            elif self.path == "/redirect":
                self.send(302, "text/plain", b"moved", [("Location", "http://10.0.0.1/elsewhere")])
            elif self.path == "/text":
                self.send(200, "text/plain", b"not json")
            else:
                self.send(404, "text/plain", b"no")

    HTTPServer(("127.0.0.1", http_port), H).serve_forever()
    """
) % {"name": NAME, "addr": A_ADDR}


@dataclass
class Child:
    pid: int
    http_port: int
    dns_port: int


def _netns_ino(path: str) -> int:
    return os.stat(path).st_ino


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    # Hold the port bound (not listening) in the root namespace: a connect to it there is refused, and
    # nothing else can take it while the tests run.
    hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hold.bind(("127.0.0.1", 0))
    http_port = hold.getsockname()[1]
    hold_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hold_udp.bind(("127.0.0.1", 0))
    dns_port = hold_udp.getsockname()[1]
    err_path: Path = tmp_path_factory.mktemp("nsclient") / "child.err"
    err = open(err_path, "wb")  # closed in the finalizer
    script = f'ip link set lo up && exec {shlex.quote(sys.executable)} -c "$0" {http_port} {dns_port}'
    proc = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", script, CHILD],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        deadline = time.monotonic() + 15.0
        while True:
            if proc.poll() is not None:
                pytest.fail(f"namespace child exited with {proc.returncode}: {err_path.read_text()}")
            try:
                ans = nsclient.http_request(proc.pid, "127.0.0.1", http_port, "/stats", timeout=0.5)
                if ans.status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"namespace child not serving after 15 s: {err_path.read_text()}")
            time.sleep(0.02)  # polling interval
        yield Child(proc.pid, http_port, dns_port)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        err.close()
        hold.close()
        hold_udp.close()


def test_child_really_has_its_own_namespace(child: Child) -> None:
    assert _netns_ino(f"/proc/{child.pid}/ns/net") != _netns_ino("/proc/self/ns/net")


def test_socket_in_creates_the_socket_in_the_target_namespace(child: Child) -> None:
    s = nsclient.socket_in(child.pid, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert s.family == socket.AF_INET and s.type == socket.SOCK_DGRAM
        nsfd = fcntl.ioctl(s.fileno(), SIOCGSKNS)
        try:
            assert os.fstat(nsfd).st_ino == _netns_ino(f"/proc/{child.pid}/ns/net")
        finally:
            os.close(nsfd)
    finally:
        s.close()


def test_http_request_inside_namespace_gets_json_and_header(child: Child) -> None:
    ans = nsclient.http_request(
        child.pid, "127.0.0.1", child.http_port, "/stats", headers={"Authorization": TOKEN}
    )
    assert ans.status == 200
    assert ans.headers["content-type"] == "application/json"
    assert json.loads(ans.body) == {"auth": TOKEN, "netns": "child"}
    got = nsclient.http_json(
        child.pid, "127.0.0.1", child.http_port, "/stats", headers={"Authorization": TOKEN}
    )
    assert got == {"auth": TOKEN, "netns": "child"}


def test_redirect_is_not_followed(child: Child) -> None:
    ans = nsclient.http_request(child.pid, "127.0.0.1", child.http_port, "/redirect")
    assert ans.status == 302
    assert ans.headers["location"] == "http://10.0.0.1/elsewhere"
    assert ans.body == b"moved"


def test_http_json_names_the_url_when_not_json(child: Child) -> None:
    url = f"http://127.0.0.1:{child.http_port}/text"
    with pytest.raises(ValueError, match=url):
        nsclient.http_json(child.pid, "127.0.0.1", child.http_port, "/text")
    with pytest.raises(nsclient.HttpStatusError, match="404") as ei:
        nsclient.http_json(child.pid, "127.0.0.1", child.http_port, "/missing")
    assert ei.value.answer.status == 404


def test_body_bound(child: Child) -> None:
    with pytest.raises(ValueError, match="longer than 4 bytes"):
        nsclient.http_request(child.pid, "127.0.0.1", child.http_port, "/redirect", max_body=4)


def test_dns_query_inside_namespace(child: Child) -> None:
    r = nsclient.dns_query(child.pid, "127.0.0.1", NAME, "A", port=child.dns_port)
    assert r.rcode() == dns.rcode.NOERROR
    addrs = [rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]
    assert addrs == [A_ADDR]
    r = nsclient.dns_query(child.pid, "127.0.0.1", "other.test.", "A", port=child.dns_port)
    assert r.rcode() == dns.rcode.NXDOMAIN


def test_same_address_from_root_namespace_is_refused(child: Child) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", child.http_port))
    finally:
        s.close()


def test_missing_pid_raises_clear_error() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    gone = pid_max + 1  # no process can have this pid
    with pytest.raises(nsclient.NamespaceError, match=rf"pid {gone}\b.*No such file") as ei:
        nsclient.socket_in(gone)
    assert isinstance(ei.value, OSError)
    assert ei.value.errno == errno.ENOENT and ei.value.pid == gone
    with pytest.raises(nsclient.NamespaceError):
        nsclient.http_request(gone, "127.0.0.1", 80, "/")


def test_calling_thread_namespace_unchanged(child: Child) -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    assert before == START_NETNS  # earlier calls (the fixture's) left this thread where it was
    threads_before = threading.active_count()
    nsclient.http_request(child.pid, "127.0.0.1", child.http_port, "/stats")
    nsclient.dns_query(child.pid, "127.0.0.1", NAME, port=child.dns_port)
    assert os.readlink("/proc/thread-self/ns/net") == before
    assert os.readlink("/proc/self/ns/net") == before
    assert threading.active_count() == threads_before  # the setns threads are gone


def test_concurrent_polls_from_threads(child: Child) -> None:
    results: list[object] = []
    lock = threading.Lock()

    def poll() -> None:
        mine = os.readlink("/proc/thread-self/ns/net")
        try:
            for _ in range(5):
                got = nsclient.http_json(
                    child.pid, "127.0.0.1", child.http_port, "/stats", headers={"Authorization": TOKEN}
                )
                assert got["auth"] == TOKEN
            assert os.readlink("/proc/thread-self/ns/net") == mine
            out: object = "ok"
        except BaseException as e:  # reported to the test thread
            out = e
        with lock:
            results.append(out)

    ts = [threading.Thread(target=poll) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    assert results == ["ok"] * 8
