"""Talk to a service from inside an emulated host's network namespace, without spawning a process.

Why: a rule of the project is that nothing is ever sent from the machine's root network namespace to an
emulated subnet (such a packet would leave through the machine's real uplink); every request to a service
in a Mininet host must originate in that host's own network namespace. Spawning ``mnexec -a PID curl`` per
poll costs too much CPU for a dashboard that polls every second, and Mininet's ``node.cmd()`` is not
thread-safe. So this module creates the socket itself inside the host's namespace.

How: network namespaces are a property of each thread, not of the process (setns(2),
network_namespaces(7)), and a socket stays in the namespace it was created in for its whole life, whatever
thread later uses it. :func:`socket_in` opens ``/proc/<pid>/ns/net``, starts a fresh short-lived thread
that calls ``setns(fd, CLONE_NEWNET)`` (through libc with :mod:`ctypes`: Python 3.11 has no
``os.setns``), creates the socket there and hands it back; the thread then exits. The calling thread never
changes namespace, and no thread of ours is left behind in a foreign namespace. Joining a network
namespace needs CAP_SYS_ADMIN (run as root).

On top of it: :func:`http_request` / :func:`http_json` (HTTP/1.1 with :mod:`http.client`, redirects are
never followed) and :func:`dns_query` (one UDP query with dnspython).
"""

from __future__ import annotations

import ctypes
import errno
import http.client
import ipaddress
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.query
import dns.rdatatype

__all__ = [
    "CLONE_NEWNET",
    "MAX_BODY",
    "HttpAnswer",
    "HttpStatusError",
    "NamespaceError",
    "dns_query",
    "http_json",
    "http_request",
    "socket_in",
]

CLONE_NEWNET = 0x40000000  # <sched.h>
MAX_BODY = 4 * 1024 * 1024  # bytes of an HTTP body read at most

_libc: ctypes.CDLL | None = None


def _setns() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.setns.restype = ctypes.c_int
    return _libc.setns


class NamespaceError(OSError):
    """The network namespace of a process could not be joined (process gone, no permission, ...)."""

    def __init__(self, pid: int, err: int, what: str) -> None:
        super().__init__(err, f"network namespace of pid {pid}: {what}: {os.strerror(err)}")
        self.pid = pid


def _family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def socket_in(
    pid: int,
    family: socket.AddressFamily | int = socket.AF_INET,
    type: socket.SocketKind | int = socket.SOCK_STREAM,
) -> socket.socket:
    """A new socket that lives in the network namespace of process *pid* (the caller's is unchanged).

    Raises :class:`NamespaceError` when the process is gone or its namespace cannot be joined; errors
    creating the socket itself are raised as they are.
    """
    path = f"/proc/{int(pid)}/ns/net"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NamespaceError(pid, e.errno or errno.EIO, f"cannot open {path}") from e
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def run() -> None:
        # This thread is thrown away after this function: it may die in the foreign namespace.
        try:
            if _setns()(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                failure.append(NamespaceError(pid, err, "setns(CLONE_NEWNET)"))
                return
            result.append(socket.socket(family, type))
        except BaseException as e:  # handed to the caller
            failure.append(e)

    try:
        t = threading.Thread(target=run, name=f"nsclient-setns-{pid}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(fd)
    if failure:
        for s in result:
            s.close()
        raise failure[0]
    return result[0]


@dataclass
class HttpAnswer:
    """An HTTP response: status, headers (keys lowercased; repeated headers joined with ", "), body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HttpStatusError(ValueError):
    """:func:`http_json` got a status other than 2xx (the answer is in :attr:`answer`)."""

    def __init__(self, url: str, answer: HttpAnswer) -> None:
        super().__init__(f"{url}: HTTP status {answer.status}")
        self.url = url
        self.answer = answer


def _url(ip: str, port: int, path: str) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{path}"


def http_request(
    pid: int,
    ip: str,
    port: int,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 2.0,
    max_body: int = MAX_BODY,
) -> HttpAnswer:
    """One HTTP/1.1 request to ``ip:port`` sent from the network namespace of process *pid*.

    Redirects are not followed (a 302 comes back as 302 with its ``location`` header). *timeout* bounds
    the connect and each read/write. A body longer than *max_body* bytes raises :class:`ValueError`.
    """
    sock = socket_in(pid, _family_of(ip), socket.SOCK_STREAM)
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        conn.sock = sock
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read(max_body + 1)
        if len(data) > max_body:
            raise ValueError(f"{_url(ip, port, path)}: body longer than {max_body} bytes")
        hdrs: dict[str, str] = {}
        for k, v in resp.getheaders():
            k = k.lower()
            hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
        return HttpAnswer(status=resp.status, headers=hdrs, body=data)
    finally:
        conn.close()  # closes conn.sock when set
        sock.close()


def http_json(
    pid: int,
    ip: str,
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> Any:
    """GET *path* from the namespace of *pid* and return its JSON body.

    Raises :class:`HttpStatusError` (a ValueError) on a status other than 2xx, and :class:`ValueError`
    naming the URL when the body is not JSON.
    """
    url = _url(ip, port, path)
    ans = http_request(pid, ip, port, path, headers=headers, timeout=timeout)
    if not 200 <= ans.status < 300:
        raise HttpStatusError(url, ans)
    try:
        return json.loads(ans.body)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{url}: body is not JSON ({e})") from e


def dns_query(
    pid: int,
    server_ip: str,
    name: str,
    rdtype: str | dns.rdatatype.RdataType = "A",
    timeout: float = 2.0,
    port: int = 53,
) -> dns.message.Message:
    """One DNS query over UDP to ``server_ip:port``, sent from the network namespace of process *pid*.

    Raises ``dns.exception.Timeout`` when no answer comes within *timeout* seconds.
    """
    q = dns.message.make_query(name, rdtype)
    sock = socket_in(pid, _family_of(server_ip), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)  # dnspython requires a non-blocking socket (it waits with select)
        return dns.query.udp(q, server_ip, port=port, timeout=timeout, sock=sock)
    finally:
        sock.close()
