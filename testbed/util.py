"""Small shared helpers: polling with deadlines and allocating free ports (never fixed sleeps or ports)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """A condition polled by :func:`wait_until` did not become true before its deadline."""


class StopWaiting(Exception):  # noqa: N818 - it says what the waiter does
    """Raised by a predicate of :func:`wait_until` when the condition can never come true (the process
    it waits for has exited): the wait ends at once with this error instead of at its deadline."""


def timeout_scale() -> float:
    """``CDNLAB_TIMEOUT_SCALE`` (default 1): every deadline of :func:`wait_until` is multiplied by it, for
    machines much slower than the ones the deadlines were set on (``make test-vm`` under QEMU's TCG
    emulation sets 4). Only how long cdnlab waits for things to come up changes, never what it measures."""
    raw = os.environ.get("CDNLAB_TIMEOUT_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = -1.0
    if not 1 <= scale <= 100:
        raise ValueError(f"CDNLAB_TIMEOUT_SCALE must be a number within 1..100, not {raw!r}")
    return scale


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``pred`` until it returns a truthy value and return it; raise DeadlineExceeded after ``timeout``
    (times :func:`timeout_scale`). Other exceptions of ``pred`` count as "not yet" (the thing may still be
    coming up), except :class:`StopWaiting`, which ends the wait at once."""
    timeout *= timeout_scale()
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except StopWaiting:
            raise
        except Exception as e:  # noqa: BLE001 - the predicate may fail until the thing is up
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise DeadlineExceeded(f"{what} not reached within {timeout:.1f}s{detail}")
        time.sleep(interval)


async def async_wait_until(
    pred: Callable[[], Awaitable[T]], timeout: float, interval: float = 0.02, what: str = "condition"
) -> T:
    """Async twin of :func:`wait_until` for coroutine predicates."""
    timeout *= timeout_scale()
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = await pred()
            if value:
                return value
        except StopWaiting:
            raise
        except Exception as e:  # noqa: BLE001
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise DeadlineExceeded(f"{what} not reached within {timeout:.1f}s{detail}")
        await asyncio.sleep(interval)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ephemeral ports (``net.ipv4.ip_local_port_range``), whence outgoing
    connections take their source ports."""
    try:
        lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A free port on ``host`` (TCP by default; pass SOCK_DGRAM for UDP) for a server to bind next.

    Chosen at random *below* the ephemeral range: a port the kernel hands out for ``bind(0)`` can be
    taken by any outgoing connection before the server binds it (a test then fails with "address already
    in use"); below the range only another explicit bind can take it. Falls back to the kernel's choice
    when that range is too small."""
    lo, _ = ephemeral_range()
    if lo > 12000:
        for _ in range(64):
            port = random.randint(10000, lo - 1)
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tcp_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    wait_until(lambda: tcp_open(host, port), timeout, what=f"TCP {host}:{port} accepting")


def json_in(out: str) -> Any:
    """The first JSON object (or array) in a command's output: a host's shell may print before it (``[1]
    4242`` for a background job) and a tool after it. :meth:`json.JSONDecoder.raw_decode` from each ``{``
    or ``[`` in turn; an array counts only when nothing but blanks follows it on its line. ValueError,
    quoting the output, when there is none. The one parser of a host's JSON output in cdnlab."""
    dec = json.JSONDecoder()
    err: json.JSONDecodeError | None = None
    for i, ch in enumerate(out):
        if ch not in "{[":
            continue
        try:
            doc, end = dec.raw_decode(out, i)
        except json.JSONDecodeError as e:
            err = err or e
            continue
        if ch == "{" or not out[end:].split("\n", 1)[0].strip():
            return doc
    why = f" ({err.msg})" if err else ""
    raise ValueError(f"no JSON in the output{why}: {out.strip()[-300:]!r}")


def stop_process(p: subprocess.Popen, timeout: float = 5.0, first: int | None = signal.SIGTERM) -> int | None:
    """Stop a process we started and reap it: signal ``first`` (SIGTERM; None when closing its input
    already tells it to stop), wait up to ``timeout`` s, then SIGKILL. Returns its exit status (None if it
    could not be reaped). The one copy of this in cdnlab."""
    if p.poll() is None:
        if first is not None:
            p.send_signal(first)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                return None
    return p.returncode
