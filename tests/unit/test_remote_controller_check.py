"""The builder registers its Ryu controller with Mininet without Mininet's telnet check: that check reads
the controller's binary OFPT_HELLO through a strict UTF-8 decoder and fails the build (CI saw it)."""

from __future__ import annotations

import os
import shutil
import socket
import threading

import pytest

from testbed.net.build import waited_remote_controller

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mnexec") is None, reason="Mininet nodes need root and mnexec"
)

HELLO = b"\x04\x00\x00\x08\xda\xdd\xfe\xff"  # OpenFlow 1.3 HELLO, an xid that is not UTF-8


@pytest.fixture
def binary_hello_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()
    accepted: list[int] = []

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(1)
            with conn:
                conn.sendall(HELLO)
                conn.settimeout(2)
                try:
                    conn.recv(64)  # until telnet goes
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    srv.close()
    t.join(2)


def _node(cls, port: int):
    node = cls(f"rc{port}", ip="127.0.0.1", port=port)
    node.terminate()
    return node


def test_the_waited_controller_does_not_read_the_hello(binary_hello_server):
    port, accepted = binary_hello_server
    _node(waited_remote_controller(), port)  # no telnet, so no decode error
    assert accepted == []  # Mininet's own check would have connected (and maybe read the HELLO)
