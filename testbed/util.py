"""Small shared helpers: polling with deadlines and allocating free ports (never fixed sleeps or ports)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """A condition polled by :func:`wait_until` did not become true before its deadline."""


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
    (times :func:`timeout_scale`)."""
    timeout *= timeout_scale()
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
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
        except Exception as e:  # noqa: BLE001
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise DeadlineExceeded(f"{what} not reached within {timeout:.1f}s{detail}")
        await asyncio.sleep(interval)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free port on ``host`` (TCP by default; pass SOCK_DGRAM for UDP)."""
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
