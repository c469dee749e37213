"""Free loopback addresses and ports for DNS servers run alone (tests, graders, benchmarks)."""

from __future__ import annotations

import random
import socket


def free_loopback_address(port: int = 53, prefix: str = "127.53") -> str:
    """A 127.x.y.z address where both UDP and TCP ``port`` are free (DNS delegations can't carry a port).

    Binding port 53 needs root (or CAP_NET_BIND_SERVICE); raises PermissionError otherwise.
    """
    for _ in range(200):
        addr = f"{prefix}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind((addr, port))
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((addr, port))
            return addr
        except PermissionError:
            raise
        except OSError:
            continue
    raise OSError(f"no free loopback address for port {port}")


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` (a DNS server binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket() as t:
                    t.bind((host, port))
                return port
            except OSError:
                continue
    raise OSError("no port free for both UDP and TCP")
